"""PyTorch against onnxruntime on this machine: the same networks, the same input, one run.

Usage: python benchmarks/onnx_speed.py [--size 320x180] [--seconds 3] [-m span-tiny -m efdn ...]

Each model is timed in torch (fp32, as esr runs on a CPU) and, exported as `esr export` does, in
onnxruntime's CPU provider in fp32 and fp16; the table gives milliseconds per frame and the speed
ratio to torch fp32 (above 1: faster than torch). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from esrcli.bench import measure_onnx_speed, measure_speed
from esrcli.export import write_onnx
from esrcli.loading import load_reference

DEFAULT_MODELS = ["esr-tiny", "span-tiny", "span-ntire24", "espan", "spanf", "efdn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", action="append", dest="models")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; input {width}x{height}\n")
    print("| model | torch fp32 ms | onnxruntime fp32 ms (ratio) | onnxruntime fp16 ms (ratio) |")
    print("|---|---|---|---|")
    for name in args.models or DEFAULT_MODELS:
        network = load_reference(name, progress=False).network
        base = measure_speed(network, network.scale, width, height, min_seconds=args.seconds)
        cells = [f"{base.latency_ms:.1f}"]
        with tempfile.TemporaryDirectory() as scratch:
            for fp16 in (False, True):
                path = Path(scratch) / f"m{int(fp16)}.onnx"
                write_onnx(network, path, fp16=fp16, metadata={})
                ort = measure_onnx_speed(
                    path, network, network.scale, width, height, fp16=fp16, providers=["CPUExecutionProvider"], min_seconds=args.seconds
                )
                cells.append(f"{ort.latency_ms:.1f} ({base.latency_ms / ort.latency_ms:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
