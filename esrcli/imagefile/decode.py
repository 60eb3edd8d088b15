"""From an open Pillow image to a `Picture`: every mode mapped onto grey or RGB plus alpha.

Pillow opens the file (EPS excluded; AVIF, HEIC and JPEG XL through esrcli.imagefile.plugins),
animations and multi-page TIFFs are refused, 16-bit colour is handed to esrcli.imagefile.deep (10 and
12-bit AVIF and HEIF to esrcli.imagefile.modern), and orientation, EXIF and ICC go through
esrcli.imagefile.metadata.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .deep import _decode_16bit
from .metadata import _ORIENTATION, _exif_of, _fitting_icc, _orient, _valid_orientation, jpeg_tables
from .modern import decode_deep
from .picture import Picture, _os_reason
from .plugins import prepare_open


def _open(name: str) -> Image.Image:
    only = None
    try:
        with open(name, "rb") as f:
            head = f.read(64)
        # AVIF, HEIC and JPEG XL: their plugin is loaded now (or its absence said), and only it opens them.
        only = prepare_open(name, head, os.path.splitext(name)[1])
        return Image.open(name, formats=[only] if only else _readable_formats())
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        if only:  # the file starts as one, but its plugin cannot make sense of the rest
            raise ImageError(name, f"cannot read image (a damaged or truncated {only} file)") from e
        raise ImageError(name, "not an image file Pillow can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot read")) from e
    except Exception as e:  # noqa: BLE001 - plugins raise anything on garbage headers
        raise ImageError(name, f"cannot read image ({_reason(e)})") from e


def _readable_formats() -> list[str]:
    # EPS is opened by running Ghostscript on the file: not something to do with untrusted input.
    Image.init()
    return [f for f in Image.OPEN if f != "EPS"]


def _check_single_frame(name: str, im: Image.Image) -> None:
    # MPO is how Pillow opens many phone JPEGs (a second frame holds a preview or gain map): the
    # first frame is the photo, so it is not an animation. A HEIF file's other top-level images
    # (a burst, an edit's original) are not frames of one either: Pillow shows its primary image.
    if im.format in ("MPO", "HEIF"):
        return
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames <= 1 and not getattr(im, "is_animated", False):
        return
    if im.format == "TIFF":
        raise ImageError(name, f"multi-page TIFF ({frames} pages) is not supported; split the pages first")
    raise ImageError(name, f"animated image ({frames} frames) is not supported; use esr video for moving pictures")


def _decode(name: str, im: Image.Image) -> Picture:
    fmt = "JPEG" if im.format == "MPO" else (im.format or "UNKNOWN")
    try:
        # Pillow's TIFF loader applies the orientation itself and drops the tag, so read it first.
        tiff_orientation = _valid_orientation(im.getexif().get(_ORIENTATION)) if im.format == "TIFF" else 1
        im.load()  # also for 16-bit files: a PNG's eXIf chunk may follow its pixels
        orientation, exif = _exif_of(im, tiff_orientation)
        if im.format == "JXL" and not getattr(im, "jpeg", False):
            # libjxl has applied the codestream's orientation, which the EXIF tag only echoes; a JPEG
            # kept whole inside a JPEG XL comes back as that JPEG, oriented by its EXIF like any other.
            orientation = 1
        arrays, source_bits = _decode_16bit(name, im), None
        if arrays is None and (deeper := decode_deep(name, im)) is not None:  # 10 and 12-bit AVIF and HEIF
            arrays, source_bits = (deeper[0], deeper[1]), deeper[2]
        if arrays is None:
            arrays = pil_arrays(name, im)
            if im.format == "TIFF" and _ORIENTATION not in getattr(im, "tag_v2", {}):
                orientation = 1  # already applied by Pillow
    except (ImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except OSError as e:
        raise ImageError(name, f"cannot read image ({_pil_reason(e)})") from e
    except Exception as e:  # noqa: BLE001 - decoders raise ValueError, SyntaxError, struct.error, ...
        raise ImageError(name, f"cannot read image ({_reason(e)})") from e

    pixels, alpha = arrays
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    icc = _fitting_icc(im, pixels.shape[2])
    return Picture(pixels=pixels, alpha=alpha, icc_profile=icc, exif=exif, format=fmt, jpeg_tables=jpeg_tables(im), source_bits=source_bits)


def picture_from_pil(im: Image.Image, *, name: str = "<PIL image>", exif_transpose: bool = True) -> Picture:
    """An open PIL image as `read_image` would give it from its file: one frame only, EXIF orientation
    applied (and reset in the EXIF kept), the ICC profile kept where it fits the pixels."""
    _check_single_frame(name, im)
    try:
        tiff_orientation = _valid_orientation(im.getexif().get(_ORIENTATION)) if im.format == "TIFF" else 1
        im.load()
        orientation, exif = _exif_of(im, tiff_orientation) if exif_transpose else (1, None)
        if im.format == "TIFF" and _ORIENTATION not in getattr(im, "tag_v2", {}):
            orientation = 1  # already applied by Pillow's loader
        pixels, alpha = pil_arrays(name, im)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - a lazily loaded image may fail to decode only now
        raise ImageError(name, f"cannot read image ({e or type(e).__name__})") from e
    pixels, alpha = _orient(pixels, orientation), None if alpha is None else _orient(alpha, orientation)
    icc = _fitting_icc(im, pixels.shape[2])
    return Picture(
        pixels=np.ascontiguousarray(pixels),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        icc_profile=icc,
        exif=exif,
        jpeg_tables=jpeg_tables(im),
    )


def _reason(e: Exception) -> str:
    # The JPEG XL plugin's errors go on to advise building libjxl in debug mode: not for users.
    return str(e).split(". Please build", 1)[0] or type(e).__name__


def _pil_reason(e: OSError) -> str:
    text = str(e) or type(e).__name__
    # "image file is truncated (7 bytes not processed)" reads better without the byte count.
    return re.sub(r"^(image file is truncated) \(.*\)$", r"\1", text)


def pil_arrays(name: str, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Map every Pillow mode onto grey or RGB (uint8/uint16) plus optional alpha."""
    mode = im.mode
    has_key = "transparency" in im.info
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode == "P" or mode == "PA":
        transparent = mode == "PA" or has_key or bool(getattr(im, "has_transparency_data", False))
        im = im.convert("RGBA" if transparent else "RGB")
    elif mode in ("L", "RGB") and has_key:
        im = im.convert(mode[0] + "A" if mode == "L" else "RGBA")  # tRNS colour key -> real alpha
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(im)
        grey = np.clip(grey, 0, 65535).astype(np.uint16) if grey.dtype.kind == "i" else grey.astype(np.uint16)
        alpha = None
        key = im.info.get("transparency")
        if isinstance(key, int):
            alpha = np.where(grey == key, 0, 65535).astype(np.uint16)[..., None]
        return np.ascontiguousarray(grey[..., None]), alpha
    elif mode in ("F", "I;32F") or mode.startswith("F"):
        raise ImageError(name, "floating-point images are not supported; convert to 8 or 16 bits first")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(name, f"Pillow mode {mode} is not supported")

    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    if im.mode in ("LA", "RGBA"):
        return np.ascontiguousarray(arr[..., :-1]), np.ascontiguousarray(arr[..., -1:])
    return np.ascontiguousarray(arr), None
