"""docs/denoise.png: a JPEG crop through esr-tiny at --denoise 0, 0.5 and 1, and auto, beside the input and the original.

Usage: python benchmarks/denoise_picture.py [--shared ../shared] [--quality 40] [--out docs/denoise.png]

The picture is a Photos2K training photo reduced x3, cropped to 256x256, reduced x4 with MATLAB bicubic and
saved as a JPEG at --quality (the crop where its middle has the most edges): what a phone or a website hands over. Each panel is the middle 128x128 of
the x4 result, enlarged twice (nearest) so that blocks and ringing stay visible; the auto panel names the
strength esr chose from the file's quantisation tables.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import esrcli
from esrcli.imagefile import read_rgb8
from esrcli.imresize import bicubic_downscale_uint8, mod_crop

CROP, WINDOW, ZOOM = 256, 128, 2  # HR crop; the part of it each panel shows, enlarged ZOOM times


def label(panel: np.ndarray, text: str) -> np.ndarray:
    band = Image.new("RGB", (panel.shape[1], 16), (255, 255, 255))
    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    ImageDraw.Draw(band).text((3, 2), text, fill=(0, 0, 0), font=font)
    return np.concatenate([np.array(band), panel], axis=0)


def busiest(hr: np.ndarray, stride: int = 32) -> tuple[int, int]:
    """The top-left corner of the CROP window with the most edges (mean luma gradient): sky shows nothing."""
    grey = hr.astype(np.float64).mean(axis=2)
    edges = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1]
    corners = [(y, x) for y in range(0, edges.shape[0] - CROP, stride) for x in range(0, edges.shape[1] - CROP, stride)]
    return max(corners, key=lambda c: edges[c[0] + CROP // 4 : c[0] + 3 * CROP // 4, c[1] + CROP // 4 : c[1] + 3 * CROP // 4].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=Path(__file__).resolve().parents[2] / "shared", type=Path)
    parser.add_argument("--quality", type=int, default=40)
    parser.add_argument("--photo", default="Bridge_by_Sander_Klootwijk.png", help="a Photos2K file name")
    parser.add_argument("--out", default=Path("docs/denoise.png"), type=Path)
    args = parser.parse_args()
    photo = args.shared / "data" / "train" / "Photos2K" / args.photo
    hr = bicubic_downscale_uint8(mod_crop(read_rgb8(photo), 3), 3)
    y, x = busiest(hr)
    hr = np.ascontiguousarray(hr[y : y + CROP, x : x + CROP])
    buffer = io.BytesIO()
    Image.fromarray(bicubic_downscale_uint8(hr, 4)).save(buffer, "JPEG", quality=args.quality)
    buffer.seek(0)
    jpeg = Image.open(buffer)
    lr = np.asarray(jpeg.convert("RGB"))
    panels = [(f"input: JPEG q{args.quality} (nearest)", lr.repeat(4, 0).repeat(4, 1))]
    for strength in (0.0, 0.5, 1.0):
        out = esrcli.load_model("esr-tiny", device="cpu", denoise=strength).upscale(lr)
        panels.append((f"esr-tiny --denoise {strength:g}", out))
    auto = esrcli.load_model("esr-tiny", device="cpu")
    chosen, info = auto.pipeline(tile=0).for_input(lr, jpeg.quantization)
    panels.append((f"auto (chose {chosen.strength:g})", np.asarray(auto.upscale(jpeg))))
    panels.append(("original", hr))
    cells = []
    at = (CROP - WINDOW) // 2
    for text, pixels in panels:
        window = np.ascontiguousarray(pixels[at : at + WINDOW, at : at + WINDOW])
        big = np.asarray(Image.fromarray(window).resize((WINDOW * ZOOM, WINDOW * ZOOM), Image.Resampling.NEAREST))
        cells += [label(big, text), np.full((big.shape[0] + 16, 4, 3), 255, np.uint8)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(cells[:-1], axis=1)).save(args.out, optimize=True)
    print(f"wrote {args.out} ({photo.name}; auto measured {info})")


if __name__ == "__main__":
    main()
