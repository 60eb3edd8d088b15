"""bf16 against fp32 on this CPU, with its bf16 instructions and with oneDNN held to AVX2 (as on a CPU
without AVX-512 BF16 or AMX), in fresh processes, one after the other: ratios from one run.

Usage: python benchmarks/bf16_cpu.py [-m MODEL] [--size 320x180] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def latency(model: str, size: str, precision: str, seconds: float, isa: str | None) -> float:
    env = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa else {})}
    args = [sys.executable, "-m", "esrcli", "bench", "speed", "-m", model, "--size", size, "--device", "cpu"]
    out = subprocess.run([*args, "--precision", precision, "--seconds", str(seconds), "--json"], capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(out.stderr)
    return float(json.loads(out.stdout)["latency_ms"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", default="esr-tiny")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--seconds", type=float, default=3.0)
    a = parser.parse_args()
    from esrcli.device import cpu_has_native_bf16

    print(f"{a.model} at {a.size}, CPU bf16 native: {cpu_has_native_bf16()}")
    for isa in (None, "AVX2"):
        fp32, bf16 = (latency(a.model, a.size, p, a.seconds, isa) for p in ("fp32", "bf16"))
        print(f"oneDNN {isa or 'default ISA'}: fp32 {fp32:.1f} ms, bf16 {bf16:.1f} ms, bf16/fp32 {bf16 / fp32:.2f}x")


if __name__ == "__main__":
    main()
