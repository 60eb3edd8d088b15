"""Bicubic baseline on benchmark sets: MATLAB-bicubic upscaling of the LR files, scored like `esr bench quality`.

Usage: python benchmarks/bicubic.py [--scale 4] [--metric y] SET_DIR [SET_DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from esrcli.bench import find_lr, list_images
from esrcli.imresize import bicubic_downscale_uint8, imresize, mod_crop
from esrcli.metrics import load_rgb, psnr, ssim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--metric", default="y", choices=["y", "rgb"])
    args = parser.parse_args()
    s = args.scale
    for folder in args.sets:
        scores = []
        for path in list_images(folder / "HR"):
            hr = mod_crop(load_rgb(path), s)
            lr_path = find_lr(folder, path, s)
            lr = load_rgb(lr_path) if lr_path else bicubic_downscale_uint8(hr, s)
            x = torch.from_numpy(lr).permute(2, 0, 1).double()
            up = imresize(x, scale=s).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)
            scores.append((psnr(up, hr, s, args.metric), ssim(up, hr, s, args.metric)))
        p, q = np.mean(scores, axis=0)
        print(f"bicubic x{s} {folder.name}: {p:.2f} dB / {q:.4f} ({args.metric}, {len(scores)} images)")


if __name__ == "__main__":
    main()
