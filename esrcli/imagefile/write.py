"""Writing a `Picture` atomically in the format its suffix (or --format) names, metadata included.

8-bit pictures go through Pillow; 16-bit PNG and TIFF through esrcli.imagefile.deep; AVIF, HEIC and
JPEG XL through esrcli.imagefile.modern (10 or 12 bits for 16-bit pictures in AVIF and HEIC); JPEG
and WebP hold 8 bits only, so 16-bit pictures are rounded for them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..atomic import atomic_write
from ..errors import ImageError
from ..paths import FORMATS, format_for_suffix, writable_suffixes
from .deep import _write_png16, _write_tiff16
from .metadata import _tiff_ifd0_exif
from .modern import MODERN_FORMATS, encode
from .picture import Picture, _os_reason, to_8bit
from .plugins import require


def write_image(picture: Picture, path: str | os.PathLike[str], *, format: str | None = None, quality: int = 95) -> Path:
    """Write atomically: the target is either the old file or the complete new one, never a fragment."""
    target = Path(path)
    name = os.fspath(path)
    fmt = _resolve_format(name, target, format)
    check_storable(picture, fmt, name)
    if target.is_dir():
        raise ImageError(name, "cannot write (it is a directory)")

    try:
        with atomic_write(target) as tmp:
            if picture.bit_depth == 16 and fmt == "tiff":
                _write_tiff16(picture, str(tmp))  # tifffile wants a path: it reads names off file objects
            else:
                with open(tmp, "wb") as f:
                    _encode(picture, f, fmt, quality)
    except ImageError as e:
        raise ImageError(name, e.problem) from e
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot write")) from e
    except Exception as e:  # noqa: BLE001 - encoders raise ValueError, struct.error, ...
        raise ImageError(name, f"cannot write ({e or type(e).__name__})") from e
    return target


def check_storable(picture: Picture, fmt: str, name: str) -> None:
    """Refuse what a format cannot hold (transparency in JPEG), or what cannot write it here (HEIC
    without pillow-heif), before any work is spent on it."""
    if fmt == "jpg" and picture.alpha is not None:
        raise ImageError(name, "has transparency, which JPEG cannot store; use --format png or webp")
    if fmt in MODERN_FORMATS:
        require(fmt, name)


def _resolve_format(name: str, target: Path, format: str | None) -> str:
    if format is None:
        fmt = format_for_suffix(target.suffix)
        if fmt is None:
            known = ", ".join(writable_suffixes())
            raise ImageError(name, f"unknown image suffix {target.suffix or '(none)'!r}; use one of {known} or pass --format")
        return fmt
    fmt = format.lower()
    fmt = fmt if fmt in FORMATS else format_for_suffix(fmt) or ""
    if fmt not in FORMATS:
        raise ImageError(name, f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _encode(picture: Picture, f: BinaryIO, fmt: str, quality: int) -> None:
    if fmt in MODERN_FORMATS:
        encode(picture, f, fmt, quality)
        return
    if picture.bit_depth == 16:
        if fmt == "png":
            _write_png16(picture, f)
            return
        picture = to_8bit(picture)  # JPEG and WebP hold 8 bits only
    _write_pillow(picture, f, fmt, quality)


def _write_pillow(picture: Picture, f: BinaryIO, fmt: str, quality: int) -> None:
    pixels = picture.pixels
    stack = pixels if picture.alpha is None else np.concatenate([pixels, picture.alpha], axis=2)
    im = Image.fromarray(stack[..., 0] if stack.shape[2] == 1 else np.ascontiguousarray(stack))
    options: dict[str, object] = {}
    icc = picture.icc_profile
    if fmt == "webp" and pixels.shape[2] == 1:
        icc = None  # WebP stores grey as RGB, where a GRAY profile would be invalid
    if icc:
        options["icc_profile"] = icc
    if picture.exif:
        options["exif"] = _tiff_ifd0_exif(picture.exif) if fmt == "tiff" else picture.exif
    if fmt == "jpg":
        options.update(quality=quality, subsampling=0 if quality >= 90 else 2)
        pil_format = "JPEG"
    elif fmt == "webp":
        # exact: keep the colour under fully transparent pixels, as PNG and TIFF do.
        options.update(quality=quality, exact=picture.alpha is not None)
        pil_format = "WEBP"
    elif fmt == "tiff":
        options.update(compression="tiff_deflate")
        pil_format = "TIFF"
    else:
        pil_format = "PNG"
    im.save(f, format=pil_format, **options)
