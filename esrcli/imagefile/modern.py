"""AVIF, HEIC/HEIF and JPEG XL: reading past 8 bits, and writing with depth and metadata kept.

- AVIF: Pillow (libavif) reads and writes 8 bits only. A 10 or 12-bit AVIF (its av1C property says)
  is decoded at full depth by the bundled ffmpeg (dav1d), Pillow still giving EXIF, orientation and
  the ICC profile; ffmpeg's pixels are checked against Pillow's, and Pillow's 8 bits are used if
  they disagree (an AVIF layout ffmpeg reads differently, such as a cropped or gridded image). A
  16-bit picture is encoded by ffmpeg (libaom, 10 bits, or 12 where the source had 12), and the
  ICC profile and EXIF its muxer drops are added to the file by esrcli.imagefile.isobmff.
- HEIC/HEIF (pillow-heif, `esrcli[heif]`): 8, 10 and 12 bits read and written, metadata included.
- JPEG XL (pillow-jxl-plugin, `esrcli[jxl]`): 8-bit colour and 16-bit grey, with EXIF. The plugin
  reads deeper colour as 8 bits and cannot write an ICC profile, so a colour picture with a profile
  other than sRGB is converted to sRGB before it is written (its colours look the same).

A 16-bit picture with no known source depth (a 16-bit PNG or TIFF) is written at 10 bits: what
every AVIF and HEIC decoder reads, where 12 bits needs a professional profile.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..errors import ImageError
from .deep import _ffmpeg_decode, _unpremultiply
from .isobmff import BoxError, add_avif_metadata, avif_depth
from .picture import Picture, to_8bit

MODERN_FORMATS = ("avif", "heic", "jxl")

# The quality at and above which colour keeps full chroma resolution (4:4:4), as JPEG's does.
FULL_CHROMA_QUALITY = 90

# How far (mean, in 8-bit levels) ffmpeg's deep decode of an AVIF may stray from Pillow's 8-bit one:
# rounding and 4:2:0 chroma upsampling differ by about one level on noisy pictures; a different
# crop, rotation, range or grid layout by many more.
_AGREEMENT_LEVELS = 3.0


def deep_bits(picture: Picture) -> int:
    """The depth a 16-bit picture is written at in AVIF or HEIC: its source's 12 bits, else 10."""
    return 12 if picture.source_bits == 12 else 10


def avif_crf(quality: int) -> int:
    """--quality (1-100) as an AV1 quantizer (0-63), by the mapping libavif (and so Pillow) uses."""
    return ((100 - quality) * 63 + 50) // 100


# --- reading ------------------------------------------------------------------------------------


def decode_deep(name: str, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """Full-depth pixels, alpha and source bits of a 10 or 12-bit AVIF or HEIF, else None."""
    if im.format == "AVIF":
        bits = avif_depth(name)
        if bits is None or bits <= 8:
            return None
        arrays = _avif_deep(name, im)
        return None if arrays is None else (*arrays, bits)
    if im.format == "HEIF":
        bits = int(im.info.get("bit_depth") or 8)
        if bits <= 8:
            return None
        return (*_heif_deep(name, im, bits), bits)
    return None


def _avif_deep(name: str, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None] | None:
    grey = im.mode in ("L", "LA")
    channels = 1 if grey else 3
    flags = ["-sws_flags", "accurate_rnd+full_chroma_int+bitexact"]
    try:
        colour = _ffmpeg_decode(name, im.size, "gray16le" if grey else "rgb48le", channels, ["-map", "0:v:0", *flags])
    except ImageError:
        return None  # Pillow's 8 bits it is
    eight = np.asarray(im.convert("L" if grey else "RGB"))
    if not _agrees(colour, eight.reshape(colour.shape)):
        return None
    alpha = None
    if im.mode in ("LA", "RGBA"):
        alpha8 = np.asarray(im.getchannel("A"))[..., None]
        try:
            alpha = _ffmpeg_decode(name, im.size, "gray16le", 1, ["-map", "0:v:1", *flags])
        except ImageError:
            alpha = None
        if alpha is None or not _agrees(alpha, alpha8):
            alpha = alpha8.astype(np.uint16) * 257  # the colour stays deep, the alpha is Pillow's
    return colour, alpha


def _agrees(deep: np.ndarray, eight: np.ndarray) -> bool:
    if deep.shape != eight.shape:
        return False
    diff = np.abs(deep.astype(np.float32) / 257.0 - eight.astype(np.float32))
    return float(diff.mean()) <= _AGREEMENT_LEVELS


def _heif_deep(name: str, im: Image.Image, bits: int) -> tuple[np.ndarray, np.ndarray | None]:
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(name, convert_hdr_to_8bit=False)
        image = heif[heif.primary_index]
        data = np.asarray(image)
        premultiplied = bool(getattr(image, "premultiplied_alpha", False))
    except Exception as e:  # noqa: BLE001 - libheif raises its own errors on damaged files
        raise ImageError(name, f"cannot read image ({e or type(e).__name__})") from e
    if data.ndim == 2:
        data = data[..., None]
    if data.dtype != np.uint16 or data.shape[:2] != (im.size[1], im.size[0]) or data.shape[2] not in (1, 2, 3, 4):
        raise ImageError(name, f"cannot read image (pillow-heif gave {data.dtype} {data.shape} for a {im.size[0]}x{im.size[1]} picture)")
    # pillow-heif shifts 10 and 12-bit samples to the top of 16 bits; scale them to the full range.
    peak = (1 << bits) - 1
    samples = (data.astype(np.uint32) >> (16 - bits)) * 65535
    data = ((samples + peak // 2) // peak).astype(np.uint16)
    colour = data.shape[2] - (data.shape[2] in (2, 4))
    pixels = np.ascontiguousarray(data[..., :colour])
    alpha = np.ascontiguousarray(data[..., colour:]) if data.shape[2] in (2, 4) else None
    if alpha is not None and premultiplied:
        pixels = _unpremultiply(pixels, alpha)
    return pixels, alpha


# --- writing ------------------------------------------------------------------------------------


def encode(picture: Picture, f: BinaryIO, fmt: str, quality: int) -> None:
    """Write `picture` as AVIF, HEIC or JPEG XL to an open file."""
    if fmt == "avif":
        if picture.bit_depth == 16:
            _write_avif_deep(picture, f, quality)
        else:
            _write_avif(picture, f, quality)
    elif fmt == "heic":
        _write_heic(picture, f, quality)
    elif fmt == "jxl":
        _write_jxl(picture, f, quality)
    else:
        raise ValueError(f"not a format of this module: {fmt}")


def _stack(picture: Picture) -> np.ndarray:
    p = picture.pixels
    return np.ascontiguousarray(p if picture.alpha is None else np.concatenate([p, picture.alpha], axis=2))


def _to_pil(picture: Picture) -> Image.Image:
    stack = _stack(picture)
    return Image.fromarray(stack[..., 0] if stack.shape[2] == 1 else stack)


def _write_avif(picture: Picture, f: BinaryIO, quality: int) -> None:
    options: dict[str, object] = {"quality": quality, "speed": 6}
    if picture.pixels.shape[2] == 3:
        options["subsampling"] = "4:4:4" if quality >= FULL_CHROMA_QUALITY else "4:2:0"
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    if picture.exif:
        options["exif"] = picture.exif  # Pillow turns its Orientation (1 here) into the irot/imir boxes
    _to_pil(picture).save(f, format="AVIF", **options)


def _write_avif_deep(picture: Picture, f: BinaryIO, quality: int) -> None:
    import imageio_ffmpeg

    bits = deep_bits(picture)
    pixels, alpha = picture.pixels, picture.alpha
    height, width, channels = pixels.shape
    grey = channels == 1
    if alpha is None:
        data, pix_in = pixels, "gray16le" if grey else "rgb48le"
    else:
        data, pix_in = np.concatenate([np.repeat(pixels, 3, axis=2) if grey else pixels, alpha], axis=2), "rgba64le"
    chroma = "444" if quality >= FULL_CHROMA_QUALITY else "420"
    colour_format = f"gray{bits}le" if grey else f"yuv{chroma}p{bits}le"
    # BT.601 full range with sRGB primaries and transfer, as libavif writes 8-bit RGB; an ICC
    # profile, where the picture has one, is added below and takes precedence in viewers.
    to_yuv = (
        f"scale=out_color_matrix=bt601:out_range=pc:flags=accurate_rnd+full_chroma_int,format={colour_format},"
        "setparams=range=pc:colorspace=smpte170m:color_primaries=bt709:color_trc=iec61966-2-1"
    )
    if alpha is None:
        graph = ["-vf", to_yuv]
    else:
        graph = [
            "-filter_complex",
            f"[0:v]split[c][a];[c]{to_yuv}[colour];[a]alphaextract,format=gray{bits}le,setparams=range=pc[alpha]",
            "-map",
            "[colour]",
            "-map",
            "[alpha]",
        ]
    with tempfile.TemporaryDirectory(prefix="esr-avif-") as folder:
        out = os.path.join(folder, "out.avif")
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-nostdin",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_in,
            "-s",
            f"{width}x{height}",
            "-i",
            "-",
            *graph,
            "-frames:v",
            "1",
            "-c:v",
            "libaom-av1",
            "-still-picture",
            "1",
            "-usage",
            "allintra",
            "-cpu-used",
            "6",
            "-row-mt",
            "1",
            "-crf",
            str(avif_crf(quality)),
            "-b:v",
            "0",
            "-f",
            "avif",
            out,
        ]
        proc = subprocess.run(cmd, input=np.ascontiguousarray(data, dtype="<u2").tobytes(), capture_output=True, check=False)
        if proc.returncode != 0 or not os.path.exists(out):
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ImageError("AVIF", f"cannot write {bits}-bit AVIF (ffmpeg: {lines[-1] if lines else f'exit code {proc.returncode}'})")
        with open(out, "rb") as g:
            encoded = g.read()
    try:
        encoded = add_avif_metadata(encoded, icc=picture.icc_profile, exif=picture.exif)
    except (BoxError, IndexError, ValueError) as e:
        raise ImageError("AVIF", f"cannot add the ICC profile and EXIF to ffmpeg's AVIF ({e})") from e
    f.write(encoded)


def _write_heic(picture: Picture, f: BinaryIO, quality: int) -> None:
    import pillow_heif

    stack = _stack(picture)
    height, width, samples = stack.shape
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples]
    options: dict[str, object] = {"quality": quality}
    if picture.pixels.shape[2] == 3:
        options["chroma"] = "444" if quality >= FULL_CHROMA_QUALITY else "420"
    if picture.bit_depth == 16:
        bits = deep_bits(picture)
        peak = (1 << bits) - 1
        # pillow-heif drops the low bits of 16-bit samples: hand it rounded ones, shifted up.
        rounded = (stack.astype(np.uint32) * peak + 32767) // 65535
        stack = (rounded << (16 - bits)).astype(np.uint16)
        mode += ";16"
        options["bit_depth"] = bits
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    if picture.exif:
        options["exif"] = picture.exif  # its Orientation is 1: no irot/imir is written
    heif = pillow_heif.from_bytes(mode=mode, size=(width, height), data=np.ascontiguousarray(stack).tobytes())
    heif.save(f, **options)


def _write_jxl(picture: Picture, f: BinaryIO, quality: int) -> None:
    grey16 = picture.bit_depth == 16 and picture.pixels.shape[2] == 1 and picture.alpha is None
    if picture.bit_depth == 16 and not grey16:
        picture = to_8bit(picture)  # the plugin writes 16 bits for grey only
    im = _to_pil(picture)
    if picture.icc_profile and picture.pixels.shape[2] == 3:
        im = _as_srgb(im, picture.icc_profile)
    # libjxl has no lossy "quality 100" (distance 0 is lossless, which the plugin asks for by name).
    options: dict[str, object] = {"quality": quality, "effort": 7} if quality < 100 else {"lossless": True, "effort": 7}
    if picture.exif:
        options["exif"] = picture.exif
    im.save(f, format="JXL", **options)


def _as_srgb(im: Image.Image, icc: bytes) -> Image.Image:
    """The picture's colours in sRGB, for writers that can only tag pictures as sRGB."""
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(source).lower():
            return im
        converted = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode=im.mode)
    except Exception:  # noqa: BLE001 - no littlecms, or a profile it cannot use: the pixels as they are
        return im
    return converted if converted is not None else im
