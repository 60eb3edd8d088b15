"""A contact sheet of what the training degradations make: HR crops and their degraded LR, per preset.

Usage: python benchmarks/degradations.py [--out docs/degradations.png] [--image FILE ...] [--crops 3] [--seed 0]

Each row is one HR crop (left), then one LR sample per preset (shown enlarged with nearest
neighbour, so the blocks, noise and blur are visible as they reach the network), labelled.
Default images: the first Photos2K and BSD200 photos under ../shared.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from esrcli.degrade import PRESETS, DegradationConfig, Degrader
from esrcli.imagefile import read_rgb8

SCALE = 4
CROP = 192  # HR pixels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/degradations.png"))
    parser.add_argument("--image", type=Path, action="append", default=[])
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    images = args.image or [
        sorted((args.shared / "data/train/Photos2K").iterdir())[3],
        sorted((args.shared / "data/train/BSD200").iterdir())[0],
        sorted((args.shared / "data/train/Photos2K").iterdir())[10],
    ]
    presets = ["none", *[p for p in PRESETS if p != "none"]]
    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.crops):
        pixels = read_rgb8(images[i % len(images)])
        h, w = pixels.shape[:2]
        y, x = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
        crop = pixels[y : y + CROP, x : x + CROP]
        hr = torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255
        tiles = [crop]
        for preset in presets:
            if preset == "none":
                from esrcli.imresize import bicubic_downscale_uint8

                lr = bicubic_downscale_uint8(crop, SCALE)
            else:
                sample = Degrader(DegradationConfig(preset=preset), SCALE)(hr, np.random.default_rng([args.seed, i]))
                lr = (sample * 255).round().byte().permute(1, 2, 0).numpy()
            tiles.append(np.asarray(Image.fromarray(lr).resize((CROP, CROP), Image.Resampling.NEAREST)))
        rows.append(np.concatenate(tiles, axis=1))
    label_height = 18
    sheet = np.concatenate(rows, axis=0)
    canvas = Image.new("RGB", (sheet.shape[1], sheet.shape[0] + label_height), "white")
    canvas.paste(Image.fromarray(sheet), (0, label_height))
    draw = ImageDraw.Draw(canvas)
    for j, name in enumerate(["HR crop", *[f"LR: {p}" if p != "none" else "LR: bicubic" for p in presets]]):
        draw.text((j * CROP + 4, 3), name, fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"{args.out}: {canvas.width}x{canvas.height}, presets {', '.join(presets)}")


if __name__ == "__main__":
    main()
