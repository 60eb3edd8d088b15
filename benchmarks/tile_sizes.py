"""Where tiling stops paying on this CPU: frame sizes against tile sizes, through esr's own Upscaler.

Usage: python benchmarks/tile_sizes.py [-m esr-tiny -m span-ntire24] [--seconds 2]

For each model and frame size it times whole frames (`--tile 0`), fixed tiles, and the automatic plan
(what `esr upscale` and `esr video` do by default), in one process, one after the other; the table is
milliseconds per frame and, in brackets, the time relative to the whole frame. It also times a single
forward per pixel at growing square sizes, which is what `tiling.CPU_SPEED_PIXELS` is read from.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import esrcli
from esrcli.bench import time_calls
from esrcli.tiling import TilePlan, Upscaler, auto_plan

FRAMES = [(480, 270), (960, 540), (1920, 1080)]
TILES = [128, 256, 512]


def frame(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    base = np.stack([np.sin(x / 7.0), np.cos(y / 5.0), np.sin((x + y) / 11.0)], -1) * 100 + 128
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def per_frame(upscaler: Upscaler, pixels: np.ndarray, seconds: float) -> float:
    out = np.empty((pixels.shape[0] * upscaler.scale, pixels.shape[1] * upscaler.scale, 3), np.uint8)
    latency, _ = time_calls(lambda: upscaler.upscale(pixels, out), min_seconds=seconds, max_runs=5)
    return latency * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m", "--model", action="append", dest="models")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.models or ["esr-tiny", "span-ntire24"]:
        network = esrcli.load_model(name, device="cpu").network
        scale = network.scale
        plan = auto_plan(network, scale, torch.device("cpu"), torch.float32)
        print(f"\n{name}: overlap {plan.overlap}; forward time per pixel by square side")
        for side in (128, 256, 384, 512, 768):
            x = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                latency, _ = time_calls(lambda x=x, network=network: network(x), min_seconds=args.seconds / 2, max_runs=5)
            print(f"  {side}x{side}: {latency / side / side * 1e6:.2f} us/px")
        print(f"{name}: ms per frame (relative to the whole frame)")
        for width, height in FRAMES:
            pixels = frame(width, height)
            whole = per_frame(Upscaler(network, scale, TilePlan(0, plan.overlap, 1)), pixels, args.seconds)
            cells = [f"whole {whole:.0f}"]
            for tile in TILES:
                if tile < max(width, height):
                    ms = per_frame(Upscaler(network, scale, TilePlan(tile, plan.overlap, 1)), pixels, args.seconds)
                    cells.append(f"tile {tile} {ms:.0f} ({ms / whole:.2f}x)")
            auto = Upscaler(network, scale, plan)
            ms = per_frame(auto, pixels, args.seconds)
            cells.append(f"auto ({auto.count_tiles(height, width)} tiles) {ms:.0f} ({ms / whole:.2f}x)")
            print(f"  {width}x{height}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
