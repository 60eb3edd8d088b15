"""Animated GIF, WebP and APNG: every frame upscaled, written back with durations, loop count and
transparency; partial-canvas GIF frames composited first; an animation to video; the API."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from conftest import run_cli
from PIL import Image, ImageSequence

import esrcli

DURATIONS = [40, 80, 120]


@pytest.fixture(scope="module")
def model() -> esrcli.Model:
    # A fixed --denoise strength: under auto one strength is measured for a whole animation, but
    # for each still image on its own, and the comparisons below are exact.
    return esrcli.load_model("esr-tiny", device="cpu", denoise=0)


def noisy_frames(count: int = 3, size: int = 24, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    frames = []
    for i in range(count):
        base = np.stack([x * 10 + i * 40, y * 10, (x + y) * 5 + i * 20], axis=2)
        frames.append(np.clip(base + rng.integers(0, 20, base.shape), 0, 255).astype(np.uint8))
    return frames


def read_frames(path: Path) -> tuple[list[np.ndarray], list[int], int | None, Image.Image]:
    im = Image.open(path)
    frames, durations = [], []
    for frame in ImageSequence.Iterator(im):
        rgba = np.asarray(frame.convert("RGBA"))
        durations.append(int(frame.info.get("duration", 0)))
        frames.append(rgba)
    im.seek(0)
    return frames, durations, im.info.get("loop"), im


@pytest.mark.parametrize(("suffix", "loop"), [(".gif", 0), (".webp", 2), (".png", 3)])
def test_animation_keeps_frames_durations_and_loop(tmp_path: Path, suffix: str, loop: int) -> None:
    frames = [Image.fromarray(f) for f in noisy_frames()]
    src = tmp_path / f"anim{suffix}"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=loop)
    result = run_cli("upscale", str(src), "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = tmp_path / f"anim_x4{suffix}"  # the same format, not PNG
    got, durations, got_loop, im = read_frames(out)
    assert im.format == Image.open(src).format
    assert len(got) == 3 and durations == DURATIONS and got_loop == loop
    assert all(f.shape[:2] == (96, 96) for f in got)
    assert not np.array_equal(got[0], got[1])  # each frame its own picture
    assert not [p.name for p in tmp_path.iterdir() if ".esr-" in p.name]


def test_gif_transparency_kept(tmp_path: Path) -> None:
    frames = []
    for i, f in enumerate(noisy_frames()):
        rgba = np.concatenate([f, np.full(f.shape[:2] + (1,), 255, np.uint8)], axis=2)
        rgba[:, : 8 + 4 * i, 3] = 0  # a transparent band that grows
        frames.append(Image.fromarray(rgba, "RGBA"))
    src = tmp_path / "clear.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0, disposal=2)
    assert run_cli("upscale", str(src), "--device", "cpu").exit_code == 0
    got, durations, loop, im = read_frames(tmp_path / "clear_x4.gif")
    assert "transparency" in im.info and durations == DURATIONS and loop == 0
    for i, frame in enumerate(got):
        band = (8 + 4 * i) * 4
        assert (frame[:, : band - 8, 3] == 0).all(), i  # transparent where the source was (edges aside)
        assert (frame[:, band + 8 :, 3] == 255).all(), i  # and opaque where it was, on every frame


def test_partial_gif_frames_are_composited(tmp_path: Path, model: esrcli.Model) -> None:
    base = noisy_frames(1)[0]
    patched = base.copy()
    patched[4:12, 6:14] = [250, 20, 20]
    later = patched.copy()
    later[14:20, 10:18] = [20, 20, 250]
    src = tmp_path / "partial.gif"
    sheet = Image.fromarray(np.concatenate([base, later], axis=1)).quantize(colors=64, dither=Image.Dither.NONE)
    images = [Image.fromarray(a).quantize(palette=sheet, dither=Image.Dither.NONE) for a in (base, patched, later)]
    images[0].save(src, save_all=True, append_images=images[1:], duration=DURATIONS, loop=0, disposal=1)
    with Image.open(src) as im:  # Pillow stored the later frames as the changed region only
        im.seek(1)
        assert im.tile[0][1][2] - im.tile[0][1][0] < 24 or im.tile[0][1][3] - im.tile[0][1][1] < 24

    # Lossless APNG output: exactly the composited frames, each upscaled on its own.
    assert run_cli("upscale", str(src), "-o", str(tmp_path / "out.png"), "--device", "cpu", "--denoise", "0").exit_code == 0
    got, durations, _, _ = read_frames(tmp_path / "out.png")
    assert durations == DURATIONS
    with Image.open(src) as im:
        expected = [np.asarray(model.upscale(frame.convert("RGB"))) for frame in ImageSequence.Iterator(im)]
    assert len(got) == len(expected) == 3
    for g, e in zip(got, expected):
        assert np.array_equal(g[..., :3], e)

    # GIF output: the same, to within its palette.
    assert run_cli("upscale", str(src), "--device", "cpu", "--denoise", "0").exit_code == 0
    got, durations, _, _ = read_frames(tmp_path / "partial_x4.gif")
    assert durations == DURATIONS
    for g, e in zip(got, expected):
        assert np.abs(g[..., :3].astype(int) - e).mean() < 4
    assert np.abs(got[2][14 * 4 : 20 * 4, 10 * 4 : 18 * 4, :3].astype(int) - [20, 20, 250]).mean() < 30
    assert np.abs(got[2][4 * 4 : 12 * 4, 6 * 4 : 14 * 4, :3].astype(int) - [250, 20, 20]).mean() < 30  # kept from frame 1


def test_dither_flag(tmp_path: Path) -> None:
    frames = [Image.fromarray(f) for f in noisy_frames()]
    src = tmp_path / "d.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0)
    assert run_cli("upscale", str(src), "--device", "cpu", "--suffix", "_plain").exit_code == 0
    assert run_cli("upscale", str(src), "--device", "cpu", "--suffix", "_dith", "--dither").exit_code == 0
    plain, dith = read_frames(tmp_path / "d_plain.gif")[0], read_frames(tmp_path / "d_dith.gif")[0]
    assert len(dith) == 3 and not np.array_equal(plain[0], dith[0])


def test_gif_to_mp4_keeps_timing(tmp_path: Path) -> None:
    frames = [Image.fromarray(f) for f in noisy_frames()]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0)
    out = tmp_path / "anim.mp4"
    result = run_cli("upscale", str(src), "-o", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(out), "-map", "0:v", "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    log = probe.stderr
    assert " 96x96" in log, log
    # 40, 80 and 120 ms at one 40 ms tick: 1 + 2 + 3 frames at 25 fps, 0.24 s.
    frames_seen = int(re.findall(r"frame=\s*(\d+)", log)[-1])
    assert frames_seen == 6, log
    assert "25 fps" in log, log
    seconds = re.search(r"Duration: (\d+):(\d+):([\d.]+)", log)
    assert seconds and abs(float(seconds.group(3)) - 0.24) < 0.02, log


def test_animation_to_a_still_format_is_one_line(tmp_path: Path) -> None:
    frames = [Image.fromarray(f) for f in noisy_frames()]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0)
    result = run_cli("upscale", str(src), "-o", str(tmp_path / "out.jpg"), "--device", "cpu")
    assert result.exit_code == 1
    assert "anim.gif is animated" in result.output and ".jpg cannot hold an animation" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim.gif"]


def test_single_frame_gif_is_a_still_as_before(tmp_path: Path) -> None:
    Image.fromarray(noisy_frames(1)[0]).save(tmp_path / "still.gif")
    assert run_cli("upscale", str(tmp_path / "still.gif"), "--device", "cpu").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["still.gif", "still_x4.png"]


def test_api_animated_pil_image(tmp_path: Path, model: esrcli.Model) -> None:
    frames = [Image.fromarray(f) for f in noisy_frames()]
    src = tmp_path / "anim.webp"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=DURATIONS, loop=0, lossless=True)
    with Image.open(src) as im:
        out = model.upscale(im)
        assert im.tell() == 0
        again = model.upscale_frames(im)
        composited = [frame.convert("RGB") for frame in ImageSequence.Iterator(im)]
    assert isinstance(out, list) and len(out) == 3
    assert [f.info["duration"] for f in out] == DURATIONS and all(f.info["loop"] == 0 for f in out)
    assert all(f.size == (96, 96) and f.mode == "RGB" for f in out)
    auto = esrcli.load_model("esr-tiny", device="cpu").upscale(Image.open(src))  # --denoise auto: one strength for all
    assert len(auto) == 3 and [f.info["duration"] for f in auto] == DURATIONS
    for f, g, c in zip(out, again, composited):
        assert np.array_equal(np.asarray(f), np.asarray(g))
        assert np.array_equal(np.asarray(f), np.asarray(model.upscale(c)))
    still = model.upscale_frames(frames[0])  # a still image: one frame
    assert len(still) == 1 and still[0].size == (96, 96)


def test_frames_batched_per_call_give_the_frames_one_by_one(tmp_path: Path, model: esrcli.Model) -> None:
    """Where the device takes several frames per call (here a plan of 4 whole frames per call), the
    animation's frames go through in batches, in order, with the pixels of one frame at a time."""
    from esrcli.batch import upscale_animation, upscale_picture
    from esrcli.imagefile.animation import read_animation

    frames = noisy_frames(5, 24, seed=3)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=[30, 60, 90, 120, 150], loop=0)
    animation = read_animation(tmp_path / "a.gif")
    batched = model.pipeline(tile=0, batch=4)
    assert batched.frames_per_call(24, 24) == 4
    ticks: list[int] = []
    out = upscale_animation(animation, batched, on_tile=ticks.append)
    single = [upscale_picture(frame, model.pipeline(tile=0, batch=1)).pixels for frame in animation.frames]
    assert len(out.frames) == 5 and out.durations == animation.durations and ticks == [4, 1]
    for got, want in zip(out.frames, single):
        assert got.pixels.shape == (96, 96, 3) and np.abs(got.pixels.astype(int) - want.astype(int)).max() <= 1
