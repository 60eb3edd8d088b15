"""EXIF orientation, EXIF bytes, ICC profiles and JPEG tables: what a picture carries besides pixels.

Readers use it to apply the orientation once (and reset the tag) and to keep only a profile that
fits the pixels; writers use it to keep only the EXIF tags a TIFF's own IFD can hold.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np
from PIL import Image

_ORIENTATION = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"

# IFD0 tags of a TIFF that describe the picture (as opposed to its storage layout), kept as EXIF.
_TIFF_DESCRIPTIVE_TAGS = (269, 270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432)
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


def jpeg_tables(im: Image.Image) -> dict[int, list[int]] | None:
    tables = getattr(im, "quantization", None) if im.format in ("JPEG", "MPO") else None
    return {int(k): list(v) for k, v in tables.items()} if tables else None


def _fitting_icc(im: Image.Image, channels: int) -> bytes | None:
    """The image's ICC profile if it describes pixels like ours (an RGB profile on grey pixels is dropped)."""
    icc = im.info.get("icc_profile") or None
    return icc if icc is not None and _icc_space(icc) == (b"RGB " if channels == 3 else b"GRAY") else None


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation applied as ImageOps.exif_transpose does, on (H, W, C) arrays."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(orientation)
    return a if op is None else np.ascontiguousarray(op(a))


def _valid_orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_of(im: Image.Image, tiff_orientation: int) -> tuple[int, bytes | None]:
    """The orientation to apply, and EXIF bytes with it reset to 1 (other tags untouched)."""
    exif = im.getexif()
    if im.format == "TIFF":
        return tiff_orientation, _tiff_exif(exif, tiff_orientation != 1)
    orientation = _valid_orientation(exif.get(_ORIENTATION))
    raw = im.info.get("exif")
    if isinstance(raw, bytes) and raw:
        if not raw.startswith(_EXIF_HEADER):
            raw = _EXIF_HEADER + raw
        if orientation == 1:
            return orientation, raw
        patched = _patch_orientation(raw)
        if patched is not None:
            return orientation, patched
    if len(exif) == 0:
        return orientation, None
    if _ORIENTATION in exif:
        exif[_ORIENTATION] = 1
    return orientation, exif.tobytes()


def _patch_orientation(raw: bytes) -> bytes | None:
    """Set IFD0's Orientation to 1 in place: byte-exact, so maker notes and offsets stay valid."""
    tiff = raw[len(_EXIF_HEADER) :]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    end = "<" if tiff[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(end + "H", tiff[ifd : ifd + 2])
    for i in range(count):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(tiff):
            return None
        tag, kind = struct.unpack(end + "HH", tiff[entry : entry + 4])
        if tag == _ORIENTATION and kind == 3:  # SHORT, value stored inline
            value = entry + 8
            out = bytearray(tiff)
            out[value : value + 2] = struct.pack(end + "H", 1)
            return _EXIF_HEADER + bytes(out)
    return None


def _tiff_exif(exif: Image.Exif, had_orientation: bool) -> bytes | None:
    """A TIFF's IFD0 mixes layout tags (strips, bit depth) with EXIF ones: keep only the latter."""
    clean = Image.Exif()
    for tag in _TIFF_DESCRIPTIVE_TAGS:
        if tag in exif:
            clean[tag] = exif[tag]
    for tag in (_EXIF_IFD, _GPS_IFD):
        sub = exif.get_ifd(tag)
        if sub:
            clean[tag] = dict(sub)
    if _ORIENTATION in clean or had_orientation:
        clean[_ORIENTATION] = 1
    return clean.tobytes() if len(clean) else None


def _icc_space(icc: bytes) -> bytes | None:
    return icc[16:20] if len(icc) >= 128 else None


def _tiff_ifd0_exif(raw: bytes) -> Image.Exif:
    """EXIF tags for a compressed TIFF's own IFD.

    libtiff (which Pillow needs for compression) refuses the Exif and GPS sub-IFD pointers, and an
    uncompressed TIFF of an upscaled picture is huge, so only IFD0 tags (Make, Model, DateTime,
    Artist, Copyright, ...) are kept for TIFF output.
    """
    exif = Image.Exif()
    exif.load(raw)
    kept = Image.Exif()
    for tag in _TIFF_DESCRIPTIVE_TAGS:
        if tag in exif:
            kept[tag] = exif[tag]
    return kept
