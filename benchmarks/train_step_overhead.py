"""How fast does `esr train` step with 0, 1, 2... data workers, and against another copy of esr?

Usage: python benchmarks/train_step_overhead.py --data ../shared/data/train/BSD200 [--workers 0 1 2] [--repeats 3]
       [--before /path/to/older/esr] [--steps 60] [--log-every 10] [--degradation none] [--device cpu]

Each run is a real `esr train --arch span --channels 24 --scale 4 --batch 16 --lr-patch 48` for --steps
steps with a record every --log-every steps; its rate is the steps after the first record over their
time (start-up, the first steps' allocations and the final checkpoint left out). Runs are interleaved
(repeat, then workers, then tree) so that other load on the machine spreads over all of them and the
trees' runs of one setting are neighbours; the table gives the median and the range of the repeats.
--before runs the same commands with that folder first on PYTHONPATH (e.g. a git worktree of an older
commit). The EMA line times the trainer's EMA update on the same network: one multi-tensor call
against the loop of lerp_ it replaced.

Other work on the machine changes these rates several-fold (a CPU step's threads wait for each other:
on 2 cores SPAN 24 ch went from 1.1 to 0.13 steps/s beside two busy processes). On Linux each run
therefore waits (up to --wait seconds) for the CPUs to be idle, and reports the cores that other
processes used while it ran; the table counts only runs where that stayed under 0.2 cores.
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

QUIET = 0.2  # cores others may use during a run that counts


def busy_cores_seconds() -> float | None:
    """CPU-seconds every process on the machine has used since boot (None where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def wait_for_idle(limit: float) -> None:
    """Until the machine's CPUs were idle for a second (below QUIET cores busy), or `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = busy_cores_seconds()
        time.sleep(1.0)
        after = busy_cores_seconds()
        if before is None or after is None or after - before < QUIET:
            return


def steps_per_second(tree: Path | None, data: Path, workers: int, args: argparse.Namespace, work: Path) -> tuple[float, float]:
    """(steps/s, cores other processes used meanwhile)."""
    run = work / f"run-{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "esrcli",
        "train",
        "--arch",
        "span",
        "--channels",
        "24",
        "--scale",
        "4",
        "--batch",
        "16",
        "--lr-patch",
        "48",
        "--data",
        str(data),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--out",
        str(run),
        "--workers",
        str(workers),
        "--degradation",
        args.degradation,
        "--quiet",
        "--set",
        f"run.log_every={args.log_every}",
        "--set",
        "run.val_every=0",
        "--set",
        "run.ckpt_every=0",
    ]
    env = {**os.environ, **({"PYTHONPATH": str(tree)} if tree else {})}
    wait_for_idle(args.wait)
    start, busy, ours = time.monotonic(), busy_cores_seconds(), os.times()
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tree or Path(__file__).resolve().parents[1])
    seconds, done = time.monotonic() - start, os.times()
    mine = done.children_user + done.children_system - ours.children_user - ours.children_system
    others = max(0.0, ((busy_cores_seconds() or 0.0) - (busy or 0.0) - mine) / seconds) if busy is not None else 0.0
    rates = [json.loads(line)["it_s"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"it_s"' in line]
    later = rates[1:]  # the first window holds start-up
    return len(later) / sum(1 / r for r in later), others  # windows of equal length: steps over their summed time


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
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for idle CPUs before each run")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"this tree": None, **({"before": args.before.resolve()} if args.before else {})}
    work = Path(tempfile.mkdtemp(prefix="esr-train-overhead-"))
    rates: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for repeat in range(args.repeats):
        for workers in args.workers:
            for name, tree in trees.items():
                rate, others = steps_per_second(tree, args.data.resolve(), workers, args, work)
                rates.setdefault((name, workers), []).append((rate, others))
                print(f"repeat {repeat + 1}: {name:9} workers {workers}: {rate:.3f} steps/s (others used {others:.2f} cores)", flush=True)
    print()
    for (name, workers), runs in rates.items():
        quiet = [rate for rate, others in runs if others < QUIET]
        if quiet:
            print(
                f"{name:9} workers {workers}: median {statistics.median(quiet):.3f} steps/s (range {min(quiet):.3f}-{max(quiet):.3f}, ",
                end="",
            )
        else:
            print(f"{name:9} workers {workers}: no run on a quiet machine (", end="")
        print(f"{len(quiet)} of {len(runs)} runs on a quiet machine)")
    loop_ms, foreach_ms = ema_update_ms()
    print(f"EMA update of SPAN 24 ch: {loop_ms:.3f} ms as a lerp_ loop, {foreach_ms:.3f} ms as one _foreach_lerp_")


if __name__ == "__main__":
    main()
