"""Does the degradation pipeline keep up with training? Samples/s of the data alone and steps/s of
`esr train`, per preset, in one run.

Usage: python benchmarks/degradation_speed.py [--shared ../shared] [--steps 300] [--presets none jpeg light realesrgan]

For each preset: (1) the dataset alone in this process, samples per second over 256 samples (what one
data-loader worker delivers), and (2) a real `esr train` with esr-tiny's own config
(esrcli/weights/esr-tiny-x4.toml: bf16, batch 16, LR patch 48, one loader worker) for --steps steps from the embedded esr-tiny weights, its mean step
rate after the first 50 steps. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from esrcli.degrade import Degrader
from esrcli.degrade_config import DegradationConfig
from esrcli.train.data import PatchDataset, load_sources

SCALE, LR_PATCH, BATCH = 4, 48, 16


def samples_per_second(shared: Path, preset: str, count: int = 256) -> float:
    sources = load_sources([str(shared / "data/train/BSD200"), str(shared / "data/train/Photos2K")], SCALE)
    config = DegradationConfig(preset=preset)
    degrader = Degrader(config, SCALE) if config.enabled else None
    dataset = PatchDataset(sources, SCALE, LR_PATCH, seed=0, degrader=degrader)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    dataset[0]
    start = time.perf_counter()
    for i in range(1, count + 1):
        dataset[i]
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return count / seconds


def train_steps_per_second(shared: Path, preset: str, steps: int, work: Path) -> float:
    run = work / preset
    weights = Path(__file__).resolve().parents[1] / "esrcli" / "weights" / "esr-tiny-x4.safetensors"
    config = Path(__file__).resolve().parents[1] / "esrcli" / "weights" / "esr-tiny-x4.toml"
    cmd = [
        sys.executable,
        "-m",
        "esrcli",
        "train",
        "--config",
        str(config),
        "--init",
        str(weights),
        "--out",
        str(run),
        "--quiet",
        "--data",
        str(shared / "data/train/BSD200"),
        "--data",
        str(shared / "data/train/Photos2K"),
        "--steps",
        str(steps),
        "--degradation",
        preset,
        "--set",
        "run.val_every=0",
        "--set",
        "run.log_every=50",
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rates = [json.loads(line)["it_s"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"it_s"' in line]
    return sum(rates[1:]) / len(rates[1:])  # the first window holds start-up


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared", type=Path)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--presets", nargs="+", default=["none", "jpeg", "light", "realesrgan"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="esr-degradation-speed-"))
    rows = []
    for preset in args.presets:
        data = samples_per_second(args.shared, preset)
        steps = train_steps_per_second(args.shared, preset, args.steps, work)
        rows.append((preset, data, steps))
        print(f"{preset:12} data alone {data:7.1f} samples/s ({data / BATCH:5.1f} batches/s); esr train {steps:5.2f} steps/s", flush=True)
    clean = rows[0][2]
    print()
    for preset, data, steps in rows:
        print(
            f"{preset:12} training speed {steps / clean:5.0%} of clean; the data worker could feed {data / BATCH / steps:4.1f}x the steps taken"
        )


if __name__ == "__main__":
    main()
