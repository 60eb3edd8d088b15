"""`esr upscale` end to end on real files: fidelity, naming, scale plans, batches with failures."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import WEIGHTS, need, photos, run_cli
from PIL import Image

from esrcli.imagefile import read_image
from esrcli.scaling import ScaleError, plan_scale

esr = functools.partial(run_cli, "upscale")  # esr upscale ARGS, in this process

RNG = np.random.default_rng(7)


@pytest.fixture
def model() -> str:
    return str(need(WEIGHTS / "span_tiny_ch26_x4_ntire24_team39.pth", "released weights"))


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


def test_plan_scale_prefers_native_then_larger_then_the_cheapest_chain():
    assert plan_scale([4, 2], 2).describe() == "x2 model"
    p = plan_scale([4], 2)
    assert (p.passes, p.resample) == ((4,), True)
    assert plan_scale([4, 2], 1.5).passes == (2,)
    assert plan_scale([4, 2], 3).passes == (4,)  # x4 then down beats x2 then up (measured: +1.2 dB)
    # x8: one x4 pass and a Lanczos x2, not x16 then a reduction (nor x4 then x2: same PSNR, 12x the time)
    for native in ([4], [4, 2]):
        p = plan_scale(native, 8)
        assert (p.passes, p.reached, p.resample) == ((4,), 4, True)
        assert p.describe() == "x4 model, then Lanczos up-resample to x8"
    assert plan_scale([4], 16).passes == (4, 4) and not plan_scale([4], 16).resample
    assert plan_scale([4], 12).passes == (4, 4)  # an enlargement past x2 is left to the model
    assert plan_scale([2], 16).passes == (2, 2, 2)
    assert plan_scale([4], 8).cost[0] < plan_scale([4], 16).cost[0] / 10
    for bad in (0, 1.0, 0.5, -2, float("nan"), float("inf"), 100):
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
    assert "x4 model, then Lanczos up-resample to x8" in esr(str(src), "-m", model, "-s", "8", "-v", "--overwrite").output
    assert "x4 model + x4 model" in esr(str(src), "-m", model, "-s", "16", "-v").output


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


def test_animated_images_are_upscaled_frame_by_frame(tmp_path, model):
    # Refused until issue 24; now every frame is upscaled and it stays a GIF (tests/test_animated.py).
    frames = [Image.fromarray(rgb()), Image.fromarray(255 - rgb())]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = esr(str(tmp_path / "anim.gif"), "-m", model)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "anim.gif") as src, Image.open(tmp_path / "anim_x4.gif") as out:
        assert out.n_frames == 2 and out.size == (src.width * 4, src.height * 4)
        assert "loop" not in out.info  # the source said nothing: it still plays once


# --- issue 12: defects found by a new user and a bad-input matrix ------------------------------


def test_a_recursive_glob_mirrors_the_tree_below_its_fixed_prefix(tmp_path, model):
    for sub in ("a/b", "c"):
        (tmp_path / "raw" / sub).mkdir(parents=True)
        Image.fromarray(rgb()).save(tmp_path / "raw" / sub / "x.png")
    result = esr(str(tmp_path / "raw" / "**" / "*.png"), "-r", "-m", model, "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["outputs"]) == 2
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == ["a/b/x_x4.png", "c/x_x4.png"]


def test_inputs_that_would_share_an_output_are_refused_before_any_work(tmp_path, model):
    for sub in ("a", "c"):
        (tmp_path / "raw" / sub).mkdir(parents=True)
        Image.fromarray(rgb()).save(tmp_path / "raw" / sub / "x.png")
    Image.fromarray(rgb()).save(tmp_path / "raw" / "y.png")
    for args in ([str(tmp_path / "raw" / "*" / "x.png")], [str(tmp_path / "raw" / "a"), str(tmp_path / "raw" / "c")]):
        result = esr(*args, str(tmp_path / "raw" / "y.png"), "-m", model, "-o", str(tmp_path / "out"), "--overwrite")
        assert result.exit_code == 1
        assert "x_x4.png: would be written by" in result.output and "--recursive" in result.output
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # not even y.png: nothing started


def test_constant_alpha_stays_exactly_constant(tmp_path, model):
    for value in (255, 0, 77):
        src = tmp_path / f"flat{value}.png"
        Image.fromarray(np.dstack([rgb(40, 30), np.full((30, 40), value, np.uint8)]), "RGBA").save(src)
        for mode in ("model", "bicubic"):
            out = tmp_path / f"flat{value}_{mode}.png"
            assert esr(str(src), "-m", model, "-o", str(out), "--alpha", mode).exit_code == 0
            alpha = np.asarray(Image.open(out))[..., 3]
            assert alpha.shape == (120, 160) and (alpha == value).all()


def test_real_alpha_keeps_its_opaque_and_transparent_areas_exact(tmp_path, model):
    y, x = np.mgrid[0:40, 0:48]
    alpha = np.where((x - 24) ** 2 + (y - 20) ** 2 < 14**2, 255, 0).astype(np.uint8)
    alpha[:, 44:] = 128  # a translucent band
    src = tmp_path / "disc.png"
    Image.fromarray(np.dstack([rgb(48, 40), alpha]), "RGBA").save(src)
    for mode in ("model", "bicubic"):
        out = tmp_path / f"disc_{mode}.png"
        assert esr(str(src), "-m", model, "-o", str(out), "--alpha", mode).exit_code == 0
        up = np.asarray(Image.open(out))[..., 3].astype(int)
        centre = up[80 - 6 * 4 : 80 + 6 * 4, 96 - 6 * 4 : 96 + 6 * 4]  # well inside the disc
        assert (centre == 255).all()
        assert (up[:12, :12] == 0).all() and (up[-12:, :12] == 0).all()  # far outside it
        edge = up[80, 96 + 14 * 4 - 12 : 96 + 14 * 4 + 12]
        assert 0 < len(np.unique(edge)) and edge.min() < 64 and edge.max() > 192  # a real edge in between
    # --alpha bicubic is Pillow's bicubic, not Lanczos
    expected = np.asarray(Image.fromarray(alpha).resize((192, 160), Image.Resampling.BICUBIC)).astype(int)
    got = np.asarray(Image.open(tmp_path / "disc_bicubic.png"))[..., 3].astype(int)
    assert np.array_equal(got, expected)
    lanczos = np.asarray(Image.fromarray(alpha).resize((192, 160), Image.Resampling.LANCZOS)).astype(int)
    assert not np.array_equal(got, lanczos)


def test_scale_zero_is_refused_like_a_negative_one(tmp_path, model):
    src = tmp_path / "p.png"
    Image.fromarray(rgb()).save(src)
    result = esr(str(src), "-m", model, "-s", "0")
    assert result.exit_code == 1 and "scale must be a number greater than 1, not 0" in result.output
    assert not list(tmp_path.glob("p_x*"))


def esr_process(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "esrcli", "upscale", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kwargs,
    )


@contextmanager
def killed_at_exit(proc: subprocess.Popen):
    """Whatever the test does, the process group it started is gone afterwards."""
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)


def wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_batch_prints_what_it_did_and_leaves_no_partial(tmp_path, signum, code):
    photos(tmp_path / "in", 6, 160)
    out = tmp_path / "out"
    with killed_at_exit(esr_process(str(tmp_path / "in"), "-o", str(out), "--tile", "64")) as proc:
        wait_for(lambda: out.is_dir() and any(p.suffix == ".png" and not p.name.startswith(".") for p in out.iterdir()))
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "Aborted" not in err
    assert re.search(r"interrupted after \d of 6 files: [1-5] upscaled, 0 skipped, 0 failed", err), err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no hidden partial


def test_a_killed_batch_leaves_a_partial_that_the_next_run_removes(tmp_path):
    photos(tmp_path / "in", 1, 700)
    out = tmp_path / "out"
    out.mkdir()
    unrelated = out / ".notes.esr-1-x.txt"  # not esr's pattern: never touched
    unrelated.write_text("keep")
    with killed_at_exit(esr_process(str(tmp_path / "in"), "-o", str(out), "--tile", "256")) as proc:
        wait_for(lambda: any(p.name.endswith(".tmp") for p in out.iterdir()))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    partials = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(partials) == 1 and partials[0].name.startswith(".p0_x4.png.esr-")
    live = out / f".other.png.esr-{os.getpid()}-abc.tmp"  # a running writer's partial: kept
    live.write_text("in progress")
    photos(tmp_path / "small", 1, 8)
    result = subprocess.run(
        [sys.executable, "-m", "esrcli", "upscale", str(tmp_path / "small"), "-o", str(out), "--suffix", "_s"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert not partials[0].exists() and unrelated.exists() and live.exists()
