"""Reading and writing still images without losing alpha, orientation, colour profiles or 16-bit depth.

Pillow is the workhorse, but it silently cuts 16-bit colour PNGs and TIFFs (and 10 or 12-bit AVIF
and HEIC) to 8 bits; those are decoded with the bundled ffmpeg (PNG, AVIF, and TIFF codecs tifffile
lacks), tifffile (TIFF) or pillow-heif (HEIC), and deep output is written by a small PNG encoder
here, tifffile, ffmpeg (AVIF) or pillow-heif (HEIC).

This package's own module holds the reading entry points and the pixel limit that guards them
(`DEFAULT_MAX_PIXELS`, looked up at call time so tests and embedders can lower it here); the rest
lives in one module per concern, re-exported here:

- `picture`: the `Picture` type and `to_8bit`;
- `decode`: an open Pillow image to a `Picture` (modes, animation refusal, `picture_from_pil`);
- `metadata`: EXIF orientation and bytes, ICC profiles, JPEG tables;
- `deep`: 16-bit PNG and TIFF, decoded with ffmpeg or tifffile and encoded without Pillow;
- `plugins`: the optional Pillow plugins (HEIC, JPEG XL), loaded when a file needs one;
- `modern`: AVIF, HEIC and JPEG XL past 8 bits and with metadata (`isobmff`: the AVIF boxes it
  reads and adds to);
- `write`: atomic writing in each format, with metadata;
- `animation`: animated GIF, WebP and APNG as full composited frames with their durations, and
  written back (one shared GIF palette); `read_image` itself still refuses them.
"""

from __future__ import annotations

import os
import re
import threading
import warnings

import numpy as np
from PIL import Image

from ..errors import ImageError
from .decode import _check_single_frame, _decode, _open, picture_from_pil, pil_arrays
from .deep import _write_png16 as _write_png16  # tests write 16-bit PNGs block by block with it
from .metadata import jpeg_tables
from .picture import Picture, _os_reason, to_8bit
from .write import check_storable, write_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "Picture",
    "check_storable",
    "jpeg_tables",
    "picture_from_pil",
    "pil_arrays",
    "read_image",
    "read_rgb8",
    "to_8bit",
    "write_image",
]


DEFAULT_MAX_PIXELS = 100_000_000

# Pillow's bomb guard is a module global; reads that change it take this lock so that two reads in
# different threads never see (or restore) each other's setting.
_PIL_GUARD_LOCK = threading.Lock()


def read_image(path: str | os.PathLike[str], *, allow_large: bool = False) -> Picture:
    """Decode an image the way viewers show it, keeping alpha, ICC, EXIF and 16-bit depth."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise ImageError(name, "is a directory, not an image file")
    try:
        if os.path.getsize(name) == 0:
            raise ImageError(name, "empty file, not an image")
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot read")) from e

    with _PIL_GUARD_LOCK:
        saved_limit = Image.MAX_IMAGE_PIXELS
        try:
            with warnings.catch_warnings():
                # Our own check below gives the friendly message; Pillow's would fire first at open().
                Image.MAX_IMAGE_PIXELS = None
                im = _open(name)
                try:
                    _check_size(name, im.size, allow_large)
                    _check_single_frame(name, im)
                    # Pillow also checks sizes while decoding (GIF frames, TIFF tiles): keep it armed
                    # at our limit, warnings included, unless the user allowed large inputs.
                    if not allow_large:
                        Image.MAX_IMAGE_PIXELS = _max_pixels()
                        warnings.simplefilter("error", Image.DecompressionBombWarning)
                    return _decode(name, im)
                finally:
                    im.close()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            m = re.search(r"\((\d+) pixels\)", str(e))
            pixels = int(m.group(1)) if m else _max_pixels() + 1
            raise ImageError(name, _bomb_message(pixels)) from e
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def read_rgb8(path: str | os.PathLike[str], *, allow_large: bool = False) -> np.ndarray:
    """An image as displayed, as HxWx3 uint8 RGB (alpha dropped, grey repeated, 16 bits rounded):
    the one layout metrics, benchmarks and training data use."""
    picture = read_image(path, allow_large=allow_large)
    pixels = picture.pixels if picture.bit_depth == 8 else to_8bit(picture).pixels
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels if pixels.flags.writeable else pixels.copy()  # Pillow's arrays are read-only


def _max_pixels() -> int:
    # Looked up at call time so that tests (and embedders) can lower the module constant.
    return int(DEFAULT_MAX_PIXELS)


def _bomb_message(pixels: int) -> str:
    return (
        f"{pixels / 1e6:.1f} megapixels exceeds the {_max_pixels() / 1e6:g} MP safety limit "
        "(decompression bomb?); pass --allow-large to process it"
    )


def _check_size(name: str, size: tuple[int, int], allow_large: bool) -> None:
    pixels = size[0] * size[1]
    if not allow_large and pixels > _max_pixels():
        raise ImageError(name, _bomb_message(pixels))
