"""Scale plans compared: quality on benchmark sets and time on one photo, for chains of model passes.

Usage: python benchmarks/scale_plans.py [-m esr-tiny] [-s 8] [--data DIR ...] [--photo FILE]
       [--chain 4,4 --chain 4,2 --chain 2,4 --chain 4]

Each chain runs its model passes, then a Lanczos resample to the exact target (down when the chain
overshoots, up when it falls short). Quality: Y PSNR (crop = scale) against HR, the LR made from HR
with MATLAB bicubic at the target factor. Time: the whole plan on `--photo` (default: a 256x256
crop of the first Photos2K image), best of three, all chains in one run so their ratios compare.
The plan esr chooses for the factor is marked.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from esrcli.imagefile import read_image
from esrcli.imresize import bicubic_downscale_uint8, mod_crop
from esrcli.loading import load_reference
from esrcli.metrics import psnr
from esrcli.paths import list_images
from esrcli.registry import default_registry
from esrcli.scaling import Pipeline, ScalePlan, plan_scale
from esrcli.tiling import TilePlan, Upscaler, default_overlap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", default="esr-tiny")
    parser.add_argument("-s", "--scale", type=int, default=8)
    parser.add_argument("--data", action="append", type=Path, default=[])
    parser.add_argument("--photo", type=Path)
    parser.add_argument("--chain", action="append", default=[])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    entry = default_registry().get(args.model)
    upscalers = {}
    for s in entry.scales:
        network = load_reference(args.model, native=s).network
        upscalers[s] = Upscaler(network, s, TilePlan(256, default_overlap(network), 1))
    chosen = plan_scale(entry.scales, args.scale)
    chains = [tuple(int(s) for s in c.split(",")) for c in args.chain] or sorted(
        {(4, 4), (4,), chosen.passes, *((a, b) for a in entry.scales for b in entry.scales)}, key=lambda c: (len(c), c)
    )
    data = args.data or [args.shared / "data/benchmark/Set5", args.shared / "data/benchmark/Set14"]
    photo = args.photo or sorted((args.shared / "data/train/Photos2K").iterdir())[0]
    pixels = read_image(photo).pixels[:256, :256].copy()

    sets = {}
    for d in data:
        pairs = []
        for path in list_images(d / "HR" if (d / "HR").is_dir() else d):
            hr = mod_crop(read_image(path).pixels, args.scale)
            hr = np.repeat(hr, 3, axis=2) if hr.shape[2] == 1 else hr
            pairs.append((bicubic_downscale_uint8(hr, args.scale), hr))
        sets[d.name] = pairs

    print(f"{args.model} x{args.scale}; esr plans: {chosen.describe()}")
    print(f"{'chain':<48} {'work':>6} " + " ".join(f"{n:>8}" for n in sets) + f" {'time s':>8} {'ratio':>6}")
    base = None
    for chain in chains:
        pipeline = Pipeline(ScalePlan(args.scale, chain), upscalers)
        scores = [np.mean([psnr(pipeline.run(lr), hr, args.scale, "y") for lr, hr in pairs]) for pairs in sets.values()]
        times = []
        for _ in range(3):
            start = time.perf_counter()
            pipeline.run(pixels)
            times.append(time.perf_counter() - start)
        seconds = min(times)
        base = base or seconds
        mark = " *" if chain == chosen.passes else ""
        print(
            f"{pipeline.plan.describe() + mark:<48} {pipeline.plan.cost[0]:>6.2f} "
            + " ".join(f"{s:>8.3f}" for s in scores)
            + f" {seconds:>8.3f} {seconds / base:>6.3f}"
        )


if __name__ == "__main__":
    main()
