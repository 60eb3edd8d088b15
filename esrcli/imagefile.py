"""Reading and writing still images without losing alpha, orientation, colour profiles or 16-bit depth.

Pillow is the workhorse, but it silently cuts 16-bit colour PNGs and TIFFs to 8 bits; those are
decoded with the bundled ffmpeg (PNG, and TIFF codecs tifffile lacks) or tifffile (TIFF), and
16-bit output is written by a small PNG encoder here or by tifffile.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write
from .errors import ImageError as ImageError
from .paths import FORMATS, format_for_suffix, writable_suffixes

DEFAULT_MAX_PIXELS = 100_000_000

_ORIENTATION = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's bomb guard is a module global; reads that change it take this lock so that two reads in
# different threads never see (or restore) each other's setting.
_PIL_GUARD_LOCK = threading.Lock()

# IFD0 tags of a TIFF that describe the picture (as opposed to its storage layout), kept as EXIF.
_TIFF_DESCRIPTIVE_TAGS = (269, 270, 271, 272, 274, 282, 283, 296, 305, 306, 315, 33432)
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


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


# --------------------------------------------------------------------------------------------- reading


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


def _os_reason(e: OSError, verb: str) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file" if verb == "cannot read" else f"{verb} (No such file or directory)"
    return f"{verb} ({e.strerror or e})"


def _open(name: str) -> Image.Image:
    try:
        return Image.open(name, formats=_readable_formats())
    except UnidentifiedImageError as e:
        raise ImageError(name, "not an image file Pillow can read") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot read")) from e
    except Exception as e:  # noqa: BLE001 - plugins raise anything on garbage headers
        raise ImageError(name, f"cannot read image ({e})") from e


def _readable_formats() -> list[str]:
    # EPS is opened by running Ghostscript on the file: not something to do with untrusted input.
    Image.init()
    return [f for f in Image.OPEN if f != "EPS"]


def _check_size(name: str, size: tuple[int, int], allow_large: bool) -> None:
    pixels = size[0] * size[1]
    if not allow_large and pixels > _max_pixels():
        raise ImageError(name, _bomb_message(pixels))


def _check_single_frame(name: str, im: Image.Image) -> None:
    # MPO is how Pillow opens many phone JPEGs (a second frame holds a preview or gain map): the
    # first frame is the photo, so it is not an animation.
    if im.format == "MPO":
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
        deep = _decode_16bit(name, im)
        if deep is not None:
            arrays = deep
        else:
            arrays = pil_arrays(name, im)
            if im.format == "TIFF" and _ORIENTATION not in getattr(im, "tag_v2", {}):
                orientation = 1  # already applied by Pillow
    except (ImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise
    except OSError as e:
        raise ImageError(name, f"cannot read image ({_pil_reason(e)})") from e
    except Exception as e:  # noqa: BLE001 - decoders raise ValueError, SyntaxError, struct.error, ...
        raise ImageError(name, f"cannot read image ({e or type(e).__name__})") from e

    pixels, alpha = arrays
    pixels = _orient(pixels, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    icc = _fitting_icc(im, pixels.shape[2])
    return Picture(pixels=pixels, alpha=alpha, icc_profile=icc, exif=exif, format=fmt, jpeg_tables=jpeg_tables(im))


def jpeg_tables(im: Image.Image) -> dict[int, list[int]] | None:
    tables = getattr(im, "quantization", None) if im.format in ("JPEG", "MPO") else None
    return {int(k): list(v) for k, v in tables.items()} if tables else None


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


def _fitting_icc(im: Image.Image, channels: int) -> bytes | None:
    """The image's ICC profile if it describes pixels like ours (an RGB profile on grey pixels is dropped)."""
    icc = im.info.get("icc_profile") or None
    return icc if icc is not None and _icc_space(icc) == (b"RGB " if channels == 3 else b"GRAY") else None


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


def _png_header(name: str) -> tuple[int, int, int, int] | None:
    """Width, height, bit depth and colour type straight from IHDR, which Pillow does not expose."""
    with open(name, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, colour


def _decode_16bit(name: str, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Full-depth pixels for the 16-bit colour images Pillow would cut to 8 bits, else None."""
    if im.format == "PNG":
        header = _png_header(name)
        if header is None or header[2] != 16 or header[3] not in (2, 4, 6):
            return None
        colour = header[3]
        with_alpha = colour in (4, 6) or "transparency" in im.info
        channels = (1 if colour == 4 else 3) + int(with_alpha)
        pix_fmt = {1: "gray16le", 2: "ya16le", 3: "rgb48le", 4: "rgba64le"}[channels]
        data = _ffmpeg_decode(name, im.size, pix_fmt, channels)
        return _split_alpha(data, with_alpha)
    if im.format == "TIFF":
        tags = getattr(im, "tag_v2", {})
        bits = tags.get(258)
        bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
        samples = int(tags.get(277, 1) or 1)
        if 16 not in bits or samples < 2:
            return None
        return _tiff16_read(name, im)
    return None


def _split_alpha(data: np.ndarray, with_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if not with_alpha:
        return np.ascontiguousarray(data), None
    return np.ascontiguousarray(data[..., :-1]), np.ascontiguousarray(data[..., -1:])


def _ffmpeg_decode(name: str, size: tuple[int, int], pix_fmt: str, channels: int) -> np.ndarray:
    import imageio_ffmpeg

    width, height = size
    # "file:" keeps names with a colon from being taken as a protocol; orientation is applied by us.
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-v",
        "error",
        "-nostdin",
        "-noautorotate",
        "-i",
        "file:" + os.path.abspath(name),
        "-frames:v",
        "1",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    expected = width * height * channels * 2
    if proc.returncode != 0 or len(proc.stdout) != expected:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"decoder returned {len(proc.stdout)} of {expected} bytes"
        raise ImageError(name, f"cannot read image (ffmpeg: {reason})")
    return np.frombuffer(proc.stdout, dtype="<u2").reshape(height, width, channels).astype(np.uint16)


def _tiff16_read(name: str, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    import tifffile

    with tifffile.TiffFile(name) as tf:
        page = tf.pages[0]
        photometric = int(page.photometric)
        extras = tuple(int(x) for x in (page.extrasamples or ()))
        data: np.ndarray | None = None
        axes, fallback_reason = page.axes, ""
        try:
            data = page.asarray()
        except Exception as e:  # noqa: BLE001 - e.g. LZW needs the optional imagecodecs package
            fallback_reason = str(e)
    colour = 3 if photometric == 2 else 1
    if photometric not in (0, 1, 2):
        raise ImageError(name, f"16-bit TIFF with photometric interpretation {photometric} is not supported")
    alpha_kind = extras[0] if extras else 0
    with_alpha = alpha_kind in (1, 2)

    if data is None:
        # tifffile lacks the codec: ffmpeg's TIFF decoder knows LZW, PackBits, Deflate, ...
        channels = colour + int(with_alpha)
        pix_fmt = {1: "gray16le", 2: "ya16le", 3: "rgb48le", 4: "rgba64le"}[channels]
        try:
            data = _ffmpeg_decode(name, im.size, pix_fmt, channels)
        except ImageError as e:
            raise ImageError(name, f"cannot read image (tifffile: {fallback_reason}; {e.problem})") from e
        pixels, alpha = _split_alpha(data, with_alpha)
        return pixels, alpha  # ffmpeg already un-premultiplies and inverts as needed

    if data.dtype != np.uint16:
        raise ImageError(name, f"TIFF samples of type {data.dtype} are not supported (only 8 and 16-bit unsigned)")
    if "S" in axes:
        data = np.moveaxis(data, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    else:
        data, axes = data[..., None], axes + "S"
    while data.ndim > 3 and data.shape[0] == 1:
        data, axes = data[0], axes[1:]
    if data.ndim != 3:
        raise ImageError(name, f"TIFF layout {axes} is not a plain picture")
    pixels = data[..., :colour]
    if photometric == 0:  # min-is-white
        pixels = 65535 - pixels
    alpha = data[..., colour : colour + 1] if with_alpha else None
    if alpha is not None and alpha_kind == 1:
        pixels = _unpremultiply(pixels, alpha)
    return np.ascontiguousarray(pixels, dtype=np.uint16), None if alpha is None else np.ascontiguousarray(alpha)


def _unpremultiply(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Associated (premultiplied) alpha would darken every edge once composited again."""
    a = alpha.astype(np.float64)
    out = np.where(a > 0, pixels.astype(np.float64) * 65535.0 / np.maximum(a, 1.0), 0.0)
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


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


# --------------------------------------------------------------------------------------------- writing


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
    """Refuse what a format cannot hold (transparency in JPEG) before any work is spent on it."""
    if fmt == "jpg" and picture.alpha is not None:
        raise ImageError(name, "has transparency, which JPEG cannot store; use --format png or webp")


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
    if picture.bit_depth == 16:
        if fmt == "png":
            _write_png16(picture, f)
            return
        picture = to_8bit(picture)  # JPEG and WebP hold 8 bits only
    _write_pillow(picture, f, fmt, quality)


def to_8bit(picture: Picture) -> Picture:
    def cut(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)

    alpha = None if picture.alpha is None else cut(picture.alpha)
    return Picture(cut(picture.pixels), alpha, picture.icc_profile, picture.exif, picture.format)


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


def _png_chunk(f: BinaryIO, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


# zlib level for 16-bit output: on noisy 16-bit photos level 6 takes 3-4x as long as level 3 for
# files only 2-3% smaller (12 MP RGB: 13 s against 4 s on one core).
_DEEP_ZLIB_LEVEL = 3


def _write_png16(picture: Picture, f: BinaryIO, *, level: int = _DEEP_ZLIB_LEVEL, rows_per_block: int | None = None) -> None:
    """16-bit PNG, streamed: Pillow cannot write 16-bit colour PNGs."""
    pixels, alpha = picture.pixels, picture.alpha
    height, width, channels = pixels.shape
    colour_type = {(1, False): 0, (3, False): 2, (1, True): 4, (3, True): 6}[(channels, alpha is not None)]
    samples = channels + (alpha is not None)
    f.write(_PNG_SIGNATURE)
    _png_chunk(f, b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    if picture.icc_profile:
        _png_chunk(f, b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(picture.icc_profile))
    if picture.exif:
        exif = picture.exif
        _png_chunk(f, b"eXIf", exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif)

    row_bytes = width * samples * 2
    if rows_per_block is None:
        rows_per_block = max(1, (8 << 20) // max(row_bytes, 1))  # about 8 MiB of rows at a time
    compressor = zlib.compressobj(level)
    previous = np.zeros(row_bytes, dtype=np.uint8)
    pending = bytearray()
    for top in range(0, height, rows_per_block):
        block = pixels[top : top + rows_per_block]
        if alpha is not None:
            block = np.concatenate([block, alpha[top : top + rows_per_block]], axis=2)
        raw = np.ascontiguousarray(block, dtype=">u2").view(np.uint8).reshape(block.shape[0], row_bytes)
        above = np.vstack([previous[None], raw[:-1]])
        filtered = np.empty((raw.shape[0], row_bytes + 1), dtype=np.uint8)
        filtered[:, 0] = 2  # "Up": each byte minus the byte above it, modulo 256
        np.subtract(raw, above, out=filtered[:, 1:])
        previous = raw[-1].copy()
        pending += compressor.compress(filtered.tobytes())
        if len(pending) >= 1 << 20:
            _png_chunk(f, b"IDAT", bytes(pending))
            pending.clear()
    pending += compressor.flush()
    _png_chunk(f, b"IDAT", bytes(pending))
    _png_chunk(f, b"IEND", b"")


def _write_tiff16(picture: Picture, path: str) -> None:
    import tifffile

    pixels, alpha = picture.pixels, picture.alpha
    data = pixels if alpha is None else np.concatenate([pixels, alpha], axis=2)
    if data.shape[2] == 1:
        data = data[..., 0]
    extratags = []
    if picture.icc_profile:
        extratags.append((34675, 7, len(picture.icc_profile), picture.icc_profile, True))  # InterColorProfile
    # EXIF is not written to 16-bit TIFFs: in TIFF it lives in the image's own IFD next to the
    # layout tags tifffile manages, and merging the two safely is more than this path needs.
    tifffile.imwrite(
        path,
        data,
        photometric="rgb" if pixels.shape[2] == 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if alpha is not None else None,
        compression="zlib",
        compressionargs={"level": _DEEP_ZLIB_LEVEL},
        predictor=True,  # horizontal differencing: smooth 16-bit pictures shrink many times over
        metadata=None,
        software=False,
        extratags=extratags,
    )
