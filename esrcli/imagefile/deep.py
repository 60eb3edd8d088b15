"""16-bit images, which Pillow silently cuts to 8 bits: decoded and encoded without it.

16-bit colour PNGs and TIFFs are decoded with the bundled ffmpeg (PNG, and TIFF codecs tifffile
lacks) or tifffile (TIFF); 16-bit output is written by a small streaming PNG encoder here or by
tifffile.
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..errors import ImageError
from .metadata import _EXIF_HEADER
from .picture import Picture

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


def _ffmpeg_decode(name: str, size: tuple[int, int], pix_fmt: str, channels: int, options: Sequence[str] = ()) -> np.ndarray:
    """The first frame as raw `pix_fmt` samples; `options` go between the input and the output
    (which stream to map, how to convert)."""
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
        *options,
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
