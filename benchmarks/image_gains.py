"""Per-image PSNR gains of models over a base model: does a finetune help every image, or trade some for others?

Usage: python benchmarks/image_gains.py BASE MODEL [MODEL ...] --data DIR [--data DIR ...] [--folds 5] [--metric y]

For each MODEL and set: the mean gain over BASE (dB), how many images got worse, the 10th percentile
of the per-image gains and the mean gain of the worst of FOLDS random equal parts of the set (a fixed
split, the same for every model). A model whose mean gain comes from a few images and which loses on
half of them will lose on some small test set: the worst fold shows it on held-out data.
Models are anything `-m` takes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from esrcli.bench import evaluate_set
from esrcli.loading import load_reference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--metric", choices=["y", "rgb"], default="y")
    args = parser.parse_args()
    base_model = load_reference(args.base)
    scale = base_model.network.scale
    score = lambda network, folder: evaluate_set(network.eval(), scale, Path(folder), channel=args.metric, with_ssim=False).per_image  # noqa: E731
    base = {folder: score(base_model.network, folder) for folder in args.data}
    print(f"gains over {args.base} (dB, {args.metric.upper()} PSNR)")
    print(f"{'model':40s} {'set':10s} {'mean':>8s} {'worse':>9s} {'p10':>8s} {'worst fold':>10s}")
    for name in args.models:
        network = load_reference(name).network
        for folder in args.data:
            before = base[folder]
            after = score(network, folder)
            gains = np.array([after[k] - before[k] for k in before])
            folds = np.array_split(np.random.default_rng(0).permutation(len(gains)), min(args.folds, len(gains)))
            worst = min(gains[f].mean() for f in folds)
            print(
                f"{name[-40:]:40s} {Path(folder).name:10s} {gains.mean():+8.4f} {(gains < 0).sum():4d}/{len(gains):<4d}"
                f" {np.percentile(gains, 10):+8.4f} {worst:+10.4f}"
            )


if __name__ == "__main__":
    main()
