"""Synthetic graphics for training (data.graphics): what photographs lack and screenshots, slides and
cartoons are full of. Flat saturated fields side by side, aliased text and hard strokes in saturated
colours: a network that never sees them may fill a flat blue field with speckle (the NTIRE SPAN releases
do, and so does a network started from one); a share of these pictures teaches it to keep them flat."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# The corners of the RGB cube and the saturated colours between them: where a channel sits at 0 or 255.
SATURATED = [(r, g, b) for r in (0, 255) for g in (0, 255) for b in (0, 255)] + [
    (255, 128, 0),
    (128, 0, 255),
    (0, 128, 255),
    (255, 0, 128),
    (128, 255, 0),
    (0, 255, 128),
    (91, 250, 0),
]
WORDS = "the quick brown fox jumps over lazy dog SALE 50% OFF Menu File Edit View Help 0123456789 Click OK".split()


def graphics_images(count: int, size: int = 384, seed: int = 0) -> list[np.ndarray]:
    """`count` RGB uint8 pictures of size x size, a pure function of (count, size, seed)."""
    rng = np.random.default_rng([seed, 0x6A6])
    return [_picture(rng, size) for _ in range(count)]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    if rng.random() < 0.75:
        return SATURATED[int(rng.integers(len(SATURATED)))]
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _picture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Drawn at 1/1 to 1/4 of the size and enlarged without smoothing, so that edges stay hard at the
    scale the network's input sees them."""
    pixel = int(rng.integers(1, 5))
    small = size // pixel
    image = Image.new("RGB", (small, small), _colour(rng))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for _ in range(int(rng.integers(1, 4))):  # fields of other colours
        x0, y0 = (int(v) for v in rng.integers(0, small, 2))
        w, h = (int(v) for v in rng.integers(small // 6, small, 2))
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=_colour(rng))
    for _ in range(int(rng.integers(2, 9))):  # text, strokes and outlines
        kind = rng.integers(3)
        x, y = (int(v) for v in rng.integers(0, small - 8, 2))
        if kind == 0:
            words = " ".join(WORDS[int(i)] for i in rng.integers(len(WORDS), size=int(rng.integers(1, 6))))
            draw.text((x, y), words, fill=_colour(rng), font=font)
        elif kind == 1:
            x1, y1 = (int(v) for v in rng.integers(0, small, 2))
            draw.line((x, y, x1, y1), fill=_colour(rng), width=int(rng.integers(1, 5)))
        else:
            r = int(rng.integers(3, max(4, small // 4)))
            draw.ellipse((x - r, y - r, x + r, y + r), outline=_colour(rng), width=int(rng.integers(1, 4)))
    return np.asarray(image.resize((small * pixel, small * pixel), Image.Resampling.NEAREST)).copy()
