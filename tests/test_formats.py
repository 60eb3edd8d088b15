"""AVIF, HEIC/HEIF and JPEG XL through `esr upscale` on real files: orientation, ICC, EXIF, 10 and
12-bit depth, --format and --quality, broken files, and the one line a missing extra gives.

The files are made here: with Pillow (AVIF), pillow-heif and pillow-jxl-plugin (skipped with a reason
where an extra is not installed) and the bundled ffmpeg (10-bit AVIF, which Pillow cannot write).
"""

from __future__ import annotations

import functools
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, ImageCms

from esrcli.imagefile import ImageError, Picture, read_image, write_image
from esrcli.imagefile.isobmff import avif_depth
from esrcli.paths import FORMATS, format_for_suffix, is_image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
MAKE = 0x010F
ORIENTATION = 0x0112


def esr(*args: str):
    """esr upscale with the embedded x4 model on the CPU, in this process."""
    return run_cli("upscale", *args, "--device", "cpu")


@functools.cache
def srgb() -> bytes:
    """Made once: a new profile carries its creation time, so two would differ."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[ORIENTATION] = orientation
    e[MAKE] = "esr-test-camera"
    return e.tobytes()


def rgb(width: int = 24, height: int = 16) -> np.ndarray:
    """Smooth and asymmetric, so a wrong rotation shows."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + 2 * y) * 255 // (width + 2 * height - 3)], -1).astype(np.uint8)


def rgb16(width: int = 24, height: int = 16) -> np.ndarray:
    """A ramp with values 8 bits cannot hold."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 65535 // (width - 1), y * 65535 // (height - 1), (x * 7 + y * 13) * 300 % 65536], -1).astype(np.uint16)


def ffmpeg_stream(path: Path) -> str:
    """ffmpeg's line for the file's first video stream (codec, pixel format)."""
    err = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in err.splitlines() if "Video:" in line)


def ffmpeg_rgb48(path: Path) -> np.ndarray:
    out = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb48le", "-"], capture_output=True, check=True
    )
    return np.frombuffer(out.stdout, dtype="<u2")


def ffmpeg_avif(pixels: np.ndarray, out: Path, bits: int = 10) -> None:
    """A 10 or 12-bit AVIF, which Pillow cannot write: ffmpeg's libaom, as a camera or avifenc would make it."""
    h, w = pixels.shape[:2]
    cmd = [FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb48le", "-s", f"{w}x{h}", "-i", "-"]
    cmd += ["-vf", f"scale=out_color_matrix=bt709:out_range=pc,format=yuv444p{bits}le,setparams=range=pc:colorspace=bt709"]
    cmd += ["-frames:v", "1", "-c:v", "libaom-av1", "-still-picture", "1", "-crf", "4", "-b:v", "0", "-f", "avif", str(out)]
    subprocess.run(cmd, input=pixels.astype("<u2").tobytes(), check=True)


def deeper_than_8_bits(values: np.ndarray) -> bool:
    """16-bit samples that are not 8-bit ones scaled up (k * 257) for the most part."""
    return float(np.mean(values.astype(np.int64) % 257 != 0)) > 0.5


def assert_upright_with_metadata(path: Path, *, icc: bytes | None = None) -> None:
    """A 24x16 picture shown rotated (EXIF 6), upscaled x4: upright, tag reset or gone, tags and profile kept."""
    with Image.open(path) as im:
        assert im.size == (64, 96), path
        written = im.getexif()
        assert written.get(ORIENTATION, 1) == 1, path
        assert written.get(MAKE) == "esr-test-camera", path
        if icc is not None:
            assert im.info.get("icc_profile") == icc, path


# ----------------------------------------------------------------------------- suffixes


def test_suffixes_are_read_from_folders_and_written() -> None:
    assert FORMATS["avif"] == ".avif" and FORMATS["heic"] == ".heic" and FORMATS["jxl"] == ".jxl"
    for suffix, name in ((".avif", "avif"), (".AVIF", "avif"), (".heic", "heic"), (".heif", "heic"), (".HIF", "heic"), (".jxl", "jxl")):
        assert format_for_suffix(suffix) == name
        assert is_image(Path("photo" + suffix))


# ----------------------------------------------------------------------------- AVIF


def test_rotated_avif_comes_out_upright_with_exif_and_icc(tmp_path: Path) -> None:
    """As esr does for a JPEG: the orientation applied (Pillow stores EXIF 6 as AVIF's irot/imir), tags
    and profile kept; the same picture stored upright gives the same output."""
    Image.fromarray(rgb()).save(tmp_path / "phone.avif", quality=95, exif=exif(6), icc_profile=srgb())
    with Image.open(tmp_path / "phone.avif") as im:
        assert im.getexif()[ORIENTATION] == 6  # the file really is stored sideways
        Image.fromarray(np.rot90(np.asarray(im), -1)).save(tmp_path / "upright.png")
    result = esr(str(tmp_path), "-o", str(tmp_path / "out"), "--format", "avif")
    assert result.exit_code == 0, result.output
    assert_upright_with_metadata(tmp_path / "out" / "phone_x4.avif", icc=srgb())
    turned = np.asarray(Image.open(tmp_path / "out" / "phone_x4.avif"), dtype=np.float64)
    upright = np.asarray(Image.open(tmp_path / "out" / "upright_x4.avif"), dtype=np.float64)
    assert np.abs(turned - upright).mean() < 2.0


def test_10bit_avif_stays_above_8_bits(tmp_path: Path) -> None:
    src = tmp_path / "deep.avif"
    ffmpeg_avif(rgb16(), src)
    assert "p10le" in ffmpeg_stream(src) and avif_depth(src) == 10
    picture = read_image(src)
    assert picture.bit_depth == 16 and picture.source_bits == 10 and deeper_than_8_bits(picture.pixels)
    # Pillow's own decode is 8 bits: esr's 16 agree with it
    eight = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64)
    assert np.abs(picture.pixels / 257.0 - eight).mean() < 1.0

    result = esr(str(src), "-o", str(tmp_path / "out"), "--format", "avif")
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "deep_x4.avif"
    assert "p10le" in ffmpeg_stream(out) and avif_depth(out) == 10  # written back at the source depth
    assert deeper_than_8_bits(ffmpeg_rgb48(out))
    back = read_image(out)
    assert back.size == (96, 64) and back.bit_depth == 16 and back.source_bits == 10

    result = esr(str(src), "-o", str(tmp_path / "png"), "--format", "png")  # and a 16-bit PNG from it
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "png" / "deep_x4.png").bit_depth == 16


def test_16bit_png_with_icc_and_exif_becomes_a_10bit_avif_that_keeps_them(tmp_path: Path) -> None:
    """ffmpeg writes the deep AVIF and its muxer drops profile and EXIF: esr adds them to the file."""
    src = tmp_path / "scan.png"
    write_image(Picture(pixels=rgb16(), icc_profile=srgb(), exif=exif(6)), src)  # a 16-bit PNG, stored sideways
    with Image.open(src) as im:
        assert im.getexif()[ORIENTATION] == 6
    result = esr(str(src), "-o", str(tmp_path / "out.avif"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out.avif"
    assert "p10le" in ffmpeg_stream(out)
    assert_upright_with_metadata(out, icc=srgb())
    back = read_image(out)
    assert back.bit_depth == 16 and back.source_bits == 10 and back.size == (64, 96)


def test_12bit_avif_and_deep_alpha(tmp_path: Path) -> None:
    src = tmp_path / "twelve.avif"
    ffmpeg_avif(rgb16(), src, bits=12)
    picture = read_image(src)
    assert picture.source_bits == 12 and deeper_than_8_bits(picture.pixels)
    write_image(picture, tmp_path / "again.avif")
    assert "p12le" in ffmpeg_stream(tmp_path / "again.avif")  # 12 bits stay 12

    alpha = (rgb16()[..., :1] // 2 + 1000).astype(np.uint16)
    write_image(Picture(pixels=rgb16(), alpha=alpha), tmp_path / "alpha.avif")
    with Image.open(tmp_path / "alpha.avif") as im:
        assert im.mode == "RGBA"
    back = read_image(tmp_path / "alpha.avif")
    assert back.alpha is not None and back.alpha.dtype == np.uint16 and deeper_than_8_bits(back.alpha)
    assert np.abs(back.alpha.astype(int) - alpha).max() < 1024  # lossy, but the same picture


def test_format_avif_from_png_and_quality_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:48, 0:64]
    noisy = np.clip(np.stack([x * 4, y * 5, x + y], -1) + rng.normal(0, 12, (48, 64, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "p.png")
    sizes = []
    for quality in ("30", "60", "90"):
        result = esr(str(tmp_path / "p.png"), "-o", str(tmp_path / f"q{quality}.avif"), "--quality", quality)
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / f"q{quality}.avif") as im:
            assert im.format == "AVIF" and im.size == (256, 192)
        sizes.append((tmp_path / f"q{quality}.avif").stat().st_size)
    assert sizes[0] < sizes[1] < sizes[2], sizes
    result = esr(str(tmp_path / "p.png"), "--format", "avif")
    assert result.exit_code == 0 and (tmp_path / "p_x4.avif").is_file(), result.output
    # the same --quality scale at 10 bits (ffmpeg's quantizer is libavif's)
    deep = Picture(pixels=(noisy.astype(np.uint16) * 257 + 77))
    deep_sizes = []
    for quality in (30, 60, 90):
        write_image(deep, tmp_path / f"d{quality}.avif", quality=quality)
        deep_sizes.append((tmp_path / f"d{quality}.avif").stat().st_size)
    assert deep_sizes[0] < deep_sizes[1] < deep_sizes[2], deep_sizes


def test_broken_avif_is_one_line_and_the_batch_goes_on(tmp_path: Path) -> None:
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    Image.fromarray(rgb()).save(tmp_path / "good.avif")
    data = (tmp_path / "good.avif").read_bytes()
    (tmp_path / "cut.avif").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.avif").write_bytes(np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes())
    result = esr(str(tmp_path), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert {Path(o["output"]).name for o in summary["outputs"]} == {"a_x4.png", "good_x4.avif"}
    failed = {Path(f["input"]).name: f["error"] for f in summary["failures"]}
    assert set(failed) == {"cut.avif", "noise.avif"}
    assert all(name in message and "\n" not in message for name, message in failed.items()), failed
    assert "damaged or truncated AVIF" in failed["cut.avif"]


# ----------------------------------------------------------------------------- HEIC


def test_heic_round_trip_upright_with_exif_and_icc(tmp_path: Path) -> None:
    heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install 'esrcli[heif]'")
    # pillow-heif stores EXIF 6 as irot/imir, which libheif applies when decoding
    heif.from_bytes(mode="RGB", size=(24, 16), data=rgb().tobytes()).save(
        tmp_path / "phone.heic", quality=95, exif=exif(6), icc_profile=srgb()
    )
    result = esr(str(tmp_path / "phone.heic"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "phone_x4.heic"
    assert_upright_with_metadata(out, icc=srgb())
    assert read_image(out).format == "HEIF"


def test_10_and_12bit_heic_stay_deep(tmp_path: Path) -> None:
    heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install 'esrcli[heif]'")
    for bits in (10, 12):
        src = tmp_path / f"deep{bits}.heic"
        heif.from_bytes(mode="RGB;16", size=(24, 16), data=rgb16().tobytes()).save(
            src, quality=95, chroma="444", bit_depth=bits, icc_profile=srgb()
        )
        picture = read_image(src)
        assert picture.bit_depth == 16 and picture.source_bits == bits and deeper_than_8_bits(picture.pixels)
        ramps = np.abs(picture.pixels[..., :2].astype(int) - rgb16()[..., :2])  # the smooth channels
        assert ramps.mean() < 600 and picture.pixels.max() > 65000  # scaled to the full 16-bit range
        result = esr(str(src), "-o", str(tmp_path / "out"))
        assert result.exit_code == 0, result.output
        written = heif.open_heif(tmp_path / "out" / f"deep{bits}_x4.heic", convert_hdr_to_8bit=False)
        assert written.info["bit_depth"] == bits and written.info["icc_profile"] == srgb()
        samples = np.asarray(written) >> (16 - bits)
        assert np.mean(samples % (1 << (bits - 8)) != 0) > 0.5  # values 8 bits cannot hold


def test_heic_quality_sizes(tmp_path: Path) -> None:
    pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install 'esrcli[heif]'")
    rng = np.random.default_rng(5)
    picture = Picture(pixels=np.clip(rgb(96, 64) + rng.normal(0, 10, (64, 96, 3)), 0, 255).astype(np.uint8))
    sizes = [write_image(picture, tmp_path / f"q{q}.heic", quality=q).stat().st_size for q in (30, 60, 90)]
    assert sizes[0] < sizes[1] < sizes[2], sizes


# ----------------------------------------------------------------------------- JPEG XL


def test_jxl_round_trip_from_a_rotated_jpeg(tmp_path: Path) -> None:
    """A phone JPEG kept whole in a JPEG XL (as cjxl does) comes back as that JPEG: turned upright by
    its EXIF, tags kept; JPEG XL output is tagged sRGB (the plugin writes no other profile)."""
    pytest.importorskip("pillow_jxl", reason="JPEG XL needs the jxl extra: pip install 'esrcli[jxl]'")
    Image.fromarray(rgb()).save(tmp_path / "phone.jpg", quality=95, exif=exif(6), icc_profile=srgb())
    with Image.open(tmp_path / "phone.jpg") as im:
        im.save(tmp_path / "phone.jxl", format="JXL", lossless_jpeg=True)
    result = esr(str(tmp_path / "phone.jxl"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "phone_x4.jxl"
    assert_upright_with_metadata(out)
    with Image.open(out) as im:
        assert "srgb" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))).lower()


def test_jxl_converts_other_profiles_to_srgb_and_keeps_16bit_grey(tmp_path: Path) -> None:
    pytest.importorskip("pillow_jxl", reason="JPEG XL needs the jxl extra: pip install 'esrcli[jxl]'")
    # a profile with other primaries than sRGB's: JPEG XL output holds the colours it means, in sRGB
    wide = wide_gamut_profile()
    picture = Picture(pixels=np.full((8, 8, 3), (200, 60, 30), np.uint8), icc_profile=wide)
    back = read_image(write_image(picture, tmp_path / "wide.jxl", quality=100))
    expected = ImageCms.profileToProfile(
        Image.fromarray(picture.pixels), ImageCms.ImageCmsProfile(io.BytesIO(wide)), ImageCms.createProfile("sRGB")
    )
    assert np.abs(back.pixels.astype(int) - np.asarray(expected, dtype=int)).max() <= 3
    assert np.abs(back.pixels.astype(int) - picture.pixels).max() > 10  # converted, not merely retagged

    grey = Picture(pixels=rgb16()[..., :1].copy())
    back = read_image(write_image(grey, tmp_path / "grey.jxl", quality=95))
    assert back.bit_depth == 16 and deeper_than_8_bits(back.pixels)

    rng = np.random.default_rng(6)
    noisy = Picture(pixels=np.clip(rgb(96, 64) + rng.normal(0, 10, (64, 96, 3)), 0, 255).astype(np.uint8))
    sizes = [write_image(noisy, tmp_path / f"q{q}.jxl", quality=q).stat().st_size for q in (30, 60, 90)]
    assert sizes[0] < sizes[1] < sizes[2], sizes


def wide_gamut_profile() -> bytes:
    """sRGB's profile with its red and green primaries moved out and its name changed."""
    import struct

    icc = bytearray(srgb())
    for i in range(struct.unpack_from(">I", icc, 128)[0]):
        sig, offset, _ = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        if sig in (b"rXYZ", b"gXYZ"):
            struct.pack_into(">i", icc, offset + 8, struct.unpack_from(">i", icc, offset + 8)[0] + 8000)
    return bytes(icc).replace("sRGB".encode("utf-16-be"), "wide".encode("utf-16-be"))


def test_broken_heic_and_jxl_are_one_line(tmp_path: Path) -> None:
    heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install 'esrcli[heif]'")
    pytest.importorskip("pillow_jxl", reason="JPEG XL needs the jxl extra: pip install 'esrcli[jxl]'")
    buffer = io.BytesIO()
    heif.from_bytes(mode="RGB", size=(24, 16), data=rgb().tobytes()).save(buffer, quality=90)
    (tmp_path / "cut.heic").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    buffer = io.BytesIO()
    Image.fromarray(rgb()).save(buffer, format="JXL", quality=90)
    (tmp_path / "cut.jxl").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in ("cut.heic", "cut.jxl"):
        with pytest.raises(ImageError) as err:
            read_image(tmp_path / name)
        message = str(err.value)
        assert name in message and "cannot read image" in message and "\n" not in message, message
        assert "Please build" not in message


# ----------------------------------------------------------------------------- a missing extra


BLOCKED = """
import sys
sys.modules["pillow_heif"] = None  # as if the heif extra were not installed
sys.modules["pillow_jxl"] = None
from esrcli.cli import main
main({argv!r})
"""


@pytest.mark.parametrize("fmt, extra", [("heic", "heif"), ("jxl", "jxl")])
def test_missing_extra_is_one_line_naming_it(tmp_path: Path, fmt: str, extra: str) -> None:
    Image.fromarray(rgb()).save(tmp_path / "p.png")
    argv = ["upscale", str(tmp_path / "p.png"), "--format", fmt, "--device", "cpu"]
    proc = subprocess.run([sys.executable, "-c", BLOCKED.format(argv=argv)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pip install 'esrcli[{extra}]'" in lines[0], proc.stderr
    assert not list(tmp_path.glob("p_x4*"))

    # a file of that kind met in a folder: its own one line, and the rest of the batch goes on
    sample = tmp_path / f"in.{fmt}"
    sample.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64) if fmt == "heic" else b"\xff\x0a" + bytes(64))
    argv = ["upscale", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "cpu", "--json"]
    proc = subprocess.run([sys.executable, "-c", BLOCKED.format(argv=argv)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert [Path(o["output"]).name for o in summary["outputs"]] == ["p_x4.png"]
    (failure,) = summary["failures"]
    assert re.search(rf"in\.{fmt}: .* needs the optional package .*: pip install 'esrcli\[{extra}\]'$", failure["error"]), failure
