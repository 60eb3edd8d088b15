"""`esr video` on real clips made with the bundled ffmpeg: frame counts, exact rates, every stream, resume."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from esrcli.video import FFMPEG, parts_dir, probe

esr = functools.partial(run_cli, "video")  # esr video ARGS, in this process


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def model(tiny_model) -> str:
    return tiny_model  # video tests are about frames and streams, not picture quality


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    src = ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=24000/1001"]
    ffmpeg(
        *src,
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:r=48000",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(d / "ntsc.mp4"),
    )
    (d / "chapters.txt").write_text(
        ";FFMETADATA1\ntitle=esr test\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=first\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=second\n"
    )
    (d / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:02,000\nworld\n")
    ffmpeg(
        *src,
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:r=48000",
        "-f",
        "lavfi",
        "-i",
        "sine=f=880:r=44100",
        "-i",
        str(d / "subs.srt"),
        "-i",
        str(d / "chapters.txt"),
        "-t",
        "2",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-map_metadata",
        "4",
        "-map_chapters",
        "4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-c:s",
        "srt",
        "-shortest",
        str(d / "multi.mkv"),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=64x36:r=25",
        "-t",
        "1",
        "-vf",
        "scale=61:35",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        str(d / "odd.mkv"),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=64x36:r=30",
        "-t",
        "2",
        "-vf",
        "select='not(eq(mod(n\\,5)\\,2))'",
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(d / "vfr.mkv"),
    )
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:r=48000", "-t", "1", "-c:a", "aac", str(d / "audio.m4a"))
    # Matroska stores milliseconds: 24000/1001 becomes steps of 41 and 42 ms.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=24000/1001", "-t", "2", "-c:v", "ffv1", str(d / "ntsc_ffv1.mkv"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x36:r=24000/1001", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(d / "whole.mkv"))
    whole = (d / "whole.mkv").read_bytes()
    (d / "truncated.mkv").write_bytes(whole[: len(whole) // 2])
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    return d


def packet_durations(path: Path) -> tuple[Fraction, set[int], int]:
    out = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"], capture_output=True, text=True
    ).stdout
    tb = next(line.split(":")[1].strip() for line in out.splitlines() if line.startswith("#tb 0"))
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    return Fraction(tb), {int(r[3]) for r in rows}, len(rows)


def test_ntsc_rate_frame_count_audio_and_duration(clips, tmp_path, model):
    out = tmp_path / "out.mp4"
    result = esr(str(clips / "ntsc.mp4"), str(out), "-m", model, "--json")
    assert result.exit_code == 0, result.output
    src, dst = probe(clips / "ntsc.mp4"), probe(out)
    assert src.rate == dst.rate == Fraction(24000, 1001) and not dst.vfr
    assert dst.frames == src.frames > 40
    assert (dst.width, dst.height) == (128, 72)
    assert abs(dst.duration - src.duration) < 1 / src.rate
    tb, durations, count = packet_durations(out)
    assert count == src.frames and {d * tb for d in durations} == {Fraction(1001, 24000)}
    assert [(s.kind, s.codec) for s in dst.streams] == [("video", "h264"), ("audio", "aac")]
    summary = json.loads(result.stdout)
    assert summary["rate"] == "24000/1001" and summary["frames"] == src.frames
    assert not parts_dir(out).exists()


def test_every_track_chapter_and_metadata_is_copied(clips, tmp_path, model):
    out = tmp_path / "multi_x2.mkv"
    assert esr(str(clips / "multi.mkv"), str(out), "-m", model).exit_code == 0
    kinds = [(s.kind, s.codec) for s in probe(out).streams]
    assert kinds == [("video", "h264"), ("audio", "aac"), ("audio", "aac"), ("subtitle", "subrip")]
    header = subprocess.run([FFMPEG, "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "esr test" in header  # container metadata
    assert header.count("Chapter #") == 2 and "second" in header


def test_odd_sizes_and_no_audio(clips, tmp_path, model):
    out = tmp_path / "odd.mkv"
    assert esr(str(clips / "odd.mkv"), str(out), "-m", model, "--pix-fmt", "yuv444p", "--codec", "ffv1", "--crf", "-1").exit_code == 0
    info = probe(out)
    assert (info.width, info.height) == (122, 70) and info.frames == 25 and [s.kind for s in info.streams] == ["video"]
    assert info.pix_fmt == "yuv444p"
    refused = esr(str(clips / "odd.mkv"), str(tmp_path / "odd3.mp4"), "-m", model, "-s", "3")
    assert refused.exit_code == 1 and "even sizes" in refused.output and "yuv444p" in refused.output
    assert not (tmp_path / "odd3.mp4").exists()


def test_variable_frame_rate_keeps_every_frame_and_the_duration(clips, tmp_path, model):
    src = probe(clips / "vfr.mkv")
    assert src.vfr
    out = tmp_path / "vfr.mp4"
    assert esr(str(clips / "vfr.mkv"), str(out), "-m", model).exit_code == 0
    dst = probe(out)
    assert dst.frames == src.frames and not dst.vfr
    assert abs(dst.duration - src.duration) <= 1 / src.rate


def test_matroska_millisecond_timestamps_keep_the_exact_ntsc_rate(clips, tmp_path, model):
    tb, durations, _ = packet_durations(clips / "ntsc_ffv1.mkv")
    assert tb == Fraction(1, 1000)  # the container really rounds: steps of 41 and 42 ticks
    src = probe(clips / "ntsc_ffv1.mkv")
    assert src.rate == Fraction(24000, 1001) and not src.vfr
    out = tmp_path / "out.mp4"
    assert esr(str(clips / "ntsc_ffv1.mkv"), str(out), "-m", model).exit_code == 0
    tb, durations, count = packet_durations(out)
    assert tb == Fraction(1, 24000) and durations == {1001} and count == src.frames


def test_a_truncated_input_is_named_and_only_upscaled_when_accepted(clips, tmp_path, model):
    whole = probe(clips / "whole.mkv")
    assert not whole.missing
    out = tmp_path / "out.mp4"
    refused = esr(str(clips / "truncated.mkv"), str(out), "-m", model)
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "truncated.mkv: the file is truncated" in refused.output and "--allow-truncated" in refused.output
    assert not out.exists()
    accepted = esr(str(clips / "truncated.mkv"), str(out), "-m", model, "--allow-truncated")
    assert accepted.exit_code == 0, accepted.output
    assert "warning:" in accepted.output and "missing" in accepted.output
    held = probe(clips / "truncated.mkv")
    assert 0 < held.frames < whole.frames and probe(out).frames == held.frames


def test_ten_bit_output(clips, tmp_path, model):
    out = tmp_path / "deep.mkv"
    result = esr(str(clips / "ntsc.mp4"), str(out), "-m", model, "--codec", "libx265", "--pix-fmt", "yuv420p10le", "--preset", "ultrafast")
    assert result.exit_code == 0, result.output
    assert probe(out).pix_fmt.startswith("yuv420p10")


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no such file"),
        ("corrupt", "not a video"),
        ("audio", "no video stream"),
        ("codec", "Unknown encoder"),
        ("same", "overwrite the input"),
        ("scale0", "scale must be a number greater than 1, not 0"),
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_nothing(clips, tmp_path, model, case, message):
    src = {"missing": tmp_path / "nope.mp4", "corrupt": clips / "corrupt.mp4", "audio": clips / "audio.m4a"}.get(case, clips / "ntsc.mp4")
    dst = src if case == "same" else tmp_path / "out.mp4"
    extra = {"codec": ["--codec", "libnope"], "scale0": ["-s", "0"]}.get(case, [])
    before = sorted(tmp_path.iterdir())
    result = esr(str(src), str(dst), "-m", model, *extra)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    if case != "same":
        assert sorted(tmp_path.iterdir()) == before  # no output, no parts left behind
    assert (clips / "ntsc.mp4").stat().st_size > 0


def test_existing_output_is_not_replaced_without_overwrite(clips, tmp_path, model):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    result = esr(str(clips / "ntsc.mp4"), str(out), "-m", model)
    assert result.exit_code == 1 and "--overwrite" in result.output and out.read_bytes() == b"precious"


def test_ctrl_c_then_resume_gives_the_same_video(clips, tmp_path, model):
    out = tmp_path / "out.mp4"
    args = [
        sys.executable,
        "-m",
        "esrcli",
        "video",
        str(clips / "ntsc.mp4"),
        str(out),
        "-m",
        model,
        "--segment",
        "0.5",
        "--quiet",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = parts_dir(out) / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (manifest.is_file() and json.loads(manifest.read_text())["segments"]):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be interrupted")
    assert proc.returncode == 130, err
    assert "--resume" in err and not out.exists()
    recorded = json.loads(manifest.read_text())
    total = probe(clips / "ntsc.mp4").frames
    for s in recorded["segments"]:  # an interrupted segment is never recorded as finished
        assert s["frames"] == min(recorded["segment_frames"], total - s["index"] * recorded["segment_frames"]), recorded
    done = sum(s["frames"] for s in recorded["segments"])
    again = subprocess.run([*args[:-3], "--json", "--device", "cpu"], capture_output=True, text=True)
    assert again.returncode == 1 and "--resume" in again.stderr  # refuses to silently start over
    resumed = subprocess.run([*args[:-3], "--resume", "--json", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["resumed_from"] == done > 0
    src, dst = probe(clips / "ntsc.mp4"), probe(out)
    assert dst.frames == src.frames and dst.rate == src.rate and abs(dst.duration - src.duration) < 1 / src.rate
    assert not parts_dir(out).exists()


def test_a_frame_that_keeps_failing_stops_the_run_clearly(clips, tmp_path):
    """After the tile-splitting retries, a frame that still fails stops the run; no frame is skipped."""
    from esrcli.scaling import Pipeline, plan_scale
    from esrcli.tiling import TilePlan, Upscaler
    from esrcli.video import EncodeSettings, VideoError, VideoJob, upscale_video

    class AlwaysOutOfMemory(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    upscaler = Upscaler(AlwaysOutOfMemory(), 2, TilePlan(0, 8, 1))
    job = VideoJob(
        clips / "ntsc.mp4", tmp_path / "out.mp4", Pipeline(plan_scale([2], 2), {2: upscaler}), EncodeSettings(), model_key="failing"
    )
    with pytest.raises(VideoError, match="frame 1 could not be upscaled"):
        upscale_video(job)
    assert upscaler.retries["oom"] >= 1
    assert not (tmp_path / "out.mp4").exists() and not parts_dir(tmp_path / "out.mp4").exists()


def test_segments_done_out_of_order_are_filled_in_and_match_a_straight_run(clips, tmp_path, model):
    """What a mix of Ray and local runs leaves: segments 0 and 2 done, 1 and the rest missing. A local
    --resume fills them in, decoding from a keyframe before each gap, and the frames are those of a
    straight run (lossless FFV1, compared by framemd5)."""
    from esrcli.api import Model
    from esrcli.video import EncodeSettings, VideoJob, encode_span, prepare_video, upscale_video

    src = tmp_path / "gop.mp4"  # a keyframe every 7 frames and B-frames: the gaps are reached by seeking
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=64x36:r=24000/1001",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:r=48000",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-g",
        "7",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(src),
    )
    assert len(probe(src).keyframes) > 3
    pipeline = Model(model, device="cpu").pipeline(tile=0)
    settings = EncodeSettings(codec="ffv1", crf=None, pix_fmt="yuv444p")
    straight = tmp_path / "straight.mkv"
    upscale_video(VideoJob(src, straight, pipeline, settings, model_key="m", segment_seconds=0.5))
    mixed = tmp_path / "mixed.mkv"
    job = VideoJob(src, mixed, pipeline, settings, model_key="m", segment_seconds=0.5, resume=True)
    work, manifest = prepare_video(job)
    for index in (0, 2):
        encode_span(work, pipeline, index, index + 1, on_segment=lambda i, f, n: manifest.record(work.folder, i, f, n))
    assert manifest.done == {0, 2}
    result = upscale_video(job)
    assert result.resumed_from == 2 * manifest.segment_frames and result.frames == probe(straight).frames

    def framemd5(path: Path) -> list[str]:
        out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"], capture_output=True, text=True)
        return [line.rsplit(",", 1)[-1] for line in out.stdout.splitlines() if line and not line.startswith("#")]

    assert framemd5(mixed) == framemd5(straight) and len(framemd5(mixed)) == probe(src).frames
