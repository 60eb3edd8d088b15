"""Hardware video in `esr video`: NVENC, QSV, VAAPI, AMF, Vulkan and V4L2 encoders, and --hwaccel decoding.

Real ffmpeg (the bundled one), real files and the CLI as a real process. Where this machine has no such
GPU, driver or runtime (CI has none), every hardware encoder the bundled ffmpeg lists must be refused in
one line before the model loads, with nothing written; --hwaccel auto must fall back to the CPU with the
same frames, and --hwaccel cuda must be refused. Where one does open, its refusal cannot be tested and is
skipped with that reason; the mapping of --crf and --preset is checked on the arguments themselves.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from esrcli.video import (
    FFMPEG,
    HARDWARE,
    QUALITY,
    EncodeSettings,
    SegmentWork,
    VideoError,
    check_hardware,
    decoder_args,
    default_crf,
    encoder_options,
    hardware,
    hwaccel_failure,
    parts_dir,
    probe,
)


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120)


def listed_hardware_encoders() -> list[str]:
    """The hardware video encoders the bundled ffmpeg lists (`ffmpeg -encoders`), whether this machine can open them or not."""
    out = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
    return [name for name in re.findall(r"^ V[.\w]{5} (\S+)", out, re.M) if hardware(name) is not None]


HW_ENCODERS = listed_hardware_encoders()
ONE_PER_FAMILY = list({name.rsplit("_", 1)[-1]: name for name in reversed(HW_ENCODERS)}.values())


def video(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`esr video` as a real process with a deadline (a hang fails the test, not the suite)."""
    cmd = [sys.executable, "-m", "esrcli", "video", *args, "--quiet", "--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "ESR_DEBUG": ""})


def the_error_line(proc: subprocess.CompletedProcess, *phrases: str) -> str:
    """Exit code 1 and exactly one `esr: error:` line, holding every phrase, and no traceback."""
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esr: error: "), proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def opens_here(codec: str) -> bool:
    try:
        check_hardware(EncodeSettings(codec=codec, crf=default_crf(codec)), "none", Path("in.mp4"), Path("out.mp4"))
    except VideoError:
        return False
    return True


def framemd5(path: Path) -> list[str]:
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"], capture_output=True, text=True)
    return [line.rsplit(",", 1)[-1] for line in out.stdout.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """2 s at 10 fps, a keyframe every 3 frames, with B-frames: segments of 0.5 s start by seeking."""
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=10",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-g",
        "3",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def test_the_bundled_ffmpeg_lists_hardware_encoders_of_every_family_esr_maps():
    """What this file tests is there (the list is read from ffmpeg; an empty one would test nothing)."""
    families = {name.rsplit("_", 1)[-1] for name in HW_ENCODERS}
    assert {"nvenc", "qsv", "vaapi", "amf", "vulkan"} <= families, HW_ENCODERS
    assert {"h264_nvenc", "hevc_nvenc", "av1_nvenc"} <= set(HW_ENCODERS)


# --- encoders this machine cannot open --------------------------------------------------------------


@pytest.mark.parametrize("codec", HW_ENCODERS)
def test_a_hardware_encoder_that_cannot_open_here_is_refused_in_one_line_at_once(codec, tmp_path):
    """Every hardware encoder of the bundled ffmpeg, with its default quality mapped: the line names it, the
    encoder's own reason and what it needs. That reason is a missing device, never an option esr got wrong
    (an option ffmpeg cannot parse fails before the device is opened, with another line)."""
    settings = EncodeSettings(codec=codec, crf=default_crf(codec))
    settings.check(tmp_path / "out.mp4")
    started = time.perf_counter()
    try:
        check_hardware(settings, "none", tmp_path / "in.mp4", tmp_path / "out.mp4")
    except VideoError as exc:
        line = str(exc)
    else:
        pytest.skip(f"{codec} opens on this machine: its refusal cannot be tested here")
    assert time.perf_counter() - started < 10
    assert line.startswith(f"{tmp_path / 'out.mp4'}: {codec} cannot be opened here (") and "\n" not in line, line
    assert line.endswith(f": it needs {HARDWARE[codec.rsplit('_', 1)[-1]].needs}"), line
    assert "option" not in line and "maybe incorrect parameters" not in line, line
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ONE_PER_FAMILY)
def test_the_cli_refuses_a_hardware_encoder_before_the_model_loads(codec, clip, tmp_path):
    """The refusal comes before the model is even looked for (the model named does not exist): no output,
    no parts folder, exit 1, one line."""
    if opens_here(codec):
        pytest.skip(f"{codec} opens on this machine: its refusal cannot be tested here")
    out = tmp_path / "out.mp4"
    proc = video(str(clip), str(out), "-m", str(tmp_path / "no-such-model.safetensors"), "--codec", codec, timeout=60)
    the_error_line(proc, f"esr: error: {out}: {codec} cannot be opened here (", "it needs")
    assert sorted(tmp_path.iterdir()) == [] and not parts_dir(out).exists()


def test_nvenc_here_says_what_is_missing(tmp_path):
    """The line the issue asked for: on a machine without the NVIDIA driver, libcuda is what is missing."""
    if opens_here("h264_nvenc"):
        pytest.skip("h264_nvenc opens on this machine")
    with pytest.raises(VideoError) as caught:
        check_hardware(EncodeSettings(codec="h264_nvenc"), "none", tmp_path / "in.mp4", tmp_path / "out.mp4")
    line = str(caught.value)
    prefix = re.escape(f"{tmp_path / 'out.mp4'}: h264_nvenc cannot be opened here (")
    assert re.fullmatch(rf"{prefix}.+\): it needs an NVIDIA GPU and driver", line), line
    if not Path("/dev/nvidia0").exists():
        assert "libcuda" in line or "CUDA" in line, line


def test_the_preflight_refuses_a_hardware_encoder_too(clip, tiny_model, tmp_path):
    """Through the library (no CLI, so no early check): the preflight's test encode gives the same line,
    before any frame is upscaled and before the parts folder is made."""
    from esrcli.api import Model
    from esrcli.video import VideoJob, upscale_video

    if opens_here("hevc_nvenc"):
        pytest.skip("hevc_nvenc opens on this machine")
    out = tmp_path / "out.mkv"
    job = VideoJob(clip, out, Model(tiny_model, device="cpu").pipeline(tile=0), EncodeSettings(codec="hevc_nvenc"), model_key="m")
    expected = rf"^{re.escape(str(out))}: hevc_nvenc cannot be opened here \(.+\): it needs an NVIDIA GPU and driver$"
    with pytest.raises(VideoError, match=expected):
        upscale_video(job, on_progress=lambda done, total: pytest.fail("a frame was upscaled"))
    assert sorted(tmp_path.iterdir()) == []


def test_an_encoder_this_ffmpeg_lacks_says_what_it_needs(tmp_path):
    """VideoToolbox is macOS only: the Linux ffmpeg has no such encoder."""
    if "h264_videotoolbox" in HW_ENCODERS:
        pytest.skip("this ffmpeg has VideoToolbox")
    with pytest.raises(VideoError, match="the bundled ffmpeg has no h264_videotoolbox encoder: it needs macOS"):
        check_hardware(EncodeSettings(codec="h264_videotoolbox", crf=None), "none", tmp_path / "in.mp4", tmp_path / "out.mp4")


# --- --crf and --preset per family ------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec,crf,phrase",
    [
        ("h264_nvenc", 0, "(1 to 51, lower is better; it sets -rc vbr -cq N -b:v 0;"),  # -cq 0 would be "automatic"
        ("hevc_nvenc", 52, "(1 to 51,"),
        ("av1_nvenc", 64, "(1 to 63,"),
        ("h264_qsv", 0, "(1 to 51, lower is better; it sets -global_quality N;"),
        ("av1_qsv", 52, "(1 to 51,"),
        ("hevc_vaapi", 52, "(1 to 51, lower is better; it sets -rc_mode CQP -global_quality N;"),
        ("av1_vaapi", 256, "(1 to 255,"),
        ("h264_amf", 52, "(0 to 51, lower is better; it sets -rc cqp -qp_i N -qp_p N -qp_b N;"),
        ("av1_amf", 256, "(0 to 255,"),
        ("hevc_vulkan", 52, "(0 to 51, lower is better; it sets -rc_mode cqp -qp N;"),
        ("av1_vulkan", -2, "(0 to 255,"),
        ("libx264", 52, "(0 to 51, lower is better; -1 leaves it to the encoder)"),
    ],
)
def test_a_crf_out_of_the_familys_range_is_refused(codec, crf, phrase, tmp_path):
    with pytest.raises(VideoError) as caught:
        EncodeSettings(codec=codec, crf=crf).check(tmp_path / "o.mkv")
    assert str(caught.value).startswith(f"{tmp_path / 'o.mkv'}: --crf {crf} is out of range for {codec} {phrase}"), caught.value
    quality = QUALITY[codec]
    for ok in (quality.low, quality.high, quality.default):
        EncodeSettings(codec=codec, crf=ok).check(tmp_path / "o.mkv")


@pytest.mark.parametrize("codec,crf", [("h264_nvenc", "0"), ("av1_vaapi", "300")])
def test_the_cli_refuses_an_out_of_range_crf_before_the_model_loads(codec, crf, clip, tmp_path):
    out = tmp_path / "o.mkv"
    proc = video(str(clip), str(out), "-m", str(tmp_path / "no-such-model.safetensors"), "--codec", codec, "--crf", crf, timeout=60)
    the_error_line(proc, f"esr: error: {out}: --crf {crf} is out of range for {codec} (")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["h264_v4l2m2m", "mjpeg_qsv", "ffv1_vulkan", "h264_videotoolbox"])
def test_a_crf_for_a_hardware_encoder_without_a_quality_mode_is_refused_and_not_the_default(codec, tmp_path):
    """esr knows no constant-quality option of these: an explicit --crf would be ignored, so it is refused;
    without --crf none is passed (the default is the encoder's own rate control)."""
    with pytest.raises(VideoError, match=rf"--crf 20: {codec} has no constant-quality mode esr can set; pass --crf -1"):
        EncodeSettings(codec=codec, crf=20).check(tmp_path / "o.mkv")
    assert default_crf(codec) is None
    EncodeSettings(codec=codec, crf=default_crf(codec)).check(tmp_path / "o.mkv")


def test_the_default_quality_is_18_or_its_equivalent_on_the_encoders_scale():
    assert default_crf("libx264") == default_crf("libvpx-vp9") == default_crf("ffv1") == 18  # software: as always
    assert default_crf("h264_nvenc") == default_crf("hevc_qsv") == default_crf("h264_vaapi") == default_crf("hevc_amf") == 18
    assert default_crf("av1_vaapi") == default_crf("av1_amf") == default_crf("av1_vulkan") == 72  # 0-255 quantizer indices


@pytest.mark.parametrize(
    "codec,crf,expected",
    [
        ("libx264", 18, ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"]),
        ("libvpx-vp9", 30, ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p", "-crf", "30", "-b:v", "0"]),
        ("libsvtav1", 30, ["-c:v", "libsvtav1", "-pix_fmt", "yuv420p", "-crf", "30"]),
        ("h264_nvenc", 23, ["-c:v", "h264_nvenc", "-pix_fmt", "yuv420p", "-rc", "vbr", "-cq", "23", "-b:v", "0"]),
        ("av1_nvenc", 40, ["-c:v", "av1_nvenc", "-pix_fmt", "yuv420p", "-rc", "vbr", "-cq", "40", "-b:v", "0"]),
        ("hevc_qsv", 25, ["-c:v", "hevc_qsv", "-pix_fmt", "yuv420p", "-global_quality", "25"]),
        ("h264_amf", 20, ["-c:v", "h264_amf", "-pix_fmt", "yuv420p", "-rc", "cqp", "-qp_i", "20", "-qp_p", "20", "-qp_b", "20"]),
        ("hevc_amf", 20, ["-c:v", "hevc_amf", "-pix_fmt", "yuv420p", "-rc", "cqp", "-qp_i", "20", "-qp_p", "20"]),  # no -qp_b in hevc_amf
        ("av1_amf", 100, ["-c:v", "av1_amf", "-pix_fmt", "yuv420p", "-rc", "cqp", "-qp_i", "100", "-qp_p", "100", "-qp_b", "100"]),
        (
            "h264_vaapi",
            22,
            ["-c:v", "h264_vaapi", "-rc_mode", "CQP", "-global_quality", "22", "-vaapi_device", "NODE", "-vf", "format=nv12,hwupload"],
        ),
        (
            "av1_vulkan",
            90,
            [
                "-c:v",
                "av1_vulkan",
                "-rc_mode",
                "cqp",
                "-qp",
                "90",
                "-init_hw_device",
                "vulkan=esr",
                "-filter_hw_device",
                "esr",
                "-vf",
                "format=nv12,hwupload",
            ],
        ),
        ("h264_nvenc", None, ["-c:v", "h264_nvenc", "-pix_fmt", "yuv420p"]),  # --crf -1: the encoder's own rate control
        ("h264_v4l2m2m", None, ["-c:v", "h264_v4l2m2m", "-pix_fmt", "yuv420p"]),
    ],
)
def test_the_mapping_gives_each_family_its_own_quality_options(codec, crf, expected):
    args = EncodeSettings(codec=codec, crf=crf).encoder_args()
    node = next((a for a in args if a.startswith("/dev/dri/")), None)
    assert args == [node if a == "NODE" else a for a in expected]
    if codec.endswith("_vaapi"):
        assert re.fullmatch(r"/dev/dri/renderD\d+", node)


def test_uploading_families_convert_the_colours_first_and_take_10_bits_as_p010(clip):
    info = probe(clip)
    info.colorspace = ("bt709", "bt709", "bt709")
    args = EncodeSettings(codec="hevc_vaapi", crf=20, pix_fmt="yuv420p10le").encoder_args(info)
    assert args[args.index("-vf") + 1] == "scale=out_color_matrix=bt709,format=p010le,hwupload"
    assert "-pix_fmt" not in args and args[-6:] == ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
    args = EncodeSettings(codec="hevc_nvenc", crf=20, preset="p5", pix_fmt="p010le").encoder_args(info)
    assert args[:12] == ["-c:v", "hevc_nvenc", "-pix_fmt", "p010le", "-rc", "vbr", "-cq", "20", "-b:v", "0", "-preset", "p5"]
    assert args[args.index("-vf") + 1] == "scale=out_color_matrix=bt709"


def test_a_pixel_format_an_upload_cannot_take_is_refused(tmp_path):
    expected = "--pix-fmt yuv444p: h264_vaapi takes frames uploaded as nv12 or p010le; use yuv420p or yuv420p10le"
    with pytest.raises(VideoError, match=expected):
        EncodeSettings(codec="h264_vaapi", pix_fmt="yuv444p").check(tmp_path / "o.mkv")


@pytest.mark.parametrize("codec", sorted(c for c in QUALITY if c in HW_ENCODERS or c.startswith("lib")))
def test_the_quality_options_are_the_encoders_own(codec):
    """Every private option the mapping passes is one the bundled ffmpeg's encoder has, and every named value
    one of its constants (the generic -b:v and -global_quality belong to every encoder)."""
    options = encoder_options(codec)
    if options is None:
        pytest.skip(f"the bundled ffmpeg has no {codec}")
    args = QUALITY[codec].args
    for option, value in zip(args, (*args[1:], None)):
        if not option.startswith("-") or option in ("-b:v", "-global_quality"):
            continue
        assert option[1:] in options, (codec, option)
        if value is not None and value != "{}" and not value.lstrip("-").isdigit():
            assert value in options[option[1:]], (codec, option, value, options[option[1:]])


def test_presets_are_passed_only_where_the_encoder_has_them(tmp_path):
    dst = tmp_path / "o.mkv"
    for codec, preset in (
        ("h264_nvenc", "p7"),
        ("h264_nvenc", "slow"),
        ("hevc_qsv", "veryslow"),
        ("h264_amf", "quality"),
        ("libx264", "slow"),
        ("libsvtav1", "8"),
    ):
        if encoder_options(codec) is not None:
            EncodeSettings(codec=codec, preset=preset).check(dst)
    if encoder_options("h264_nvenc") is not None:
        with pytest.raises(VideoError, match=r"--preset veryslow is not a preset of h264_nvenc \(it has .*p1, .*p7\)"):
            EncodeSettings(codec="h264_nvenc", preset="veryslow").check(dst)
    for codec in ("h264_vaapi", "av1_vulkan", "libvpx-vp9"):
        if encoder_options(codec) is not None:
            with pytest.raises(VideoError, match=f"--preset slow: {codec} has no presets; leave --preset out"):
                EncodeSettings(codec=codec, crf=default_crf(codec), preset="slow").check(dst)


# --- --hwaccel ----------------------------------------------------------------------------------------


def test_hwaccel_auto_gives_the_frames_of_software_decoding(clip, tiny_model, tmp_path):
    """Where CUDA cannot decode (here), auto falls back silently; where it can, it decodes there, and the frames
    are the same. Lossless FFV1 compared by framemd5, with segments that start by seeking."""
    common = ["-m", tiny_model, "--codec", "ffv1", "--crf", "-1", "--pix-fmt", "yuv444p", "--segment", "0.5", "--tile", "0"]
    none = video(str(clip), str(tmp_path / "none.mkv"), *common, "--hwaccel", "none")
    assert none.returncode == 0, none.stderr
    auto = video(str(clip), str(tmp_path / "auto.mkv"), *common, "--hwaccel", "auto")
    assert auto.returncode == 0 and auto.stderr == "", auto.stderr
    frames = framemd5(tmp_path / "none.mkv")
    assert len(frames) == probe(clip).frames == 20 and framemd5(tmp_path / "auto.mkv") == frames


def test_hwaccel_cuda_here_is_refused_in_one_line_before_the_model_loads(clip, tmp_path):
    if hwaccel_failure("cuda") is None:
        pytest.skip("CUDA opens on this machine")
    out = tmp_path / "out.mp4"
    proc = video(str(clip), str(out), "-m", str(tmp_path / "no-such-model.safetensors"), "--hwaccel", "cuda", timeout=60)
    the_error_line(proc, f"esr: error: {clip}: --hwaccel cuda cannot decode here (", "it needs an NVIDIA GPU and driver")
    assert sorted(tmp_path.iterdir()) == []


def test_hwaccel_cuda_is_refused_at_the_preflight_too(clip, tiny_model, tmp_path):
    """Through the library: the preflight decodes the input's first frame with CUDA (a device that opens but
    cannot decode this codec would have libavcodec decode on the CPU, quietly); here it fails, in one line."""
    from esrcli.api import Model
    from esrcli.video import VideoJob, upscale_video

    if hwaccel_failure("cuda", str(clip)) is None:
        pytest.skip("CUDA decodes this clip on this machine")
    out = tmp_path / "out.mkv"
    job = VideoJob(clip, out, Model(tiny_model, device="cpu").pipeline(tile=0), EncodeSettings(), model_key="m", hwaccel="cuda")
    with pytest.raises(VideoError, match=rf"^{re.escape(str(clip))}: --hwaccel cuda cannot decode here \(.+\): it needs an NVIDIA GPU"):
        upscale_video(job, on_progress=lambda done, total: pytest.fail("a frame was upscaled"))
    assert sorted(tmp_path.iterdir()) == []
    job.hwaccel = "bogus"
    with pytest.raises(VideoError, match="--hwaccel bogus is not one of none, auto, cuda"):
        upscale_video(job)


def test_the_decoder_command_puts_hwaccel_before_its_input_and_repacks_after_it(clip, tmp_path):
    """The segment work (which travels to Ray workers) carries --hwaccel as a plain string."""
    info = probe(clip)
    work = SegmentWork(clip, tmp_path / "o.mkv", tmp_path, info, EncodeSettings(), (128, 96), "rgb24", info.rate, 5, "cuda")
    assert pickle.loads(pickle.dumps(work)).hwaccel == "cuda"
    cmd = decoder_args(work, Fraction(1, 2), 7)
    at = cmd.index("-hwaccel")
    assert cmd[at : at + 2] == ["-hwaccel", "cuda"] and at < cmd.index("-ss") < cmd.index("-i")
    assert cmd[cmd.index("-vf") + 1] == "format=yuv420p" and cmd.index("-i") < cmd.index("-vf") < cmd.index("-f")
    assert cmd[-5:] == ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"] and cmd[cmd.index("-frames:v") + 1] == "7"
    work.hwaccel = "none"
    plain = decoder_args(work, None, 7)
    assert "-hwaccel" not in plain and "-vf" not in plain and "-ss" not in plain
    work.hwaccel = "auto"
    on_gpu = [*plain[:5], "-hwaccel", "cuda", *plain[5:-5], "-vf", "format=yuv420p", *plain[-5:]]
    assert decoder_args(work, None, 7) == (plain if hwaccel_failure("cuda", str(clip)) else on_gpu)
