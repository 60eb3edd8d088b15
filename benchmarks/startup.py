"""How long esr takes to start, against Python itself and against the model's own work.

Usage: python benchmarks/startup.py [-m esr-tiny] [--runs 5]

All figures come from one run, as medians of fresh processes, so their ratios compare:
  - `python -c pass`, `esr --help`, `esr models list`, and `python -c "import esrcli"`;
  - `esr upscale` of a 256x256 PNG, end to end, against the model's forward pass on that image
    (measured in this process after warm-up) and against `import torch` alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", default="esr-tiny")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as work:
        image = Path(work) / "in.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(image)
        subprocess.run([py, "-m", "esrcli", "upscale", str(image), "-m", args.model, "--quiet", "--overwrite"], check=True)  # fill caches
        rows = {
            "python -c pass": median_seconds([py, "-c", "pass"], args.runs),
            "esr --help": median_seconds([py, "-m", "esrcli", "--help"], args.runs),
            "esr models list": median_seconds([py, "-m", "esrcli", "models", "list"], args.runs),
            "import esrcli": median_seconds([py, "-c", "import esrcli"], args.runs),
            "import torch": median_seconds([py, "-c", "import torch"], args.runs),
            "esr upscale 256x256": median_seconds(
                [py, "-m", "esrcli", "upscale", str(image), "-m", args.model, "--quiet", "--overwrite", "--device", "cpu"], args.runs
            ),
        }
    import torch

    from esrcli.bench import measure_speed
    from esrcli.loading import load_reference

    started = time.perf_counter()
    loaded = load_reference(args.model, progress=False)
    rows["load the model (cached, in process)"] = time.perf_counter() - started
    forward = measure_speed(loaded.network, loaded.scale, 256, 256, min_seconds=2).latency_ms / 1e3
    rows["model forward 256x256 (in process)"] = forward
    base, upscale = rows["python -c pass"], rows["esr upscale 256x256"]
    print(f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.runs} fresh processes")
    for name, seconds in rows.items():
        print(f"  {name:<38} {seconds:7.3f} s")
    print(f"esr --help / python -c pass: {rows['esr --help'] / base:.2f}x")
    print(
        f"esr upscale 256x256 / model forward: {upscale / forward:.2f}x (start-up and I/O: {upscale - forward:.2f} s, "
        f"of which import torch {rows['import torch']:.2f} s)"
    )


if __name__ == "__main__":
    main()
