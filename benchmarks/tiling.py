"""How far tiled output strays from whole-image output, on real images.

Usage: python benchmarks/tiling.py [-m esr-tiny -m span-tiny ...] [--tile 64 --tile 256] [--data DIR ...]

For every image (the LR files of each set, or HR images downscaled x4 with MATLAB bicubic), the
model runs once on the whole image and once tiled with the default overlap; the table gives the
largest per-pixel difference in 8-bit levels, the share of output values that differ by more
than one level, and the PSNR (Y) of each against HR, whose change is what tiling costs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from esrcli.imagefile import read_rgb8
from esrcli.imresize import bicubic_downscale_uint8, mod_crop
from esrcli.loading import load_reference
from esrcli.metrics import psnr
from esrcli.paths import find_lr, list_images
from esrcli.tiling import TilePlan, Upscaler, default_overlap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", action="append", default=[])
    parser.add_argument("--tile", action="append", type=int, default=[])
    parser.add_argument("--data", action="append", type=Path, default=[])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    models = args.model or ["esr-tiny", "span-tiny", "espan"]
    tiles = args.tile or [64]
    sets = args.data or [args.shared / "data/benchmark/Set14", args.shared / "data/benchmark/BSD100"]
    print(
        f"{'model':<12} {'set':<8} {'tile':>5} {'images':>6} {'max diff':>8} {'>1 level':>9} {'PSNR whole':>10} {'PSNR tiled':>10} {'change dB':>10}"
    )
    for ref in models:
        network = load_reference(ref).network
        scale, overlap = network.scale, default_overlap(network)
        whole_upscaler = Upscaler(network, scale, TilePlan(0, overlap, 1))
        for folder in sets:
            pairs = []
            for path in list_images(folder / "HR"):
                hr = mod_crop(read_rgb8(path), scale)
                lr_path = find_lr(folder, path, scale)
                pairs.append((read_rgb8(lr_path) if lr_path else bicubic_downscale_uint8(hr, scale), hr))
            for tile in tiles:
                tiled_upscaler = Upscaler(network, scale, TilePlan(tile, overlap, 1))
                worst, over, total, p_whole, p_tiled = 0, 0, 0, [], []
                for lr, hr in pairs:
                    h, w, c = lr.shape
                    whole = whole_upscaler.upscale(lr, np.empty((h * scale, w * scale, c), np.uint8))
                    tiled = tiled_upscaler.upscale(lr, np.empty((h * scale, w * scale, c), np.uint8))
                    diff = np.abs(whole.astype(int) - tiled.astype(int))
                    worst, over, total = max(worst, int(diff.max())), over + int((diff > 1).sum()), total + diff.size
                    p_whole.append(psnr(whole, hr, scale))
                    p_tiled.append(psnr(tiled, hr, scale))
                change = np.mean(p_tiled) - np.mean(p_whole)
                print(
                    f"{ref:<12} {folder.name:<8} {tile:>5} {len(pairs):>6} {worst:>8} {over / total:>9.2e} "
                    f"{np.mean(p_whole):>10.4f} {np.mean(p_tiled):>10.4f} {change:>+10.4f}"
                )


if __name__ == "__main__":
    main()
