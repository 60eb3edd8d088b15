"""--tta (the x8 self-ensemble) against the plain model: Y PSNR on benchmark sets and the time per image.

Usage: OMP_NUM_THREADS=1 python benchmarks/tta.py [-m esr-tiny -m span-tiny] [--data DIR ...] [--limit N]
       [--limit-set BSD100=20] [--device cpu] [--allow-download]

Scores follow `esr bench quality`'s protocol (esrcli.bench.evaluate_set: Y PSNR, crop = scale, LR
from LR_bicubic/X4/, the same upscale_array and psnr), on the network `esr bench quality [--tta]`
scores: the pipeline's, so the self-ensemble is the one `esr upscale --tta` runs. The time per image
is upscale_array's (to the device, the forward, back to uint8; reading and scoring excluded): each
image runs plain, then --tta, twice over, and the faster of the two runs of each counts, so that a busy
machine slows both alike and the first call of a new shape (oneDNN's set-up) is left out. A model
that is not available offline (only the embedded ones and those already cached are) is left out,
unless --allow-download. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn


def measure(
    networks: dict[bool, nn.Module], set_dir: Path, scale: int, limit: int | None, rounds: int = 2
) -> dict[bool, tuple[float, float]]:
    """(mean Y PSNR, mean seconds per image) of each network: esrcli.bench.evaluate_set's protocol, and the
    fastest of `rounds` forwards per image, the networks taking turns on each image."""
    from esrcli.bench import upscale_array
    from esrcli.imagefile import read_rgb8
    from esrcli.imresize import bicubic_downscale_uint8, mod_crop
    from esrcli.metrics import psnr
    from esrcli.paths import find_lr, hr_folder, list_images

    scores: dict[bool, list[float]] = {key: [] for key in networks}
    times: dict[bool, list[float]] = {key: [] for key in networks}
    for path in list_images(hr_folder(set_dir))[:limit]:
        hr = mod_crop(read_rgb8(path), scale)
        lr_path = find_lr(set_dir, path, scale)
        lr = read_rgb8(lr_path) if lr_path else bicubic_downscale_uint8(hr, scale)
        best, sr = dict.fromkeys(networks, float("inf")), {}
        for _ in range(rounds):
            for key, network in networks.items():
                start = time.perf_counter()
                sr[key] = upscale_array(network, lr)
                best[key] = min(best[key], time.perf_counter() - start)
        for key in networks:
            scores[key].append(psnr(sr[key], hr, scale, "y"))
            times[key].append(best[key])
    return {key: (sum(scores[key]) / len(scores[key]), sum(times[key]) / len(times[key])) for key in networks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", action="append", default=[], help="default: esr-tiny and span-tiny")
    parser.add_argument("--data", action="append", type=Path, default=[], help="default: Set5, Set14 and BSD100 of --shared")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("ESR_SHARED", "../shared")))
    parser.add_argument("--limit", type=int, help="only the first N images of each set")
    parser.add_argument("--limit-set", action="append", default=[], metavar="SET=N", help="--limit for one set, e.g. BSD100=20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--allow-download", action="store_true")
    args = parser.parse_args()
    if not args.allow_download:
        os.environ["ESR_OFFLINE"] = "1"

    from esrcli.api import Model
    from esrcli.errors import EsrError
    from esrcli.paths import hr_folder, list_images

    models = args.model or ["esr-tiny", "span-tiny"]
    sets = args.data or [args.shared / "data/benchmark" / name for name in ("Set5", "Set14", "BSD100")]
    limits = {name: int(n) for name, _, n in (item.partition("=") for item in args.limit_set)}
    rows, skipped = [], []
    for ref in models:
        try:
            model = Model(ref, device=args.device, denoise=0)
        except EsrError as exc:
            skipped.append(f"{ref}: {exc}")
            continue
        scale = model.network.scale
        networks = {tta: model.pipeline(scale, tile=0, tta=tta).upscalers[scale].network for tta in (False, True)}
        for d in sets:
            limit = limits.get(d.name, args.limit)
            total = len(list_images(hr_folder(d)))
            result = measure(networks, d, scale, limit)
            images = len(list_images(hr_folder(d))[:limit])
            named = f"{d.name}" + (f" (first {images} of {total})" if images < total else "")
            rows.append((model.name, named, images, result[False][0], result[True][0], result[False][1], result[True][1]))
            print(f"  {model.name} {d.name}: done", file=sys.stderr, flush=True)

    threads = torch.get_num_threads()
    print(
        f"x4, Y PSNR (crop 4), LR_bicubic/X4; device {args.device}, {threads} torch thread{'s' * (threads != 1)} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    print()
    print("| model | set | images | PSNR plain (dB) | PSNR --tta (dB) | gain (dB) | ms/image plain | ms/image --tta | time --tta/plain |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, set_name, images, p, t, sp, st in rows:
        print(f"| {name} | {set_name} | {images} | {p:.2f} | {t:.2f} | {t - p:+.2f} | {sp * 1e3:.0f} | {st * 1e3:.0f} | {st / sp:.1f}x |")
    for line in skipped:
        print(f"\nleft out: {line}")


if __name__ == "__main__":
    main()
