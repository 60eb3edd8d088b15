"""Side by side on a degraded photo: the LR input, bicubic, esr-tiny and esr-tiny-real, and the original.

Usage: python benchmarks/real_world.py [--shared ../shared] [--degrade jpeg:70] [--out docs/real_world.png]

Each row is one Set14 image made into a x4 LR input by `esr bench quality --degrade SPEC`'s own
degradation (seeded, identical on every run), cropped to the same region in every panel and shown at
twice its size (nearest neighbour). Labels carry each method's PSNR (Y) on the whole image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from esrcli.api import load_model
from esrcli.degrade import degrade_benchmark
from esrcli.imagefile import read_rgb8
from esrcli.imresize import imresize, mod_crop
from esrcli.metrics import psnr

SCALE = 4
ROWS = (("comic", (70, 110)), ("barbara", (420, 250)), ("zebra", (150, 120)))  # image, HR crop corner (x, y)
CROP, ZOOM = 144, 2


def bicubic_up(lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr).permute(2, 0, 1).double()
    return imresize(x, scale=SCALE).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared", type=Path)
    parser.add_argument("--degrade", default="jpeg:70")
    parser.add_argument("--models", nargs="+", default=["esr-tiny", "esr-tiny-real"])
    parser.add_argument("--out", default=Path("docs/real_world.png"), type=Path)
    args = parser.parse_args()
    models = [load_model(name, device="cpu") for name in args.models]
    panels_rows, names = [], []
    for image, (x, y) in ROWS:
        hr = mod_crop(read_rgb8(args.shared / "data" / "benchmark" / "Set14" / "HR" / f"{image}.png"), SCALE)
        lr = degrade_benchmark(hr, SCALE, args.degrade, image)
        outputs = {"bicubic": bicubic_up(lr)}
        for name, model in zip(args.models, models, strict=True):
            outputs[name] = model.upscale(lr, tile=0)
        panels = [(f"input ({args.degrade})", np.repeat(np.repeat(lr, SCALE, 0), SCALE, 1))]
        panels += [(f"{name} {psnr(out, hr, SCALE):.2f} dB", out) for name, out in outputs.items()]
        panels.append(("original", hr))
        row = []
        for _, picture in panels:
            crop = picture[y : y + CROP, x : x + CROP]
            row.append(np.asarray(Image.fromarray(crop).resize((CROP * ZOOM, CROP * ZOOM), Image.Resampling.NEAREST)))
        panels_rows.append((np.concatenate(row, axis=1), [label for label, _ in panels]))
        names.append(image)
    label_height, side = 18, CROP * ZOOM
    height = sum(label_height + r.shape[0] for r, _ in panels_rows)
    canvas = Image.new("RGB", (panels_rows[0][0].shape[1], height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (row, labels), image in zip(panels_rows, names, strict=True):
        for j, label in enumerate(labels):
            draw.text((j * side + 4, top + 3), f"{image}: {label}" if j == 0 else label, fill="black")
        canvas.paste(Image.fromarray(row), (0, top + label_height))
        top += label_height + row.shape[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"{args.out}: {canvas.width}x{canvas.height}, {args.degrade}, models {', '.join(args.models)}")


if __name__ == "__main__":
    main()
