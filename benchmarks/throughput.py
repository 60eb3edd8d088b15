"""Batch throughput of `esr upscale`: model alone, one file after another, pipelined, and on Ray.

Usage: python benchmarks/throughput.py [--shared ../shared] [--count 24] [--size 256] [--model esr-tiny]

All figures come from one run on the same images, so their ratios hold even when absolute speeds do not:
- model only: the pictures already decoded, `upscale_picture` on each (no reading, no writing);
- sequential: read, upscale, write each file in turn (what esr upscale did before it was pipelined);
- pipelined: `run_batch`, reading and writing in threads around the model (what esr upscale does now);
- `esr upscale` and `esr upscale --ray local --ray-workers 2` as processes, wall time including start-up.
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from esrcli.api import load_model
from esrcli.batch import Settings, Task, load, process, run_batch, upscale_picture


def make_inputs(shared: Path, folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    photos = sorted((shared / "data" / "train" / "Photos2K").iterdir())[:count]
    paths = []
    for i, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        left, top = (image.width - size) // 2, (image.height - size) // 2
        path = folder / f"p{i:03d}.png"
        image.crop((left, top, left + size, top + size)).save(path)
        paths.append(path)
    return paths


def tasks_for(paths: list[Path], out: Path) -> list[Task]:
    return [Task(p, out / f"{p.stem}_x4.png", "png") for p in paths]


def esr_seconds(args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "esrcli", "upscale", *args, "--json"], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return seconds, json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared", type=Path)
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--model", default="esr-tiny")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="esr-throughput-"))
    paths = make_inputs(args.shared, work / "in", args.count, args.size)
    model = load_model(args.model, device="cpu")
    pipeline = model.pipeline(None, tile=0)
    settings = Settings(overwrite=True)

    pictures = [load(t, settings) for t in tasks_for(paths, work / "x")]
    upscale_picture(pictures[0], pipeline)  # warm-up
    start = time.perf_counter()
    for picture in pictures:
        upscale_picture(picture, pipeline)
    model_only = time.perf_counter() - start

    start = time.perf_counter()
    for task in tasks_for(paths, work / "sequential"):
        (work / "sequential").mkdir(exist_ok=True)
        assert process(task, pipeline, settings).status == "done"
    sequential = time.perf_counter() - start

    start = time.perf_counter()
    outcomes = run_batch(tasks_for(paths, work / "pipelined"), pipeline, settings)
    pipelined = time.perf_counter() - start
    assert all(o.status == "done" for o in outcomes)

    common = [str(work / "in"), "-m", args.model, "--tile", "0", "--device", "cpu", "--overwrite"]
    local_wall, _ = esr_seconds([*common, "-o", str(work / "cli")])
    ray_wall, summary = esr_seconds([*common, "-o", str(work / "ray"), "--ray", "local", "--ray-workers", "2"])

    n = len(paths)
    rows = [
        ("model only (decoded in memory)", model_only),
        ("sequential: read, upscale, write", sequential),
        ("pipelined (esr upscale now)", pipelined),
        ("esr upscale process, wall", local_wall),
        (f"esr upscale --ray local, {summary['ray']['workers']} CPU workers, wall", ray_wall),
    ]
    print(f"{n} PNG files of {args.size}x{args.size}, x4 with {args.model} on the CPU ({os.cpu_count()} cores), one run")
    print(f"{'':44} {'seconds':>8} {'files/s':>8} {'vs model':>9}")
    for label, seconds in rows:
        print(f"{label:44} {seconds:8.2f} {n / seconds:8.2f} {model_only / seconds:8.0%}")
    print(f"pipelined / sequential throughput: {sequential / pipelined:.2f}x; Ray / local process: {local_wall / ray_wall:.2f}x")


if __name__ == "__main__":
    main()
