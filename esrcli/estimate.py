"""How degraded an input is, measured from the input alone: what `--denoise auto` decides from.

Three measures. A JPEG file's quality, read from its quantisation tables (the IJG quality whose scaled
standard tables are nearest: exact for Pillow's and libjpeg's encoders, an equivalent quality for other
tables). For any pixels (PNGs that were once JPEGs, video frames): the 8x8 blocking that JPEG and most
video codecs leave, and the sigma of white noise, both without a reference. `denoise.strength_for`
maps them to a mixing strength; this module only measures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# The IJG (libjpeg) standard quantisation tables, natural (row-major) order.
IJG_LUMA = np.array(
    [
        16,
        11,
        10,
        16,
        24,
        40,
        51,
        61,
        12,
        12,
        14,
        19,
        26,
        58,
        60,
        55,
        14,
        13,
        16,
        24,
        40,
        57,
        69,
        56,
        14,
        17,
        22,
        29,
        51,
        87,
        80,
        62,
        18,
        22,
        37,
        56,
        68,
        109,
        103,
        77,
        24,
        35,
        55,
        64,
        81,
        104,
        113,
        92,
        49,
        64,
        78,
        87,
        103,
        121,
        120,
        101,
        72,
        92,
        95,
        98,
        112,
        100,
        103,
        99,
    ],
    dtype=np.float64,
)
IJG_CHROMA = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5 + [47, 66] + [99] * 38, np.float64
)


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling with baseline (8-bit) clamping."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality  # integers, as libjpeg computes it
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


_LUMA_SUMS = np.array([ijg_table(IJG_LUMA, q).sum() for q in range(1, 101)])


def jpeg_quality(tables: Mapping[int, Sequence[int]] | None) -> float | None:
    """The IJG quality (1..100) of a JPEG's luminance table (Pillow's `image.quantization`), or None.

    Tables written by libjpeg or Pillow at quality q are exactly the scaled standard table: that q is
    found. Other encoders' tables get the quality whose table has the same total (the overall step
    size), interpolated between neighbours, which orders them the same way."""
    if not tables or 0 not in tables or len(tables[0]) != 64:
        return None
    table = np.asarray(tables[0], np.float64)
    for q in range(1, 101):
        if np.array_equal(ijg_table(IJG_LUMA, q), table):
            return float(q)
    total = table.sum()  # _LUMA_SUMS falls as q rises
    if total >= _LUMA_SUMS[0]:
        return 1.0
    if total <= _LUMA_SUMS[-1]:
        return 100.0
    i = int(np.searchsorted(-_LUMA_SUMS, -total))  # first q (index) whose sum is <= total
    hi, lo = _LUMA_SUMS[i - 1], _LUMA_SUMS[i]
    return float(i + (hi - total) / (hi - lo))  # index i - 1 is quality i


def luma(pixels: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, C) uint8/uint16 array (or grey), in 0..255 floats."""
    x = pixels.astype(np.float64) * (255.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0))
    if x.ndim == 2 or x.shape[2] < 3:
        return x if x.ndim == 2 else x[..., 0]
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


# Immerkær's mask: the difference of two Laplacians, blind to any plane and to most smooth structure.
_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
NOISE_BLOCK = 16
NOISE_QUANTILE = 0.1  # the flattest tenth of the blocks: texture only adds to a block's estimate


def _mask_response(y: np.ndarray) -> np.ndarray:
    h, w = y.shape
    out = np.zeros((h - 2, w - 2))
    for dy in range(3):
        for dx in range(3):
            if _MASK[dy, dx]:
                out += _MASK[dy, dx] * y[dy : dy + h - 2, dx : dx + w - 2]
    return np.abs(out)


def noise_sigma(pixels: np.ndarray) -> float:
    """The sigma (0..255 levels, per channel) of white noise in an image, from its flattest blocks.

    Immerkær's estimator (sigma = sqrt(pi/2) / 6 * mean |mask * I|) on each 16x16 block; texture and edges
    only raise a block's value, so a low quantile of the blocks measures the noise (that quantile's bias on
    pure noise is measured once below and divided out). In colour it is measured on the channel
    differences (R - G and G - B, over sqrt 2): noise drawn per channel shows there at full strength, while
    texture, which the channels share, mostly cancels; a small, detailed picture would read its texture
    as noise otherwise. Noise that is the same in every channel (grey noise) is measured on grey images only."""
    x = pixels.astype(np.float64) * (255.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0))
    if x.ndim == 3 and x.shape[2] >= 3 and not (np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 1], x[..., 2])):
        planes = [(x[..., 0] - x[..., 1]) / np.sqrt(2), (x[..., 1] - x[..., 2]) / np.sqrt(2)]
    else:
        planes = [x if x.ndim == 2 else x[..., 0]]
    h, w = (planes[0].shape[0] - 2) // NOISE_BLOCK * NOISE_BLOCK, (planes[0].shape[1] - 2) // NOISE_BLOCK * NOISE_BLOCK
    if h < NOISE_BLOCK or w < NOISE_BLOCK:
        return 0.0
    estimates = []
    for plane in planes:
        response = _mask_response(plane)[:h, :w]
        blocks = response.reshape(h // NOISE_BLOCK, NOISE_BLOCK, w // NOISE_BLOCK, NOISE_BLOCK).mean(axis=(1, 3))
        estimates.append(float(np.quantile(blocks, NOISE_QUANTILE)) * np.sqrt(np.pi / 2) / 6)
    return float(np.mean(estimates) / _QUANTILE_BIAS)


def _quantile_bias() -> float:
    """The estimator's ratio to the true sigma on pure white noise (a fixed seed: a constant)."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 10, (258, 258))
    response = _mask_response(noise)[:256, :256]
    blocks = response.reshape(16, NOISE_BLOCK, 16, NOISE_BLOCK).mean(axis=(1, 3))
    return float(np.quantile(blocks, NOISE_QUANTILE)) * np.sqrt(np.pi / 2) / 6 / 10


_QUANTILE_BIAS = _quantile_bias()


def blockiness(pixels: np.ndarray) -> float:
    """How much stronger luma steps are across the 8x8 grid than beside it (0: no grid).

    For each column boundary x = 8k (and row boundary alike) the mean |step| across it over the mean of
    the steps one pixel either side, less 1; the median over the boundaries (texture makes single
    boundaries swing both ways, a JPEG grid shows on nearly all), averaged over both directions. A JPEG
    at quality 30 gives about 1; a clean photo, noise or a resized JPEG (whose grid no longer falls on 8) ~0."""
    y = luma(pixels)
    scores = []
    for axis in (0, 1):
        steps = np.abs(np.diff(y, axis=axis)).mean(axis=1 - axis)  # mean |step| between line i and i + 1
        n = len(steps) // 8 * 8
        if n < 32:  # fewer than four boundaries: no telling a grid from texture
            continue
        grid = steps[7 : n - 1 : 8]  # between lines 8k - 1 and 8k
        beside = (steps[6 : n - 2 : 8] + steps[8:n:8]) / 2
        scores.append(float(np.median(grid / np.maximum(beside, 1e-9))) - 1.0)
    return max(0.0, float(np.mean(scores))) if scores else 0.0


@dataclass(frozen=True)
class Degradation:
    """What was measured of one input (None: not a JPEG file)."""

    jpeg_quality: float | None
    blockiness: float
    noise_sigma: float

    def as_dict(self) -> dict[str, float | None]:
        return {"jpeg_quality": self.jpeg_quality, "blockiness": round(self.blockiness, 4), "noise_sigma": round(self.noise_sigma, 3)}


def measure(pixels: np.ndarray, tables: Mapping[int, Sequence[int]] | None = None) -> Degradation:
    return Degradation(jpeg_quality(tables), blockiness(pixels), noise_sigma(pixels))
