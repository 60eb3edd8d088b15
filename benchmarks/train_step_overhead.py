"""How fast does `esr train` step with 0, 1, 2... data workers, and against another copy of esr?

Usage: python benchmarks/train_step_overhead.py --data ../shared/data/train/BSD200 [--workers 0 1 2] [--repeats 3]
       [--before /path/to/older/esr] [--steps 60] [--log-every 10] [--degradation none] [--device cpu]

Each run is a real `esr train --arch span --channels 24 --scale 4 --batch 16 --lr-patch 48` for --steps
steps with a record every --log-every steps; its rate is the steps after the first record over their
time (start-up, the first steps' allocations and the final checkpoint left out). Runs are interleaved
(repeat, then workers, then tree) so that other load on the machine spreads over all of them and the
trees' runs of one setting are neighbours; the table gives the median and the range of the repeats. --before runs the same commands with that
folder first on PYTHONPATH (e.g. a git worktree of an older commit). The EMA line times the
trainer's EMA update on the same network: one multi-tensor call against the loop of lerp_ it replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def steps_per_second(tree: Path | None, data: Path, workers: int, args: argparse.Namespace, work: Path) -> float:
    run = work / f"run-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "esrcli", "train", "--arch", "span", "--channels", "24", "--scale", "4", "--batch", "16",
           "--lr-patch", "48", "--data", str(data), "--steps", str(args.steps), "--device", args.device, "--out", str(run),
           "--workers", str(workers), "--degradation", args.degradation, "--quiet", "--set", f"run.log_every={args.log_every}",
           "--set", "run.val_every=0", "--set", "run.ckpt_every=0"]  # fmt: skip
    env = {**os.environ, **({"PYTHONPATH": str(tree)} if tree else {})}
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree or Path(__file__).resolve().parents[1])
    rates = [json.loads(line)["it_s"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"it_s"' in line]
    later = rates[1:]  # the first window holds start-up
    return len(later) / sum(1 / r for r in later)  # windows of equal length: steps over their summed time


def ema_update_ms(repeats: int = 200) -> tuple[float, float]:
    """Milliseconds per EMA update of SPAN (24 ch, x4, training form): the lerp_ loop, then one foreach call."""
    from esrcli.archs import build

    network = build("span", channels=24, scale=4)
    ema = [p.detach().clone() for p in network.parameters()]
    params = [p.detach() for p in network.parameters()]

    def loop() -> None:
        for e, p in zip(ema, params):
            e.lerp_(p, 0.001)

    def foreach() -> None:
        torch._foreach_lerp_(ema, params, 0.001)

    times = []
    for update in (loop, foreach):
        update()
        start = time.perf_counter()
        for _ in range(repeats):
            update()
        times.append((time.perf_counter() - start) / repeats * 1000)
    return times[0], times[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train/BSD200"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--before", type=Path, help="another esr tree to compare with (first on PYTHONPATH)")
    parser.add_argument("--degradation", default="none")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"this tree": None, **({"before": args.before.resolve()} if args.before else {})}
    work = Path(tempfile.mkdtemp(prefix="esr-train-overhead-"))
    rates: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for workers in args.workers:
            for name, tree in trees.items():
                rate = steps_per_second(tree, args.data.resolve(), workers, args, work)
                rates.setdefault((name, workers), []).append(rate)
                print(f"repeat {repeat + 1}: {name:9} workers {workers}: {rate:.3f} steps/s", flush=True)
    print()
    for (name, workers), values in rates.items():
        print(f"{name:9} workers {workers}: median {statistics.median(values):.3f} steps/s (range {min(values):.3f}-{max(values):.3f})")
    loop_ms, foreach_ms = ema_update_ms()
    print(f"EMA update of SPAN 24 ch: {loop_ms:.3f} ms as a lerp_ loop, {foreach_ms:.3f} ms as one _foreach_lerp_")


if __name__ == "__main__":
    main()
