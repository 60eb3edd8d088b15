"""Training step rate, fp32 against bf16 autocast, in one process (ratios, not absolute figures).

Usage: python benchmarks/train_speed.py [--arch span] [--channels 24] [--scale 4] [--batch 16] [--lr-patch 48]
Synthetic batches: this times the network, loss and optimizer step, not data loading.
"""

from __future__ import annotations

import argparse
import time

import torch

from esrcli.archs import build


def steps_per_second(network: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor, amp: bool, steps: int) -> float:
    optimizer = torch.optim.Adam(network.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = network(lr)
        loss = (out.float() - hr).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="span")
    parser.add_argument("--channels", type=int, default=24)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--form", default="fused", choices=["fused", "train"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr-patch", type=int, default=48)
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    network = build(args.arch, form=args.form, scale=args.scale, channels=args.channels).to(memory_format=torch.channels_last)
    lr = torch.rand(args.batch, 3, args.lr_patch, args.lr_patch).contiguous(memory_format=torch.channels_last)
    hr = torch.rand(args.batch, 3, args.lr_patch * args.scale, args.lr_patch * args.scale)
    rates = {"fp32": [], "bf16": []}
    for _ in range(2):  # interleaved, so drift on a shared machine hits both
        for name in rates:
            rates[name].append(steps_per_second(network, lr, hr, name == "bf16", args.steps))
    fp32, bf16 = max(rates["fp32"]), max(rates["bf16"])
    print(
        f"{args.arch} {args.channels} ch x{args.scale}, batch {args.batch}, LR {args.lr_patch}: fp32 {fp32:.2f} it/s, bf16 {bf16:.2f} it/s, ratio {bf16 / fp32:.2f}"
    )


if __name__ == "__main__":
    main()
