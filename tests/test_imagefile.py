"""Round trips through real files: alpha, EXIF orientation, ICC profiles and 16-bit depth must survive."""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from esrcli import imagefile
from esrcli.imagefile import ImageError, Picture, read_image, write_image
from esrcli.paths import FORMATS, format_for_suffix

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def icc_stub(space: bytes) -> bytes:
    """A minimal well-formed ICC header (no tags) for colour spaces ImageCms cannot create."""
    body = bytearray(132)
    struct.pack_into(">I", body, 0, len(body))
    body[12:16] = b"mntr"
    body[16:20] = space
    body[20:24] = b"XYZ "
    body[36:40] = b"acsp"
    return bytes(body)


def srgb_profile() -> bytes:
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return icc_stub(b"RGB ")
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


SRGB = srgb_profile()
assert SRGB[16:20] == b"RGB "


def make_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[271] = "EsrTestCam"  # Make
    exif.get_ifd(0x8769)[36867] = "2024:01:02 03:04:05"  # DateTimeOriginal, in the Exif sub-IFD
    return exif


def gradient(h: int, w: int, c: int = 3) -> np.ndarray:
    """Smooth but asymmetric, so any wrong flip or rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    chans = [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + 2 * y) * 255 // max(w + 2 * h - 3, 1))]
    return np.stack(chans[:c], axis=2).astype(np.uint8)


def ramp16(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Values that need all 16 bits: the extremes, a ramp, and 257*k+1 (not representable in 8 bits)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 65536, size=(h, w, c), dtype=np.uint16)
    flat = a.reshape(-1)
    odd = (np.arange(256, dtype=np.uint16) * 257 + 1)[: flat.size - 2]
    flat[: odd.size] = odd
    flat[-2:] = (0, 65535)
    a[0, :, 0] = np.linspace(0, 65535, w).astype(np.uint16)
    return a


def ffmpeg_encode(raw: np.ndarray, pix_fmt_in: str, out: Path, *extra: str) -> None:
    h, w = raw.shape[:2]
    cmd = [
        FFMPEG,
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt_in,
        "-s",
        f"{w}x{h}",
        "-i",
        "-",
        "-frames:v",
        "1",
        *extra,
        str(out),
    ]
    subprocess.run(cmd, input=raw.astype("<u2").tobytes(), check=True)


def ffmpeg_decode(path: Path, pix_fmt: str, shape: tuple[int, ...], *, rotate: bool = False) -> np.ndarray:
    """The stored pixels as ffmpeg sees them (it applies EXIF orientation itself unless told not to)."""
    turn = [] if rotate else ["-noautorotate"]
    cmd = [FFMPEG, "-v", "error", *turn, "-i", str(path), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    out = subprocess.run(cmd, capture_output=True, check=True)
    return np.frombuffer(out.stdout, dtype="<u2").reshape(shape)


def stacked(p: Picture) -> np.ndarray:
    return p.pixels if p.alpha is None else np.concatenate([p.pixels, p.alpha], axis=2)


# ----------------------------------------------------------------------------- 1. EXIF orientation, ICC


@pytest.mark.parametrize(
    "orientation, turn", [(6, lambda a: np.rot90(a, -1)), (3, lambda a: np.rot90(a, 2)), (8, lambda a: np.rot90(a, 1))]
)
def test_rotated_jpeg_keeps_icc_and_exif(tmp_path: Path, orientation: int, turn) -> None:
    src = tmp_path / "photo.jpg"
    Image.fromarray(gradient(24, 40)).save(src, quality=95, exif=make_exif(orientation), icc_profile=SRGB)
    with Image.open(src) as im:
        stored = np.asarray(im.convert("RGB"))
        viewer = np.asarray(ImageOps.exif_transpose(im))

    pic = read_image(src)
    assert pic.format == "JPEG" and pic.bit_depth == 8 and pic.alpha is None
    np.testing.assert_array_equal(pic.pixels, turn(stored))
    np.testing.assert_array_equal(pic.pixels, viewer)
    assert pic.size == (viewer.shape[1], viewer.shape[0])
    assert pic.icc_profile == SRGB
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1
    assert exif[271] == "EsrTestCam"
    assert exif.get_ifd(0x8769)[36867] == "2024:01:02 03:04:05"

    for suffix in (".jpg", ".png", ".webp", ".tif"):
        out = write_image(pic, tmp_path / f"out{suffix}")
        assert out == tmp_path / f"out{suffix}"
        with Image.open(out) as im:
            assert im.size == pic.size
            assert im.info.get("icc_profile") == SRGB, suffix
            written = im.getexif()
            assert written.get(0x0112) == 1, suffix
            assert written[271] == "EsrTestCam", suffix
        again = read_image(out)  # orientation 1 now: no second rotation
        diff = np.abs(again.pixels.astype(int) - pic.pixels.astype(int))
        assert diff.max() <= (0 if suffix in (".png", ".tif") else 12), suffix


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    src = tmp_path / "o.png"
    rgba = np.concatenate([gradient(5, 7), gradient(5, 7, 1)[..., :1] // 2 + 1], axis=2)
    Image.fromarray(rgba).save(src, exif=make_exif(orientation))
    with Image.open(src) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    pic = read_image(src)
    np.testing.assert_array_equal(stacked(pic), expected)
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[271] == "EsrTestCam"


# ----------------------------------------------------------------------------- 2. alpha


def test_rgba_png_round_trip_and_jpeg_refusal(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, size=(9, 13, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    pic = read_image(tmp_path / "a.png")
    assert pic.pixels.shape == (9, 13, 3) and pic.alpha is not None and pic.alpha.shape == (9, 13, 1)
    np.testing.assert_array_equal(stacked(pic), rgba)

    write_image(pic, tmp_path / "b.png")
    np.testing.assert_array_equal(stacked(read_image(tmp_path / "b.png")), rgba)
    write_image(pic, tmp_path / "b.tif")
    np.testing.assert_array_equal(stacked(read_image(tmp_path / "b.tif")), rgba)
    write_image(pic, tmp_path / "b.webp", quality=100)
    np.testing.assert_array_equal(read_image(tmp_path / "b.webp").alpha, rgba[..., 3:])  # WebP alpha is lossless

    with pytest.raises(ImageError, match="transparency, which JPEG cannot store") as err:
        write_image(pic, tmp_path / "x.jpg")
    assert "x.jpg" in str(err.value)
    assert not (tmp_path / "x.jpg").exists()
    with pytest.raises(ImageError, match="transparency"):
        write_image(pic, tmp_path / "y.png", format="jpg")


# ----------------------------------------------------------------------------- 3. 16-bit PNG


@pytest.mark.parametrize("channels, alpha, src_fmt", [(3, False, "rgb48"), (3, True, "rgba64"), (1, False, "gray16"), (1, True, "ya16")])
def test_16bit_png_exact(tmp_path: Path, channels: int, alpha: bool, src_fmt: str) -> None:
    total = channels + alpha
    raw = ramp16(20, 31, total, seed=total)
    src = tmp_path / "deep.png"
    ffmpeg_encode(raw, src_fmt + "le", src, "-pix_fmt", src_fmt + "be")
    np.testing.assert_array_equal(ffmpeg_decode(src, src_fmt + "le", raw.shape), raw)  # the fixture itself

    pic = read_image(src)
    assert pic.bit_depth == 16 and pic.pixels.dtype == np.uint16
    assert pic.pixels.shape == (20, 31, channels) and (pic.alpha is not None) == alpha
    np.testing.assert_array_equal(stacked(pic), raw)

    pic.icc_profile = SRGB if channels == 3 else icc_stub(b"GRAY")
    out = write_image(pic, tmp_path / "again.png")
    np.testing.assert_array_equal(ffmpeg_decode(out, src_fmt + "le", raw.shape), raw)  # other programs agree
    with Image.open(out) as im:
        assert im.info["icc_profile"] == pic.icc_profile
        im.verify()  # chunk CRCs
    back = read_image(out)
    np.testing.assert_array_equal(stacked(back), raw)
    assert back.icc_profile == pic.icc_profile


def test_16bit_png_streamed_in_blocks_and_oriented(tmp_path: Path) -> None:
    raw = ramp16(11, 6, 3, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[270] = "deep and turned"
    pic = Picture(pixels=raw, exif=exif.tobytes(), format="PNG")
    out = tmp_path / "blocks.png"
    with open(out, "wb") as f:
        imagefile._write_png16(pic, f, rows_per_block=4)  # 3 blocks, the last one short
    with open(out, "rb") as f:
        chunks = f.read().count(b"IDAT")
    assert chunks >= 1
    np.testing.assert_array_equal(ffmpeg_decode(out, "rgb48le", raw.shape), raw)
    # ffmpeg honours our eXIf chunk when it is allowed to rotate: the chunk is well formed.
    np.testing.assert_array_equal(ffmpeg_decode(out, "rgb48le", (6, 11, 3), rotate=True), np.rot90(raw, -1))

    back = read_image(out)
    np.testing.assert_array_equal(back.pixels, np.rot90(raw, -1))  # eXIf read, ffmpeg did not rotate too
    e = Image.Exif()
    e.load(back.exif)
    assert e[0x0112] == 1 and e[270] == "deep and turned"


def test_16bit_to_8bit_formats_round_correctly(tmp_path: Path) -> None:
    values = np.array([0, 128, 129, 257 * 100 + 128, 257 * 100 + 129, 65535], dtype=np.uint16)
    pixels = np.repeat(np.repeat(values[None, :, None], 8, axis=0), 8, axis=1)  # flat 8x8 blocks for JPEG
    pic = Picture(pixels=np.repeat(pixels, 3, axis=2))
    write_image(pic, tmp_path / "cut.jpg", quality=100)
    got = read_image(tmp_path / "cut.jpg").pixels[4, ::8, 0].astype(int)
    expected = (values.astype(int) + 128) // 257
    assert list(expected) == [0, 0, 1, 100, 101, 255]
    assert np.abs(got - expected).max() <= 1


# ----------------------------------------------------------------------------- 4. 16-bit TIFF


def test_16bit_tiff_exact_with_icc(tmp_path: Path) -> None:
    raw = ramp16(14, 19, 3, seed=7)
    src = tmp_path / "deep.tif"
    tifffile.imwrite(src, raw, photometric="rgb", extratags=[(34675, 7, len(SRGB), SRGB, True)])
    pic = read_image(src)
    assert pic.format == "TIFF" and pic.bit_depth == 16
    np.testing.assert_array_equal(pic.pixels, raw)
    assert pic.icc_profile == SRGB

    out = write_image(pic, tmp_path / "again.tiff")
    np.testing.assert_array_equal(tifffile.imread(out), raw)
    np.testing.assert_array_equal(ffmpeg_decode(out, "rgb48le", raw.shape), raw)  # a second, unrelated TIFF reader
    with Image.open(out) as im:
        assert im.info["icc_profile"] == SRGB
    back = read_image(out)
    np.testing.assert_array_equal(back.pixels, raw)
    assert back.icc_profile == SRGB


def test_16bit_tiff_alpha_and_lzw(tmp_path: Path) -> None:
    rgba = ramp16(8, 9, 4, seed=3)
    tifffile.imwrite(tmp_path / "a.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    pic = read_image(tmp_path / "a.tif")
    np.testing.assert_array_equal(stacked(pic), rgba)
    write_image(pic, tmp_path / "b.tif")
    np.testing.assert_array_equal(stacked(read_image(tmp_path / "b.tif")), rgba)

    # LZW is what most editors write; tifffile needs imagecodecs for it, so this takes the ffmpeg path.
    rgb = ramp16(8, 9, 3, seed=4)
    ffmpeg_encode(rgb, "rgb48le", tmp_path / "lzw.tif", "-compression_algo", "lzw", "-pix_fmt", "rgb48le")
    with tifffile.TiffFile(tmp_path / "lzw.tif") as tf:
        assert tf.pages[0].compression == 5
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif").pixels, rgb)


@pytest.mark.parametrize("deep", [False, True])
def test_rotated_tiff_turned_once(tmp_path: Path, deep: bool) -> None:
    """Pillow turns TIFFs itself while loading; the tifffile path must turn them too, and only once."""
    raw = ramp16(6, 9, 3) if deep else gradient(6, 9)
    tags = [(274, "H", 1, 6, True), (271, "s", 0, "EsrTestCam", True)]
    tifffile.imwrite(tmp_path / "turned.tif", raw, photometric="rgb", extratags=tags)
    pic = read_image(tmp_path / "turned.tif")
    assert pic.bit_depth == (16 if deep else 8)
    np.testing.assert_array_equal(pic.pixels, np.rot90(raw, -1))
    exif = Image.Exif()
    exif.load(pic.exif)
    assert exif[0x0112] == 1 and exif[271] == "EsrTestCam"
    assert 273 not in exif and 258 not in exif  # no strip offsets or bit depths posing as EXIF


# ----------------------------------------------------------------------------- 5. grey, palette, LA


def test_grey_palette_and_la(tmp_path: Path) -> None:
    grey = gradient(6, 10, 1)[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    pic = read_image(tmp_path / "g.png")
    assert pic.pixels.shape == (6, 10, 1) and pic.alpha is None
    np.testing.assert_array_equal(pic.pixels[..., 0], grey)
    write_image(pic, tmp_path / "g2.png")
    with Image.open(tmp_path / "g2.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grey)
    write_image(pic, tmp_path / "g2.jpg")
    with Image.open(tmp_path / "g2.jpg") as im:
        assert im.mode == "L"

    pal = Image.new("P", (4, 3))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    idx = np.array([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]], dtype=np.uint8)
    pal.putdata(idx.reshape(-1).tolist())
    pal.save(tmp_path / "p.png", transparency=bytes([255, 128, 0]))
    pic = read_image(tmp_path / "p.png")
    assert pic.pixels.shape == (3, 4, 3) and pic.alpha is not None
    np.testing.assert_array_equal(pic.alpha[..., 0], np.array([255, 128, 0], dtype=np.uint8)[idx])
    np.testing.assert_array_equal(pic.pixels[..., 1], np.where(idx == 1, 255, 0))

    pal.save(tmp_path / "opaque.png")
    pic = read_image(tmp_path / "opaque.png")
    assert pic.alpha is None and pic.pixels.shape == (3, 4, 3)

    la = np.stack([grey, 255 - grey], axis=2)
    Image.fromarray(la).save(tmp_path / "la.png")
    pic = read_image(tmp_path / "la.png")
    assert pic.pixels.shape == (6, 10, 1) and pic.alpha is not None
    np.testing.assert_array_equal(stacked(pic), la)
    write_image(pic, tmp_path / "la2.png")
    with Image.open(tmp_path / "la2.png") as im:
        assert im.mode == "LA"
        np.testing.assert_array_equal(np.asarray(im), la)


def test_16bit_grey_png_via_pillow_and_rgb_profile_dropped(tmp_path: Path) -> None:
    grey = ramp16(5, 6, 1)
    Image.fromarray(grey[..., 0]).save(tmp_path / "g16.png", icc_profile=SRGB)  # an RGB profile on grey pixels
    pic = read_image(tmp_path / "g16.png")
    assert pic.bit_depth == 16
    np.testing.assert_array_equal(pic.pixels, grey)
    assert pic.icc_profile is None


# ----------------------------------------------------------------------------- 6. CMYK


def test_cmyk_jpeg_becomes_rgb_without_cmyk_profile(tmp_path: Path) -> None:
    cmyk = np.zeros((16, 32, 4), dtype=np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # red
    cmyk[:, 16:] = (200, 40, 0, 60)
    im = Image.frombytes("CMYK", (32, 16), cmyk.tobytes())
    expected = np.asarray(im.convert("RGB")).astype(int)
    im.save(tmp_path / "cmyk.jpg", quality=100, icc_profile=icc_stub(b"CMYK"))
    with Image.open(tmp_path / "cmyk.jpg") as check:
        assert check.mode == "CMYK" and check.info["icc_profile"][16:20] == b"CMYK"

    pic = read_image(tmp_path / "cmyk.jpg")
    assert pic.pixels.shape == (16, 32, 3)
    assert np.abs(pic.pixels.astype(int) - expected).max() <= 4
    assert pic.icc_profile is None


# ----------------------------------------------------------------------------- 7. broken inputs


def test_broken_files_give_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    data = good.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "folder.png").mkdir()
    png = tmp_path / "crc.png"
    Image.fromarray(gradient(8, 8)).save(png)
    broken = bytearray(png.read_bytes())
    broken[-20] ^= 0xFF  # inside the last IDAT: zlib or CRC error
    png.write_bytes(bytes(broken))

    cases = {
        "half.jpg": "truncated",
        "noise.png": "not an image",
        "empty.png": "empty",
        "notes.txt": "not an image",
        "folder.png": "directory",
        "missing.webp": "no such file",
        "crc.png": "cannot read image",
    }
    for name, words in cases.items():
        with pytest.raises(ImageError) as err:
            read_image(tmp_path / name)
        message = str(err.value)
        assert name in message and words in message, message
        assert "\n" not in message


# ----------------------------------------------------------------------------- 8. animation


def test_animated_gif_refused_single_frame_read(tmp_path: Path) -> None:
    frames = [Image.fromarray(gradient(6, 8)), Image.fromarray(255 - gradient(6, 8))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with pytest.raises(ImageError, match=r"anim\.gif: animated image \(2 frames\)"):
        read_image(tmp_path / "anim.gif")

    frames[0].save(tmp_path / "apng.png", save_all=True, append_images=frames[1:], duration=100)
    with pytest.raises(ImageError, match="animated"):
        read_image(tmp_path / "apng.png")

    frames[0].convert("P").save(tmp_path / "still.gif")
    pic = read_image(tmp_path / "still.gif")
    assert pic.format == "GIF" and pic.pixels.shape == (6, 8, 3)


# ----------------------------------------------------------------------------- 9. bomb guard


def test_pixel_limit_and_allow_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(gradient(30, 40)).save(tmp_path / "big.png")
    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(imagefile, "DEFAULT_MAX_PIXELS", 1000)
    with pytest.raises(ImageError) as err:
        read_image(tmp_path / "big.png")
    message = str(err.value)
    assert message.startswith(str(tmp_path / "big.png") + ": 0.0 megapixels exceeds the 0.001 MP safety limit")
    assert "--allow-large" in message
    assert Image.MAX_IMAGE_PIXELS == before

    pic = read_image(tmp_path / "big.png", allow_large=True)
    assert pic.size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == before

    # Pillow's own guard, set lower than ours, is lifted for an allowed read and restored after.
    monkeypatch.setattr(imagefile, "DEFAULT_MAX_PIXELS", 100_000_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert read_image(tmp_path / "big.png").size == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 100


# ----------------------------------------------------------------------------- 10. atomic writes


def test_atomic_write(tmp_path: Path) -> None:
    pic = Picture(pixels=gradient(8, 8))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    with pytest.raises(ImageError, match=r"cannot write \(No such file or directory\)") as err:
        write_image(pic, tmp_path / "nowhere" / "x.png")
    assert "nowhere" in str(err.value) and not (tmp_path / "nowhere").exists()

    (out_dir / "taken.png").mkdir()
    with pytest.raises(ImageError, match="taken.png: cannot write"):
        write_image(pic, out_dir / "taken.png")
    with pytest.raises(ImageError, match="unknown image suffix"):
        write_image(pic, out_dir / "x.bmp")
    too_wide = Picture(pixels=np.zeros((1, 20000, 3), np.uint8))
    with pytest.raises(ImageError, match="big.webp: cannot write"):
        write_image(too_wide, out_dir / "big.webp")  # WebP caps at 16383 px: the encoder fails mid-write
    assert sorted(p.name for p in out_dir.iterdir()) == ["taken.png"]

    target = out_dir / "pic.png"
    write_image(pic, target)
    assert sorted(p.name for p in out_dir.iterdir()) == ["pic.png", "taken.png"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    first = target.read_bytes()
    write_image(Picture(pixels=255 - gradient(8, 8)), target)
    assert target.read_bytes() != first
    np.testing.assert_array_equal(read_image(target).pixels, 255 - gradient(8, 8))

    # A failed overwrite leaves the old file intact.
    with pytest.raises(ImageError):
        write_image(too_wide, out_dir / "pic.png", format="webp")
    np.testing.assert_array_equal(read_image(target).pixels, 255 - gradient(8, 8))
    assert sorted(p.name for p in out_dir.iterdir()) == ["pic.png", "taken.png"]

    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        try:
            with pytest.raises(ImageError, match="Permission denied"):
                write_image(pic, locked / "x.png")
            assert list(locked.iterdir()) == []
        finally:
            locked.chmod(0o755)


# ----------------------------------------------------------------------------- 11. suffixes


def test_format_for_suffix() -> None:
    assert format_for_suffix(".png") == "png"
    assert format_for_suffix(".PNG") == "png"
    assert format_for_suffix(".jpeg") == "jpg"
    assert format_for_suffix(".jpg") == "jpg"
    assert format_for_suffix(".tif") == "tiff"
    assert format_for_suffix(".tiff") == "tiff"
    assert format_for_suffix("webp") == "webp"
    assert format_for_suffix(".bmp") is None
    assert format_for_suffix("") is None
    assert all(format_for_suffix(ext) == name for name, ext in FORMATS.items())


def test_picture_rejects_inconsistent_arrays() -> None:
    with pytest.raises(ValueError):
        Picture(pixels=np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError):
        Picture(pixels=np.zeros((4, 4, 3), np.uint8), alpha=np.zeros((4, 4, 1), np.uint16))
    assert Picture(pixels=np.zeros((2, 5, 1), np.uint16)).bit_depth == 16


def test_own_png_encoder_writes_valid_chunks(tmp_path: Path) -> None:
    pic = Picture(pixels=ramp16(3, 4, 1), icc_profile=icc_stub(b"GRAY"))
    out = write_image(pic, tmp_path / "chunks.png")
    data = out.read_bytes()
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"iCCP" in kinds
    assert data[24:26] == bytes([16, 0])  # bit depth 16, colour type 0
