"""Fit `--denoise auto`: which strength scores best under each known degradation, and what esr measures there.

Usage: python benchmarks/denoise_fit.py [--shared ../shared] [--images 32] [-m esr-tiny] [-s 4]

On training photos only (BSD200 whole, Photos2K reduced x3 and centre-cropped to 512x512 HR), never the benchmark sets: the
LR is made as `esr bench quality --degrade SPEC` makes it (esrcli.degrade.degrade_benchmark), for JPEG
qualities and noise sigmas; each strength from 0 to 1 is scored (Y PSNR, `scale` px border) with the model's
weights mixed with its robust partner's. Printed per condition: the best strength, the PSNR of every
strength, and the median of what esrcli.estimate measures on those LR images (JPEG quality from the
tables of the file degrade_benchmark wrote is known exactly, so for JPEG the blockiness of the decoded
pixels is what is printed). esrcli/denoise.py's STRENGTH_MAPS[scale] is read from this output.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from esrcli.degrade import degrade_benchmark
from esrcli.denoise import mix
from esrcli.estimate import blockiness, noise_sigma
from esrcli.imagefile import read_rgb8
from esrcli.imresize import bicubic_downscale_uint8, mod_crop
from esrcli.loading import load_reference
from esrcli.metrics import psnr
from esrcli.registry import default_registry

CONDITIONS = ["clean"] + [f"jpeg:{q}" for q in (20, 30, 40, 50, 60, 70, 80, 90, 95)] + [f"noise:{s}" for s in (1, 2, 3, 5, 8, 10, 15, 20)]
STRENGTHS = [round(0.1 * i, 1) for i in range(11)]
CROP = 512


def photos(shared: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """HR pictures with the detail of typical inputs: BSD200 whole (481x321), Photos2K reduced x3 (MATLAB
    bicubic: at full size a 2K photo's crop is mostly smooth) and centre-cropped to CROP."""
    chosen = []
    for folder, reduction in (("BSD200", 1), ("Photos2K", 3)):
        files = sorted(p for p in (shared / "data" / "train" / folder).iterdir() if p.suffix.lower() == ".png")
        for path in files[:: max(1, len(files) // (count // 2))][: count // 2]:
            hr = read_rgb8(path)
            if reduction > 1:
                hr = bicubic_downscale_uint8(mod_crop(hr, reduction), reduction)
            h, w = min(CROP, hr.shape[0]) // 4 * 4, min(CROP, hr.shape[1]) // 4 * 4
            y, x = (hr.shape[0] - h) // 2, (hr.shape[1] - w) // 2
            chosen.append((path.stem, np.ascontiguousarray(hr[y : y + h, x : x + w])))
    return chosen


@torch.inference_mode()
def score(network: torch.nn.Module, lr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255
    sr = (network(x)[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return psnr(sr, hr, scale)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=Path(__file__).resolve().parents[2] / "shared", type=Path)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("-m", "--model", default="esr-tiny")
    parser.add_argument("-s", "--scale", type=int, default=4)
    args = parser.parse_args()
    entry, s = default_registry().get(args.model), args.scale
    base = load_reference(args.model, native=s, progress=False).network.eval()
    partner = load_reference(entry.robust, native=s, progress=False).network.eval()
    networks = {t: mix(base, partner, t).eval() for t in STRENGTHS}
    images = photos(args.shared, args.images)
    print(f"{args.model} + {entry.robust}, x{s}, {len(images)} training crops of {CROP}x{CROP}; Y PSNR per strength")
    print(f"{'condition':10s} {'best':>5s} {'blocky':>7s} {'sigma':>6s}  " + " ".join(f"{t:>6.1f}" for t in STRENGTHS))
    for condition in CONDITIONS:
        scores = {t: [] for t in STRENGTHS}
        blocky, sigma = [], []
        for name, hr in images:
            lr = bicubic_downscale_uint8(hr, s) if condition == "clean" else degrade_benchmark(hr, s, condition, key=name)
            blocky.append(blockiness(lr))
            sigma.append(noise_sigma(lr))
            for t, network in networks.items():
                scores[t].append(score(network, lr, hr, s))
        means = {t: float(np.mean(v)) for t, v in scores.items()}
        best = max(means, key=means.get)
        print(
            f"{condition:10s} {best:5.1f} {np.median(blocky):7.3f} {np.median(sigma):6.2f}  "
            + " ".join(f"{means[t]:6.2f}" for t in STRENGTHS),
            flush=True,
        )


if __name__ == "__main__":
    main()
