"""`esr upscale` end to end on real files: fidelity, naming, scale plans, batches with failures."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import WEIGHTS, need
from PIL import Image

from esrcli.cli import main
from esrcli.imagefile import read_image
from esrcli.upscale import ScaleError, plan_scale

RNG = np.random.default_rng(7)


@pytest.fixture
def model() -> str:
    return str(need(WEIGHTS / "span_tiny_ch26_x4_ntire24_team39.pth", "released weights"))


def esr(*args: str):
    return CliRunner().invoke(main, ["upscale", *args], catch_exceptions=False)


def rgb(width: int = 24, height: int = 16) -> np.ndarray:
    """A smooth picture with structure (a model behaves on it as on a photo)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) * 127 // max(1, width + height - 2)], -1).astype(
        np.uint8
    )


@functools.cache
def srgb_profile() -> bytes:
    """Made once: a new profile carries its creation time, so two would differ."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_plan_scale_prefers_native_then_larger_then_passes():
    assert plan_scale([4, 2], 2).describe() == "x2 model"
    p = plan_scale([4], 2)
    assert (p.model_scale, p.passes, p.resample) == (4, 1, True)
    p = plan_scale([4, 2], 1.5)
    assert (p.model_scale, p.passes) == (2, 1)
    p = plan_scale([4], 8)
    assert (p.model_scale, p.passes, p.resample) == (4, 2, True)
    p = plan_scale([4], 16)
    assert (p.model_scale, p.passes, p.resample) == (4, 2, False)
    for bad in (1.0, 0.5, float("nan"), 100):
        with pytest.raises(ScaleError):
            plan_scale([4], bad)


def test_default_output_is_beside_the_input(tmp_path, model):
    src = tmp_path / "photo.png"
    Image.fromarray(rgb()).save(src)
    result = esr(str(src), "-m", model)
    assert result.exit_code == 0, result.output
    out = tmp_path / "photo_x4.png"
    assert Image.open(out).size == (96, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "photo_x4.png"]  # no temporary files


def test_exif_rotated_jpeg_with_icc_keeps_orientation_profile_and_tags(tmp_path, model):
    src = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "esr-test-camera"
    Image.fromarray(rgb(24, 16)).save(src, quality=95, exif=exif.tobytes(), icc_profile=srgb_profile())
    assert esr(str(src), "-m", model, "-o", str(tmp_path / "out.jpg")).exit_code == 0
    with Image.open(tmp_path / "out.jpg") as out:
        assert out.size == (64, 96)  # displayed orientation, upscaled
        assert out.getexif().get(0x0112, 1) == 1
        assert out.getexif().get(0x010F) == "esr-test-camera"
        assert out.info.get("icc_profile") == srgb_profile()


def test_rgba_png_keeps_transparency(tmp_path, model):
    pixels = np.dstack([rgb(), np.zeros((16, 24), np.uint8)])
    pixels[:, 12:, 3] = 255  # left half transparent, right half opaque
    src = tmp_path / "logo.png"
    Image.fromarray(pixels, "RGBA").save(src)
    for mode in ("model", "bicubic"):
        out = tmp_path / f"logo_{mode}.png"
        assert esr(str(src), "-m", model, "-o", str(out), "--alpha", mode).exit_code == 0
        with Image.open(out) as im:
            assert im.mode == "RGBA" and im.size == (96, 64)
            alpha = np.asarray(im)[..., 3]
        assert alpha[:, :40].max() <= 8 and alpha[:, 56:].min() >= 247


def test_rgba_to_jpeg_is_refused_clearly(tmp_path, model):
    src = tmp_path / "logo.png"
    Image.fromarray(np.dstack([rgb(), np.full((16, 24), 128, np.uint8)]), "RGBA").save(src)
    result = esr(str(src), "-m", model, "--format", "jpg")
    assert result.exit_code == 1 and "transparency" in result.output
    assert not list(tmp_path.glob("logo_x4*"))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_in_gives_sixteen_bit_out(tmp_path, model, suffix):
    deep = (rgb().astype(np.uint16) * 257 + RNG.integers(0, 200, (16, 24, 3))).astype(np.uint16)
    src = tmp_path / f"scan{suffix}"
    if suffix == ".png":
        from esrcli.imagefile import Picture, write_image

        write_image(Picture(deep, None, None, None, "PNG"), src)
    else:
        import tifffile

        tifffile.imwrite(src, deep, photometric="rgb")
    assert read_image(src).pixels.dtype == np.uint16
    assert esr(str(src), "-m", model).exit_code == 0
    out = read_image(tmp_path / f"scan_x4{suffix}")
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (64, 96, 3)
    assert len(np.unique(out.pixels % 257)) > 50  # real 16-bit values, not 8-bit ones scaled up


def test_grey_palette_and_cmyk(tmp_path, model):
    Image.fromarray(rgb()[..., 0], "L").save(tmp_path / "grey.png")
    pal = Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pal.png", transparency=0)
    Image.fromarray(rgb()).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    result = esr(str(tmp_path), "-m", model, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "grey_x4.png") as im:
        assert im.mode == "L" and im.size == (96, 64)
    with Image.open(tmp_path / "out" / "pal_x4.png") as im:
        assert im.mode == "RGBA"
    with Image.open(tmp_path / "out" / "print_x4.jpg") as im:
        assert im.mode == "RGB" and im.size == (96, 64)


def test_a_bad_file_fails_alone_and_the_batch_goes_on(tmp_path, model):
    for name in ("a.png", "c.png"):
        Image.fromarray(rgb()).save(tmp_path / name)
    good = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(good, "JPEG")
    (tmp_path / "b.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])  # truncated
    (tmp_path / "notes.png").write_text("not an image")
    result = esr(str(tmp_path), "-m", model, "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert {Path(o["output"]).name for o in summary["outputs"]} == {"a_x4.png", "c_x4.png"}
    failed = {Path(f["input"]).name: f["error"] for f in summary["failures"]}
    assert set(failed) == {"b.jpg", "notes.png"}
    assert all(name in message and "\n" not in message for name, message in failed.items())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x4.png", "c_x4.png"]


def test_scale_plans_give_exact_sizes(tmp_path, model):
    src = tmp_path / "p.png"
    Image.fromarray(rgb(20, 12)).save(src)
    for scale, size in (("2", (40, 24)), ("1.5", (30, 18)), ("8", (160, 96)), ("3", (60, 36))):
        result = esr(str(src), "-m", model, "-s", scale, "-v")
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / f"p_x{scale}.png") as im:
            assert im.size == size
    assert "x4 model + x4 model" in esr(str(src), "-m", model, "-s", "8", "-v", "--overwrite").output


@pytest.mark.parametrize("scale", ["0.5", "1", "abc", "-2"])
def test_bad_scale_is_an_error(tmp_path, model, scale):
    src = tmp_path / "p.png"
    Image.fromarray(rgb()).save(src)
    result = esr(str(src), "-m", model, "-s", scale)
    assert result.exit_code != 0 and ("scale" in result.output.lower())
    assert not list(tmp_path.glob("p_x*"))


def test_skip_existing_then_overwrite_and_never_the_input(tmp_path, model):
    src = tmp_path / "p.png"
    Image.fromarray(rgb()).save(src)
    assert esr(str(src), "-m", model).exit_code == 0
    out = tmp_path / "p_x4.png"
    stamp = out.stat().st_mtime_ns
    skipped = json.loads(esr(str(src), "-m", model, "--json").stdout)
    assert len(skipped["skipped"]) == 1 and out.stat().st_mtime_ns == stamp
    assert esr(str(src), "-m", model, "--overwrite").exit_code == 0 and out.stat().st_mtime_ns != stamp
    before = src.read_bytes()
    clobber = esr(str(src), "-m", model, "--suffix", "", "--overwrite")
    assert clobber.exit_code == 1 and "overwrite an input" in clobber.output
    assert src.read_bytes() == before


def test_recursive_mirrors_the_tree_and_globs_work(tmp_path, model):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(rgb()).save(tmp_path / "in" / "top.png")
    Image.fromarray(rgb()).save(tmp_path / "in" / "sub" / "deep.png")
    assert esr(str(tmp_path / "in"), "-r", "-m", model, "-o", str(tmp_path / "out")).exit_code == 0
    assert (tmp_path / "out" / "top_x4.png").is_file() and (tmp_path / "out" / "sub" / "deep_x4.png").is_file()
    assert esr(str(tmp_path / "in" / "*.png"), "-m", model, "-o", str(tmp_path / "glob"), "--format", "webp").exit_code == 0
    assert [p.name for p in (tmp_path / "glob").iterdir()] == ["top_x4.webp"]


def test_unwritable_output_and_missing_input(tmp_path, model):
    src = tmp_path / "p.png"
    Image.fromarray(rgb()).save(src)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = esr(str(src), str(tmp_path / "missing.png"), "-m", model, "-o", str(blocker / "out"))
    assert result.exit_code == 1
    assert "missing.png" in result.output and "cannot write" in result.output


def test_decompression_bomb_needs_allow_large(tmp_path, model, monkeypatch):
    import esrcli.imagefile

    monkeypatch.setattr(esrcli.imagefile, "DEFAULT_MAX_PIXELS", 100)
    src = tmp_path / "big.png"
    Image.fromarray(rgb()).save(src)
    refused = esr(str(src), "-m", model)
    assert refused.exit_code == 1 and "--allow-large" in refused.output
    assert esr(str(src), "-m", model, "--allow-large").exit_code == 0


def test_animated_images_are_refused(tmp_path, model):
    frames = [Image.fromarray(rgb()), Image.fromarray(255 - rgb())]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = esr(str(tmp_path / "anim.gif"), "-m", model)
    assert result.exit_code == 1 and "animated" in result.output
