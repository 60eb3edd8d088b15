"""The `Picture` every reader returns and every writer takes, and what both sides share.

Kept at the bottom of the package (numpy only, no Pillow) so that the decoders, the 16-bit codecs
and the writers can all use it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Picture:
    """Pixels plus everything a careful tool must carry to the output file."""

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None  # starts with b"Exif\0\0", Orientation already applied (tag is 1)
    format: str = "PNG"
    jpeg_tables: dict[int, list[int]] | None = None  # a JPEG's quantisation tables: its quality, for --denoise auto
    denoise: dict | None = None  # an upscaled picture: its --denoise strength, and under auto what decided it
    source_bits: int | None = None  # a 16-bit picture from a 10 or 12-bit AVIF/HEIC: written back at that depth

    def __post_init__(self) -> None:
        # Fail early with a clear message when a caller builds an inconsistent picture.
        p = self.pixels
        if p.ndim != 3 or p.shape[2] not in (1, 3):
            raise ValueError(f"Picture.pixels must be (H, W, 1) or (H, W, 3), got shape {p.shape}")
        if p.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"Picture.pixels must be uint8 or uint16, got {p.dtype}")
        if self.alpha is not None:
            a = self.alpha
            if a.shape != p.shape[:2] + (1,) or a.dtype != p.dtype:
                raise ValueError(f"Picture.alpha must be {p.shape[:2] + (1,)} {p.dtype}, got {a.shape} {a.dtype}")

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def to_8bit(picture: Picture) -> Picture:
    def cut(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)

    alpha = None if picture.alpha is None else cut(picture.alpha)
    return Picture(cut(picture.pixels), alpha, picture.icc_profile, picture.exif, picture.format)


def _os_reason(e: OSError, verb: str) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file" if verb == "cannot read" else f"{verb} (No such file or directory)"
    return f"{verb} ({e.strerror or e})"
