"""Throughput, tiling overhead and peak memory of `esr upscale` on this machine.

Usage: python benchmarks/upscale.py [--shared ../shared] [--big 4000x3000]
Each figure comes from a separate `esr upscale` process. Peak RSS is ru_maxrss of the children,
which is the largest child so far: the big run goes first so that it measures that run alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def run(args: list[str]) -> tuple[float, int, dict]:
    """Seconds, peak RSS (bytes) and the JSON summary of one esr upscale process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "esrcli", "upscale", *args, "--json", "--overwrite"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr or proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) * 1024, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared", type=Path)
    parser.add_argument("--big", default="4000x3000")
    args = parser.parse_args()
    weights = args.shared / "weights"
    photo = sorted((args.shared / "data" / "train" / "Photos2K").iterdir())[0]
    work = Path(tempfile.mkdtemp(prefix="esr-bench-"))
    w, h = (int(v) for v in args.big.split("x"))
    big = work / "big.jpg"
    Image.open(photo).convert("RGB").resize((w, h), Image.Resampling.LANCZOS).save(big, quality=92)
    seconds, peak, summary = run(
        [str(big), "-m", str(weights / "span_tiny_ch26_x4_ntire24_team39.pth"), "--device", "cpu", "-o", str(work / "big_x4.jpg")]
    )
    out_mp = w * h * 16 / 1e6
    print(
        f"{w}x{h} -> {w * 4}x{h * 4} JPEG with span-tiny (auto tiles): {seconds:.1f} s wall, "
        f"{out_mp / summary['outputs'][0]['seconds']:.2f} output MP/s, peak RSS {peak / 2**20:.0f} MiB "
        f"(the uint8 output alone is {w * h * 16 * 3 / 2**20:.0f} MiB)"
    )
    medium = work / "medium.png"
    Image.open(photo).convert("RGB").crop((0, 0, 1000, 700)).save(medium)
    rows = []
    for name, file in (("span-ntire24", "span_ch28_x4_ntire24_team38.pth"), ("efdn", "efdn_x4_EFDN_gv.pth")):
        model = str(weights / file)
        times = {}
        for label, tile in (("untiled", "0"), ("tiled 256", "256")):
            seconds, _, summary = run(
                [str(medium), "-m", model, "--device", "cpu", "--precision", "fp32", "--tile", tile, "-o", str(work / "out.png")]
            )
            times[label] = summary["outputs"][0]["seconds"]
        out_mp = 4000 * 2800 / 1e6
        rows.append((name, out_mp / times["untiled"], out_mp / times["tiled 256"], times["tiled 256"] / times["untiled"]))
    print("1000x700 -> 4000x2800, CPU fp32 (per-file seconds, model load excluded)")
    print(f"{'model':14} {'untiled MP/s':>13} {'tiled MP/s':>11} {'tiled/untiled time':>19}")
    for name, untiled, tiled, ratio in rows:
        print(f"{name:14} {untiled:13.2f} {tiled:11.2f} {ratio:19.2f}")


if __name__ == "__main__":
    main()
