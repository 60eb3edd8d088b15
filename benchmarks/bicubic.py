"""Bicubic baseline on benchmark sets: MATLAB-bicubic upscaling of the LR files, scored like `esr bench quality`.

Usage: python benchmarks/bicubic.py [--scale 4] [--metric y] SET_DIR [SET_DIR ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esrcli.bench import MatlabBicubic, evaluate_set


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sets", nargs="+", type=Path)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--metric", default="y", choices=["y", "rgb"])
    args = parser.parse_args()
    for folder in args.sets:
        score = evaluate_set(MatlabBicubic(args.scale), args.scale, folder, channel=args.metric)
        print(f"bicubic x{args.scale} {folder.name}: {score.psnr:.2f} dB / {score.ssim:.4f} ({args.metric}, {score.images} images)")


if __name__ == "__main__":
    main()
