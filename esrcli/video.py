"""Videos through the model with the bundled ffmpeg: streamed frames, exact timing, resumable segments.

Frames are decoded to raw RGB on a pipe (never written as images), upscaled, and encoded into
segments of a few seconds each by their own ffmpeg process; decoding, inference and encoding
run in separate threads joined by bounded queues. A manifest, keyed on the input's content and
the settings, records finished segments, so `--resume` continues after Ctrl-C, a kill or a
crash. The final step concatenates the segments with exact durations and copies every audio
and subtitle track, the chapters and the metadata of the input without re-encoding.

Timing: a constant-rate input keeps its exact rational rate (24000/1001 stays 24000/1001, also
when the container rounded its timestamps, as Matroska's milliseconds do) and its frame count. A variable-rate input keeps every frame and its duration, at a constant rate
equal to its average (its individual timestamps are evened out); `fps` overrides the rate.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from .atomic import atomic_write
from .engine import Stages, run_stages
from .errors import VideoError as VideoError
from .scaling import Pipeline, target_size
from .tiling import HostCopy

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
CHROMA_SUBSAMPLED = re.compile(r"^(yuv|yuvj|nv)(420|422|411|410|12|16|21)")


@dataclass
class Stream:
    index: int
    kind: str  # video, audio, subtitle, data, attachment
    codec: str


@dataclass
class VideoInfo:
    width: int  # as decoded (rotation applied)
    height: int
    frames: int
    rate: Fraction  # exact for constant-rate input; the average otherwise
    vfr: bool
    start: Fraction  # seconds of the first video frame
    duration: Fraction  # seconds of video
    pix_fmt: str
    colorspace: tuple[str | None, str | None, str | None]  # matrix, primaries, transfer; None = unknown
    streams: list[Stream] = field(default_factory=list)
    declared: Fraction | None = None  # the video's duration as the container states it, when it does
    origin: Fraction = Fraction(0)  # the file's start time, which -ss positions are relative to
    frame_times: list[Fraction] = field(default_factory=list, repr=False)  # each frame's time, in display order
    seekable: bool = True  # every packet has a presentation time, so -ss can find a frame (not AVI)
    keyframes: list[int] = field(default_factory=list, repr=False)  # display indices of the frames decoding can start at

    @property
    def missing(self) -> Fraction:
        """Seconds of video the container announces but does not hold (a truncated file)."""
        if self.declared is None or not self.rate:
            return Fraction(0)
        short = self.declared - self.duration
        return short if short > 2 / self.rate else Fraction(0)

    @property
    def deep(self) -> bool:
        """More than 8 bits per sample: decode to 16-bit RGB."""
        return bool(re.search(r"(9|10|12|14|16)(le|be)$", self.pix_fmt))


def _ffmpeg(
    args: list[str], *, what: str, timeout: float | None = None, reason: Callable[[str], str] | None = None
) -> subprocess.CompletedProcess:
    """Run the bundled ffmpeg; a failure is a VideoError naming `what`, with `reason` (default: the most telling line)."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise VideoError(f"{what}: {(reason or _ffmpeg_reason)(proc.stderr.decode(errors='replace'))}")
    return proc


def _ffmpeg_reason(stderr: str) -> str:
    """The most telling line of ffmpeg's complaint."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for pattern in (
        "No such file",
        "Invalid data",
        "Unknown encoder",
        "Unknown pixel format",
        "Unrecognized option",
        "moov atom not found",
        "No space left",
        "Permission denied",
        "out of range",  # an option value the encoder refuses, with its range: "Value 99 for parameter 'crf' out of range [-1 - 63]"
        "must be between",
        "[error]",  # an encoder library's own log line ("x265 [error]: ...")
        "not currently supported",
        "Could not find tag",
        "Error",
        "error",
    ):
        for line in lines:
            if pattern in line:
                return re.sub(r"^\[[^\]]+\]\s*", "", line)
    return lines[-1] if lines else "ffmpeg failed"


def _first_line(stderr: str) -> str:
    """ffmpeg's first complaint without its "[context @ 0x...]" prefixes: the root cause, which the later lines follow from."""
    for line in stderr.splitlines():
        if line := re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip()).rstrip("."):
            return line
    return "ffmpeg failed"


OPEN_FAILED = re.compile(r"Error while opening encoder|Could not open encoder|Device creation failed|Error parsing global options")


def _encoder_reason(codec: str, stderr: str) -> str:
    """ffmpeg's complaint about an encoder; for a hardware one that cannot open here (no GPU, driver or
    runtime), the encoder's own first line and what it needs, rather than "maybe incorrect parameters"."""
    hw = hardware(codec)
    if hw is not None and f"Unknown encoder '{codec}'" in stderr:
        return f"the bundled ffmpeg has no {codec} encoder: it needs {hw.needs}"
    if hw is not None and OPEN_FAILED.search(stderr):
        return f"{codec} cannot be opened here ({_first_line(stderr)}): it needs {hw.needs}"
    return _ffmpeg_reason(stderr)


STREAM_LINE = re.compile(r"Stream #\d+:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (Video|Audio|Subtitle|Data|Attachment): (\w+)(.*)")


def probe(path: str | Path) -> VideoInfo:
    """Streams, size, pixel format, and the exact frame count and timing of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    header = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True, errors="replace").stderr
    streams, video = [], None
    for m in STREAM_LINE.finditer(header):
        stream = Stream(int(m.group(1)), m.group(2).lower(), m.group(3))
        streams.append(stream)
        if stream.kind == "video" and video is None and "attached pic" not in m.group(4):
            video = (stream, m.group(4))
    if not streams:
        raise VideoError(f"{path}: not a video ffmpeg can read ({_ffmpeg_reason(header)})")
    if video is None:
        raise VideoError(f"{path}: has no video stream")
    rest = video[1]
    if video[0].codec == "none":
        raise VideoError(f"{path}: its video stream cannot be decoded (a truncated or damaged file?)")
    size = re.search(r"(?<![\w/])(\d{1,5})x(\d{1,5})\b", rest)
    if not size:
        raise VideoError(f"{path}: cannot read the video size")
    width, height = int(size.group(1)), int(size.group(2))
    pix = re.search(r"\), (\w+)(?:\(([^)]*)\))?", rest) or re.search(r", (\w+)(?:\(([^)]*)\))?,", rest)
    pix_fmt = pix.group(1) if pix else "yuv420p"
    colorspace = _colour_description(pix.group(2) or "" if pix else "")
    rotation = re.search(r"rotation of (-?[\d.]+) degrees", header)
    if rotation and round(abs(float(rotation.group(1)))) % 180 == 90:
        width, height = height, width
    info = VideoInfo(width, height, 0, Fraction(0), False, Fraction(0), Fraction(0), pix_fmt, colorspace, streams)
    info.declared = _declared_duration(header, video[0].index, len(streams))
    start = re.search(r"Duration: [^,]*, start: (-?[\d.]+)", header)
    info.origin = Fraction(start.group(1)) if start else Fraction(0)
    return _timing(path, info)


COLOUR_NAME = re.compile(r"^(bt|smpte|fcc|ycgco|arib|iec|linear|log|gamma|film|jedec|ebu|unknown)[\w-]*$")


def _colour_description(details: str) -> tuple[str | None, str | None, str | None]:
    """(matrix, primaries, transfer) from ffmpeg's "tv, bt709" or "pc, bt2020nc/bt2020/smpte2084"."""
    for token in details.split(", "):
        parts = token.split("/")
        if all(COLOUR_NAME.match(p) for p in parts) and len(parts) in (1, 3):
            names = parts * 3 if len(parts) == 1 else parts
            return tuple(None if n in ("unknown", "reserved") else n for n in names)  # type: ignore[return-value]
    return (None, None, None)


def _declared_duration(header: str, index: int, streams: int) -> Fraction | None:
    """The video stream's DURATION tag (Matroska writes one per stream), else the file's duration
    when the video is its only stream (otherwise that is the longest stream's)."""
    block = re.search(rf"Stream #\d+:{index}\b.*?(?=\n\s*Stream #|\Z)", header, re.S)
    tag = re.search(r"^\s+DURATION\s*: (\d+):(\d\d):(\d\d(?:\.\d+)?)", block.group(0), re.M) if block else None
    if tag is None and streams == 1:
        tag = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", header)
    if tag is None:
        return None
    hours, minutes, seconds = tag.groups()
    return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)


def _timing(path: Path, info: VideoInfo) -> VideoInfo:
    """Frame count and rate from the packets themselves (stream copy, no decoding)."""
    out = _ffmpeg(["-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"], what=str(path)).stdout.decode()
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", out, re.M)
    if not tb_match:
        raise VideoError(f"{path}: cannot read the video timestamps")
    tb = Fraction(int(tb_match.group(1)), int(tb_match.group(2)))
    # framecrc rows: stream, dts, pts, duration, size, checksum[, F=flags when not just "key"][, S=side data
    # count, then the side data (MPEG-TS: every packet)]; AVI stores no pts (NOPTS): use the dts
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    flags = [int(row[6].strip()[2:], 16) if len(row) >= 7 and row[6].strip().startswith("F=") else 1 for row in rows]
    if rows and flags[-1] & 2:  # the last packet cut short (a file cut inside it, flagged corrupt): no frame decodes from it
        rows, flags = rows[:-1], flags[:-1]
    packets = [tuple(int(v) for v in row[1:4]) for row in rows]
    if not packets:
        raise VideoError(f"{path}: the video stream has no frames")
    pts = sorted(p if p != NOPTS else d for d, p, _ in packets)
    info.seekable = all(p != NOPTS for _, p, _ in packets)
    index_of = {t: i for i, t in enumerate(pts)}
    info.keyframes = sorted(index_of[p if p != NOPTS else d] for (d, p, _), f in zip(packets, flags) if f & 1)
    if pts[0] == NOPTS:
        raise VideoError(f"{path}: the video stream carries no timestamps")
    _set_times(info, pts, tb, {d for *_, d in packets if d > 0})
    return info


def _set_times(info: VideoInfo, pts: list[int], tb: Fraction, durations: set[int]) -> None:
    """Frame count, times, duration and rate from the sorted timestamps of the frames (in `tb` ticks)."""
    steps = {b - a for a, b in zip(pts, pts[1:]) if b > a}
    end = pts[-1] + max(durations or steps or {1})
    info.frames = len(pts)
    info.frame_times = [p * tb for p in pts]
    info.start = pts[0] * tb
    info.duration = (end - pts[0]) * tb
    info.vfr = False
    if (rate := _constant_rate(pts, tb, durations)) is not None:
        info.rate = rate
    elif (rate := _cut_constant_rate(info, pts, tb, durations)) is not None:
        info.rate, info.duration = rate, info.frames / rate  # the output's duration: its frames at that rate
    else:
        info.vfr = len(steps) > 1
        info.rate = (Fraction(info.frames) / info.duration).limit_denominator(1001000) if info.duration else Fraction(25)


def _constant_rate(pts: list[int], tb: Fraction, durations: set[int]) -> Fraction | None:
    """The rate when every frame is one step after the last (exactly, or within the container's rounding)."""
    steps = {b - a for a, b in zip(pts, pts[1:]) if b > a}
    if len(steps | durations) == 1:
        return 1 / (next(iter(steps | durations)) * tb)
    return _rounded_constant_rate(pts, tb)


MAX_REORDER = 16  # frames a decoder may hold back (H.264/HEVC reorder at most 16): what a cut can leave out of order


def _cut_constant_rate(info: VideoInfo, pts: list[int], tb: Fraction, durations: set[int]) -> Fraction | None:
    """A constant rate for a file cut short (the container announces more than it holds), whose last few
    frames lost the frames between them: those were B-frames after the cut, coded after the frame they
    come before. The frames up to the gap keep a constant rate, and the ones after it lie on its grid."""
    if info.declared is None:
        return None
    for tail in range(1, min(MAX_REORDER, len(pts) - 2) + 1):
        rate = _constant_rate(pts[:-tail], tb, durations)
        if rate is None:
            continue
        if info.declared - len(pts) / rate <= 2 / rate:
            return None  # not short of what the container announces: a file whose last frames come late is variable-rate
        step = 1 / (rate * tb)  # ticks per frame
        if all(abs((p - pts[0]) - round((p - pts[0]) / step) * step) <= 1 for p in pts[-tail:]):
            return rate
    return None


def _decoded_times(path: Path, info: VideoInfo, hwaccel: str = "none") -> VideoInfo:
    """The frames a truncated input really yields, by decoding it as `encode_span` will (with its hwaccel: a
    hardware decoder may give up on other damaged frames): what a cut left undecodable (a frame whose
    references were lost) is not expected. Keyframes keep their times."""
    out = _ffmpeg(
        [
            "-v",
            "error",
            *_hwaccel_args(hwaccel, path, info.pix_fmt)[0],
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-enc_time_base",
            "demux",
            "-c:v",
            "wrapped_avframe",
            "-f",
            "framecrc",
            "-",
        ],
        what=str(path),
    ).stdout.decode()
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", out, re.M)
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    if not tb_match or not rows:
        raise VideoError(f"{path}: no frame of its video can be decoded")
    tb = Fraction(int(tb_match.group(1)), int(tb_match.group(2)))
    pts = sorted(int(row[2]) for row in rows)
    if pts[0] == NOPTS or len(set(pts)) != len(pts):
        return info  # no usable times to map the keyframes with: the packets' account stands
    keys = {info.frame_times[k] for k in info.keyframes}
    _set_times(info, pts, tb, {int(row[3]) for row in rows if int(row[3]) > 0})
    info.keyframes = [i for i, t in enumerate(info.frame_times) if t in keys]
    return info


NOPTS = -(2**63)  # ffmpeg's "no timestamp"

COMMON_RATES = [Fraction(n, 1001) for n in (24000, 30000, 48000, 60000, 120000)] + [
    Fraction(n) for n in (12, 15, 24, 25, 30, 48, 50, 60, 72, 90, 100, 120, 144, 240)
]


def _rounded_constant_rate(pts: list[int], tb: Fraction) -> Fraction | None:
    """A constant rate whose timestamps the container's time base only rounded (Matroska's 1 ms:
    24000/1001 becomes steps of 41 and 42 ms): every timestamp lies within one tick of the ideal one.
    The common rates are tried first, then the simplest fraction near the mean step."""
    if len(pts) < 3:
        return None
    mean_step = (pts[-1] - pts[0]) * tb / (len(pts) - 1)
    if mean_step <= 0:  # no usable timestamps (AVI stores none per frame)
        return None
    for rate in [*COMMON_RATES, (1 / mean_step).limit_denominator(1001)]:
        if abs(1 / rate - mean_step) > tb:
            continue
        step = 1 / (rate * tb)  # ticks per frame, a fraction
        if all(abs(p - pts[0] - i * step) <= 1 for i, p in enumerate(pts)):
            return rate
    return None


# --- settings and the manifest ---------------------------------------------------------


@dataclass
class EncodeSettings:
    codec: str = "libx264"
    crf: int | None = 18  # the constant-quality factor, in the encoder's own scale (QUALITY); None: the encoder decides
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    fps: Fraction | None = None  # override the output rate (every frame is kept)
    extra: list[str] = field(default_factory=list)  # passed to the encoder as they are

    def encoder_args(self, info: VideoInfo | None = None) -> list[str]:
        """The encoder's ffmpeg options (after its input); `info` gives the colour description to keep."""
        hw = hardware(self.codec)
        upload = hw is not None and hw.upload
        args = ["-c:v", self.codec]
        if not upload:  # uploaded frames are in the format the filter makes
            args += ["-pix_fmt", self.pix_fmt]
        if self.crf is not None:
            args += quality_args(self.codec, self.crf)
        if self.preset:
            args += ["-preset", self.preset]
        # Keep the source's colour description, and convert RGB to YUV with its matrix, for what it
        # declares; an undeclared part stays undeclared (ffmpeg then assumes the usual).
        matrix, primaries, transfer = info.colorspace if info else (None, None, None)
        filters = [f"scale=out_color_matrix={matrix}"] if matrix in SCALE_MATRICES else []
        if upload:  # frames go to the GPU's memory first: the device (a global option, valid anywhere), then the upload
            args += hw.device_args()
            filters += [f"format={UPLOAD_FORMATS.get(self.pix_fmt, self.pix_fmt)}", "hwupload"]
        if filters:
            args += ["-vf", ",".join(filters)]
        for option, value in (("-colorspace", matrix), ("-color_primaries", primaries), ("-color_trc", transfer)):
            if value:
                args += [option, value]
        return args + list(self.extra)

    def check(self, dst: Path) -> None:
        """Refuse, before any work, what the encoder would refuse late, obscurely or not at all: a --crf out of
        its range (x264 clamps one silently, the others fail only once their encoder opens, with a line that
        does not say what the range is), a --crf for a hardware encoder without a constant-quality mode (it
        would be ignored), a --preset the encoder does not have (ignored too), a pixel format an upload cannot take."""
        quality, hw = QUALITY.get(self.codec), hardware(self.codec)
        if self.crf is not None and quality is not None and not quality.low <= self.crf <= quality.high:
            raise VideoError(
                f"{dst}: --crf {self.crf} is out of range for {self.codec} ({quality.low} to {quality.high}, lower is better"
                f"{'' if quality.args[0] == '-crf' else f'; it sets {quality.flags}'}; -1 leaves it to the encoder)"
            )
        if self.crf is not None and quality is None and hw is not None:
            raise VideoError(
                f"{dst}: --crf {self.crf}: {self.codec} has no constant-quality mode esr can set; pass --crf -1 and its own rate "
                "control with --ffmpeg-arg (e.g. --ffmpeg-arg=-b:v --ffmpeg-arg=20M)"
            )
        options = encoder_options(self.codec) if self.preset else None  # None: no such encoder, which the test encode reports
        if self.preset and options is not None:
            if "preset" not in options:
                raise VideoError(f"{dst}: --preset {self.preset}: {self.codec} has no presets; leave --preset out")
            names = options["preset"]
            if names and self.preset not in names and not re.fullmatch(r"-?\d+", self.preset):
                raise VideoError(f"{dst}: --preset {self.preset} is not a preset of {self.codec} (it has {', '.join(names)})")
        if hw is not None and hw.upload and self.pix_fmt not in UPLOAD_FORMATS:
            raise VideoError(
                f"{dst}: --pix-fmt {self.pix_fmt}: {self.codec} takes frames uploaded as {' or '.join(sorted(set(UPLOAD_FORMATS.values())))}; "
                f"use {' or '.join(f for f in UPLOAD_FORMATS if f.startswith('yuv'))}"
            )


@dataclass(frozen=True)
class Quality:
    """How an encoder takes a constant quality: the options --crf becomes ("{}" is the value), their range
    (lower is better in all of them), and the default when --crf is not given."""

    args: tuple[str, ...]
    low: int
    high: int
    default: int = 18

    @property
    def flags(self) -> str:
        return " ".join(self.args).replace("{}", "N")


@dataclass(frozen=True)
class Hardware:
    """An encoder family that runs on a device: what it needs (for the line when it cannot open), and for
    those that take frames in the device's own memory, the global options that open the device to upload to."""

    needs: str
    device: tuple[str, ...] = ()
    upload: bool = False

    def device_args(self) -> list[str]:
        return [arg.replace("{render}", _render_node()) for arg in self.device]


def _render_node() -> str:
    """The first DRM render node (the GPU that VAAPI opens), or the usual one when there is none (opening it then fails)."""
    nodes = sorted(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").is_dir() else []
    return str(nodes[0]) if nodes else "/dev/dri/renderD128"


_CRF, _NVENC, _QSV = ("-crf", "{}"), ("-rc", "vbr", "-cq", "{}", "-b:v", "0"), ("-global_quality", "{}")
_VAAPI, _VULKAN = ("-rc_mode", "CQP", "-global_quality", "{}"), ("-rc_mode", "cqp", "-qp", "{}")
_AMF = ("-rc", "cqp", "-qp_i", "{}", "-qp_p", "{}")

# --crf per encoder, as each one's help (ffmpeg -h encoder=NAME) and source say: software encoders take -crf
# (libvpx needs -b:v 0 for constant quality, VP8 starts at its default minimum quantizer); NVENC the -cq
# of its VBR mode (0 means "automatic" there, so 1 is the lowest; -b:v 0: no average bitrate to aim at);
# QSV -global_quality, its ICQ mode (clipped to 1-51 for every codec); VAAPI -global_quality in CQP mode
# (0 means "unset"); AMF and Vulkan the QP of their CQP mode (AMF's HEVC has no B-frame QP). AV1 and VP9
# hardware QPs are 0-255 quantizer indices: 72 is about what 18 is on the 0-63 scales. Encoders not named
# here take -crf as they are, except hardware ones, whose quality esr does not know: --crf is refused for them.
QUALITY: dict[str, Quality] = {
    **dict.fromkeys(("libx264", "libx264rgb", "libx265"), Quality(_CRF, 0, 51)),
    "libvpx": Quality((*_CRF, "-b:v", "0"), 4, 63),
    "libvpx-vp9": Quality((*_CRF, "-b:v", "0"), 0, 63),
    **dict.fromkeys(("libaom-av1", "libsvtav1"), Quality(_CRF, 0, 63)),
    **dict.fromkeys(("h264_nvenc", "hevc_nvenc"), Quality(_NVENC, 1, 51)),
    "av1_nvenc": Quality(_NVENC, 1, 63),
    **dict.fromkeys(("h264_qsv", "hevc_qsv", "av1_qsv", "vp9_qsv"), Quality(_QSV, 1, 51)),
    **dict.fromkeys(("h264_vaapi", "hevc_vaapi"), Quality(_VAAPI, 1, 51)),
    **dict.fromkeys(("av1_vaapi", "vp9_vaapi"), Quality(_VAAPI, 1, 255, 72)),
    "h264_amf": Quality((*_AMF, "-qp_b", "{}"), 0, 51),
    "hevc_amf": Quality(_AMF, 0, 51),
    "av1_amf": Quality((*_AMF, "-qp_b", "{}"), 0, 255, 72),
    **dict.fromkeys(("h264_vulkan", "hevc_vulkan"), Quality(_VULKAN, 0, 51)),
    "av1_vulkan": Quality(_VULKAN, 0, 255, 72),
}

# Hardware encoder families, by the suffix of their names (h264_nvenc, av1_vaapi, ...).
HARDWARE: dict[str, Hardware] = {
    "nvenc": Hardware("an NVIDIA GPU and driver"),
    "qsv": Hardware("an Intel GPU and the oneVPL runtime (libvpl, libmfx-gen)"),
    "vaapi": Hardware("a VAAPI render node (/dev/dri/renderD*) and its libva driver", ("-vaapi_device", "{render}"), upload=True),
    "amf": Hardware("an AMD GPU and the AMF runtime (libamfrt64)"),
    "vulkan": Hardware("a Vulkan driver with video encoding", ("-init_hw_device", "vulkan=esr", "-filter_hw_device", "esr"), upload=True),
    "v4l2m2m": Hardware("a V4L2 memory-to-memory encoder device (/dev/video*)"),
    "videotoolbox": Hardware("macOS and an ffmpeg built with VideoToolbox"),
    "mf": Hardware("Windows and an ffmpeg built with Media Foundation"),
}

# What an uploaded frame is made of, for each --pix-fmt an upload can take (the same samples, interleaved chroma).
UPLOAD_FORMATS = {"yuv420p": "nv12", "nv12": "nv12", "yuv420p10le": "p010le", "p010le": "p010le"}


def hardware(codec: str) -> Hardware | None:
    """The hardware family of an encoder, None for a software one."""
    return HARDWARE.get(codec.rsplit("_", 1)[-1]) if "_" in codec else None


def quality_args(codec: str, crf: int) -> list[str]:
    """The encoder's options for a constant-quality factor (see QUALITY)."""
    quality = QUALITY.get(codec)
    return [a.replace("{}", str(crf)) for a in quality.args] if quality else ["-crf", str(crf)]


def default_crf(codec: str) -> int | None:
    """The quality when --crf is not given: the encoder's default in QUALITY, none for a hardware encoder esr
    knows no quality mode of, and 18 for any other software one (as always)."""
    quality = QUALITY.get(codec)
    return quality.default if quality else None if hardware(codec) else 18


@functools.cache
def encoder_options(codec: str) -> dict[str, list[str]] | None:
    """The private options of the bundled ffmpeg's encoder `codec`, each with its named values (empty when it
    takes any value); None when ffmpeg has no such encoder. Read from its help once per process."""
    try:
        cmd = [FFMPEG, "-hide_banner", "-h", f"encoder={codec}"]
        out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60).stdout
    except subprocess.TimeoutExpired:
        return None
    if not re.search(r"^Encoder \S+", out, re.M):
        return None
    options: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if m := re.match(r"^  -(\S+)\s+<", line):
            current = options.setdefault(m.group(1), [])
        elif current is not None and (m := re.match(r"^     (\S+)\s", line)):
            current.append(m.group(1))
        else:
            current = None
    return options


# The matrices the scale filter converts RGB with (others are still declared, not converted with).
SCALE_MATRICES = {"bt709", "bt470bg", "smpte170m", "bt2020nc", "bt2020", "bt601", "fcc", "smpte240m"}


def fingerprint(path: Path) -> str:
    """A content key of the input: its size and its first and last 16 MiB (fast for huge files)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(16 << 20))
        if size > 32 << 20:
            f.seek(-(16 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()


@dataclass
class Manifest:
    """The finished segments of a run, by index: segment i holds frames [i * segment_frames, ...).

    Segments may finish in any order (Ray workers) and a run may resume another's, local or not."""

    key: str
    segment_frames: int
    segments: list[dict] = field(default_factory=list)  # {"index": i, "file": ..., "frames": n}

    @property
    def frames_done(self) -> int:
        return sum(s["frames"] for s in self.segments)

    @property
    def done(self) -> set[int]:
        return {s["index"] for s in self.segments}

    def record(self, folder: Path, index: int, file: str, frames: int) -> None:
        self.segments = [s for s in self.segments if s["index"] != index] + [{"index": index, "file": file, "frames": frames}]
        self.segments.sort(key=lambda s: s["index"])
        self.save(folder)

    def save(self, folder: Path) -> None:
        with atomic_write(folder / "manifest.json") as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Manifest | None:
        """The manifest of an interrupted run; None when there is none, an error when it is damaged."""
        path = folder / "manifest.json"
        if not path.is_file():
            return None
        try:
            manifest = cls(**json.loads(path.read_text()))
            for position, s in enumerate(manifest.segments):
                s.setdefault("index", position)  # manifests written before segments had indices
            valid = (
                isinstance(manifest.key, str)
                and isinstance(manifest.segment_frames, int)
                and manifest.segment_frames > 0
                and isinstance(manifest.segments, list)
                and all(
                    isinstance(s, dict)
                    and isinstance(s.get("frames"), int)
                    and s["frames"] > 0
                    and isinstance(s["index"], int)
                    and (folder / str(s.get("file"))).is_file()
                    for s in manifest.segments
                )
            )
        except (OSError, ValueError, TypeError, AttributeError):
            valid = False
        if not valid:
            raise VideoError(f"{folder}: the interrupted run's parts are damaged; pass --overwrite to start over")
        return manifest


def parts_dir(dst: Path) -> Path:
    return dst.parent / f".{dst.name}.esr-parts"


# --- the pipeline ----------------------------------------------------------------------


@dataclass
class VideoJob:
    src: Path
    dst: Path
    pipeline: Pipeline
    encode: EncodeSettings
    model_key: str  # what identifies the model in the manifest key
    segment_seconds: float = 10.0
    resume: bool = False
    overwrite: bool = False
    allow_truncated: bool = False  # upscale what a truncated input holds instead of refusing it
    hwaccel: str = "none"  # how the input is decoded: none (the CPU), cuda, or auto (cuda where it works); see HWACCELS


@dataclass
class VideoResult:
    frames: int
    resumed_from: int
    rate: Fraction
    size: tuple[int, int]
    missing: Fraction = Fraction(0)  # seconds a truncated input lacked (--allow-truncated)
    denoise: float = 0.0  # the --denoise strength of the whole video


class _SegmentWriter:
    """Encodes frames into numbered segments; a segment counts only once its encoder closed cleanly."""

    def __init__(self, work: SegmentWork, first_index: int, on_segment: Callable[[int, str, int], None]) -> None:
        self.work, self.next_index, self.on_segment = work, first_index, on_segment
        self.proc: subprocess.Popen | None = None
        self.frames_in_segment = 0

    def _open(self) -> None:
        index = self.index = self.next_index
        self.next_index += 1
        work = self.work
        self.tmp = work.folder / f"segment_{index:05d}.{os.getpid()}.tmp.nut"
        self.final = work.folder / f"segment_{index:05d}.nut"
        w, h = work.size
        cmd = [
            FFMPEG,
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            work.raw_fmt,
            "-s",
            f"{w}x{h}",
            "-r",
            str(work.rate),
            "-i",
            "-",
            *work.encode.encoder_args(work.info),
            "-f",
            "nut",
            str(self.tmp),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames_in_segment = 0

    def write(self, frame: np.ndarray) -> None:
        if self.proc is None:
            self._open()
        try:
            self.proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))  # the frame's own bytes, not a copy
        except BrokenPipeError:
            self._fail()
        self.frames_in_segment += 1
        if self.frames_in_segment == self.work.segment_frames:
            self.close()

    def _fail(self) -> None:
        err = self.proc.stderr.read().decode(errors="replace") if self.proc and self.proc.stderr else ""
        if self.proc:
            self.proc.kill()
            self.proc.wait()
        raise VideoError(f"{self.work.dst}: the encoder failed ({_encoder_reason(self.work.encode.codec, err)})")

    def close(self) -> None:
        """Finish the current segment and record it."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        if self.proc.wait() != 0:
            self._fail()
        self.proc.stderr.close()
        os.replace(self.tmp, self.final)
        self.proc = None
        self.on_segment(self.index, self.final.name, self.frames_in_segment)

    def abort(self) -> None:
        """Drop the unfinished segment (the finished ones stay for --resume)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.tmp.unlink(missing_ok=True)


@dataclass
class SegmentWork:
    """Everything encoding segments of one video takes, in or out of this process (Ray workers)."""

    src: Path
    dst: Path
    folder: Path
    info: VideoInfo
    encode: EncodeSettings
    size: tuple[int, int]
    raw_fmt: str
    rate: Fraction
    segment_frames: int
    hwaccel: str = "none"  # as VideoJob's; auto is settled by each process that decodes (a Ray worker on its own machine)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.raw_fmt == "rgb48le" else np.dtype(np.uint8)

    @property
    def segments(self) -> int:
        return -(-self.info.frames // self.segment_frames)

    def frames_in(self, index: int) -> int:
        return max(0, min(self.segment_frames, self.info.frames - index * self.segment_frames))

    def seek(self, frame: int) -> tuple[Fraction | None, int]:
        """Where to start decoding to reach `frame`, and how many frames to drop first: just before the
        keyframe at or before it, so decoding starts clean (from the start where timestamps cannot be
        trusted to seek with, as in AVI)."""
        keys = [k for k in self.info.keyframes if k <= frame]
        if not self.info.seekable or not keys or keys[-1] == 0:
            return None, frame
        key, times = keys[-1], self.info.frame_times
        return (times[key - 1] + times[key]) / 2 - self.info.origin, frame - key  # halfway from the frame before


def check_output(src: Path, dst: Path, *, overwrite: bool) -> None:
    """Refuse an output that cannot be made, in one line naming it, before any work is spent (the CLI
    calls this before loading the model): the input itself, a folder, an existing file, a folder that
    is missing, is a file, or cannot be written to (read-only, no permission), no suffix."""
    try:  # an OSError is a folder on the way that cannot be searched or written
        if src.resolve() == dst.resolve():
            raise VideoError(f"{dst}: the output would overwrite the input; choose another name")
        if dst.is_dir() or (dst.exists() and not dst.is_file()):
            raise VideoError(f"{dst}: is {'a folder' if dst.is_dir() else 'not a regular file'}; name the output video file")
        if dst.exists() and not overwrite:
            raise VideoError(f"{dst}: already exists (pass --overwrite to replace it)")
        blocker = next((p for p in reversed(dst.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise VideoError(f"{dst}: cannot write ({blocker} is a file, not a folder)")
        if not dst.parent.is_dir():
            raise VideoError(f"{dst}: the folder {dst.parent} does not exist")
        if not dst.suffix:
            raise VideoError(f"{dst}: has no suffix, so no container can be chosen (e.g. .mp4, .mkv, .mov, .webm)")
        with tempfile.TemporaryFile(dir=dst.parent):  # the parts, the result's temporary file and the result all go here
            pass
    except OSError as exc:
        raise VideoError(f"{dst}: cannot write ({exc.strerror or exc})") from None


def prepare_video(job: VideoJob, on_info: Callable[[VideoInfo], None] | None = None) -> tuple[SegmentWork, Manifest]:
    """Checks, probe, a test encode and the manifest (new, or the interrupted run's): no frame is upscaled here."""
    src, dst = job.src, job.dst
    check_output(src, dst, overwrite=job.overwrite)
    job.encode.check(dst)
    if job.hwaccel not in HWACCELS:
        raise VideoError(f"{src}: --hwaccel {job.hwaccel} is not one of {', '.join(HWACCELS)}")
    info = probe(src)
    if info.missing and not job.allow_truncated:
        raise VideoError(
            f"{src}: the file is truncated: its container announces {float(info.declared):.3f} s of video but holds "
            f"{float(info.frames / info.rate):.3f} s ({info.frames} frames); pass --allow-truncated to upscale the frames it holds"
        )
    if info.missing:  # expect what decoding really yields, so the last segment is not one frame short
        info = _decoded_times(src, info, job.hwaccel)
    if on_info:
        on_info(info)
    rate = job.encode.fps or info.rate
    out_size = target_size(info.width, info.height, job.pipeline.plan.target)
    if CHROMA_SUBSAMPLED.match(job.encode.pix_fmt) and (out_size[0] % 2 or out_size[1] % 2):
        raise VideoError(
            f"{dst}: the output would be {out_size[0]}x{out_size[1]}, and {job.encode.pix_fmt} needs even sizes; use another scale or --pix-fmt yuv444p"
        )
    deep = info.deep or bool(re.search(r"(10|12|16)(le|be)$", job.encode.pix_fmt))
    folder = parts_dir(dst)
    settings = {
        "model": job.model_key,
        "plan": job.pipeline.plan.describe(),
        "encode": [*job.encode.encoder_args(info)],
        "rate": str(rate),
        "size": out_size,
    }
    key = hashlib.sha256((fingerprint(src) + json.dumps(settings, sort_keys=True)).encode()).hexdigest()
    preflight(job, info, out_size, rate)
    manifest = Manifest.load(folder) if folder.is_dir() and not job.overwrite else None
    if manifest is not None and not job.resume:
        raise VideoError(
            f"{dst}: an interrupted run left {manifest.frames_done} of {info.frames} frames in {folder}; pass --resume to continue it or --overwrite to start over"
        )
    if manifest is not None and job.resume and manifest.key != key:
        raise VideoError(
            f"{dst}: the interrupted run in {folder} used another input or other settings; run with those, or pass --overwrite to start over"
        )
    if manifest is None or not job.resume:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        manifest = Manifest(key, max(1, round(float(rate) * job.segment_seconds)))
        manifest.save(folder)
    for leftover in folder.glob("*.tmp.nut"):
        leftover.unlink()
    raw_fmt = "rgb48le" if deep else "rgb24"
    work = SegmentWork(src, dst, folder, info, job.encode, out_size, raw_fmt, rate, manifest.segment_frames, job.hwaccel)
    whole = [s for s in manifest.segments if s["frames"] == work.frames_in(s["index"])]
    if len(whole) != len(manifest.segments):  # a short segment is never a finished one: encode it again
        manifest.segments = whole
        manifest.save(folder)
    return work, manifest


def missing_runs(work: SegmentWork, manifest: Manifest) -> list[tuple[int, int]]:
    """The segments still to encode, as [first, stop) runs of consecutive indices."""
    runs: list[tuple[int, int]] = []
    for index in (i for i in range(work.segments) if i not in manifest.done):
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def finish_video(job: VideoJob, work: SegmentWork, manifest: Manifest, resumed_from: int) -> VideoResult:
    _mux(job, work.info, manifest, work.folder, work.rate)
    shutil.rmtree(work.folder, ignore_errors=True)
    return VideoResult(work.info.frames, resumed_from, work.rate, work.size, work.info.missing, job.pipeline.strength)


def upscale_video(
    job: VideoJob, on_progress: Callable[[int, int], None] | None = None, on_info: Callable[[VideoInfo], None] | None = None
) -> VideoResult:
    """Upscale `job.src` into `job.dst`: segments, then the final mux; see the module docstring."""
    job = decide_denoise(job)
    work, manifest = prepare_video(job, on_info)
    resumed = manifest.frames_done
    if on_progress:
        on_progress(resumed, work.info.frames)
    try:
        for first, stop in missing_runs(work, manifest):
            before = manifest.frames_done
            encode_span(
                work,
                job.pipeline,
                first,
                stop,
                on_segment=lambda index, file, frames: manifest.record(work.folder, index, file, frames),
                on_frames=(lambda n, base=before: on_progress(base + n, work.info.frames)) if on_progress else None,
            )
        return finish_video(job, work, manifest, resumed)
    except BaseException as exc:
        kept = bool(manifest.segments)
        if not kept:  # nothing worth resuming: leave no trace
            shutil.rmtree(work.folder, ignore_errors=True)
        if isinstance(exc, VideoError | OSError):  # one line, which says what is kept and how to use it
            problem = _problem(job.dst, exc)
            raise VideoError(f"{problem}; {resume_hint(work.folder, manifest)}" if kept else problem) from exc
        raise


DENOISE_SAMPLES = 8


def sample_frames(path: Path, info: VideoInfo, count: int = DENOISE_SAMPLES) -> list[np.ndarray]:
    """`count` frames spread over the video, decoded as 8-bit RGB (frames that fail to decode are left out)."""
    frames = []
    for i in range(count):
        at = float(info.duration) * (i + 0.5) / count
        out = subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-nostdin",
                "-ss",
                f"{at:.3f}",
                "-i",
                str(path),
                "-map",
                "0:v:0",
                "-frames:v",
                "1",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ],
            capture_output=True,
        )
        if out.returncode == 0 and len(out.stdout) == info.width * info.height * 3:
            frames.append(np.frombuffer(out.stdout, np.uint8).reshape(info.height, info.width, 3))
    return frames


def decide_denoise(job: VideoJob) -> VideoJob:
    """Under --denoise auto, one strength for the whole video, from a sample of its frames (the same on a
    resume, and in every Ray worker's segments); it is part of the manifest's model key."""
    if job.pipeline.choose is None:
        return job
    pipeline = job.pipeline.for_frames(sample_frames(job.src, probe(job.src)))
    return replace(job, pipeline=pipeline, model_key=f"{job.model_key}+denoise:{pipeline.strength:g}")


def _problem(dst: Path, exc: BaseException) -> str:
    """The error's line: an OSError here is a write that failed (a full disk), never a traceback."""
    return str(exc) if isinstance(exc, VideoError) else f"{dst}: cannot write ({getattr(exc, 'strerror', None) or exc})"


def resume_hint(folder: Path, manifest: Manifest) -> str:
    """What a failed run that keeps its finished segments says about them."""
    return f"{manifest.frames_done} finished frames are kept in {folder}: run the same command with --resume to continue"


def encode_span(
    work: SegmentWork,
    pipeline: Pipeline,
    first: int,
    stop: int,
    *,
    on_segment: Callable[[int, str, int], None],
    on_frames: Callable[[int], None] | None = None,
) -> None:
    """Decode, upscale and encode segments [first, stop) of `work` through the engine: decoding in its
    reader thread, the model here, encoding in its writer thread.

    Decoding starts at the span's first frame (seeking there); each segment is announced through
    `on_segment` once its encoder closed cleanly, and nothing of an unfinished one is kept."""
    info, dtype = work.info, work.dtype
    w, h = info.width, info.height
    frame_bytes = w * h * 3 * dtype.itemsize
    first_frame = first * work.segment_frames
    count = min(info.frames, stop * work.segment_frames) - first_frame
    seek, skip = work.seek(first_frame)
    decode = decoder_args(work, seek, count + skip)
    log = tempfile.TemporaryFile()  # not a pipe: a damaged file's many complaints would fill it and stall the decoder
    decoder = subprocess.Popen(decode, stdout=subprocess.PIPE, stderr=log, bufsize=frame_bytes * 2)
    writer = _SegmentWriter(work, first, on_segment)
    done = 0

    def frames() -> Iterator[np.ndarray]:
        decoded = 0
        while len(buf := decoder.stdout.read(frame_bytes)) == frame_bytes:
            decoded += 1
            if decoded > skip:
                yield np.frombuffer(buf, dtype).reshape(h, w, 3)
        # Checked here, before the writer is told the input ended: a short last segment is never recorded.
        if decoder.wait() != 0 or decoded - skip != count:
            log.seek(0)
            reason = (
                _ffmpeg_reason(log.read().decode(errors="replace"))
                if decoder.returncode
                else f"decoded {max(0, decoded - skip)} of the {count} frames from frame {first_frame + 1}: a damaged or cut-off file?"
            )
            raise VideoError(f"{work.src}: decoding failed ({reason})")

    def upscale(batch: list[np.ndarray]) -> list[HostCopy]:
        nonlocal done
        try:
            ups = pipeline.run_frames(batch)
        except (MemoryError, RuntimeError) as exc:  # after the Upscaler's own retries: stop, never skip
            raise VideoError(f"{work.src}: frame {first_frame + done + 1} could not be upscaled ({exc})") from exc
        done += len(batch)
        return ups

    stages = Stages(
        upscale,
        lambda frame: writer.write(frame.array()),  # a frame from the device arrives here, not in the compute thread
        batch=pipeline.frames_per_call(h, w),
        read_ahead=8,
        write_behind=8,
        weigh=lambda frame: frame.nbytes,
        finish=writer.close,
        cancel=decoder.kill,  # unblocks the reader
        abort=writer.abort,  # drops the unfinished segment
    )
    try:
        run_stages(frames(), stages, on_computed=on_frames)
    finally:
        decoder.kill()
        decoder.wait()
        log.close()


def _mux(job: VideoJob, info: VideoInfo, manifest: Manifest, folder: Path, rate: Fraction) -> None:
    """Concatenate the segments with exact durations and copy every other stream of the input."""
    lines = []
    for segment in sorted(manifest.segments, key=lambda s: s["index"]):
        lines.append(f"file '{segment['file']}'")
        lines.append(f"duration {float(Fraction(segment['frames']) / rate):.9f}")
    (folder / "concat.txt").write_text("\n".join(lines) + "\n")
    dst = job.dst
    container = dst.suffix.lower()
    cmd = [
        "-itsoffset",
        f"{float(info.start):.9f}",
        "-f",
        "concat",
        "-safe",
        "0",
        "-i",
        str(folder / "concat.txt"),
        "-i",
        str(job.src),
        "-map",
        "0:v",
        "-map",
        "1:a?",
        "-map",
        "1:s?",
    ]
    if container in (".mkv", ".webm"):
        cmd += ["-map", "1:t?"]
    cmd += ["-map_metadata", "1", "-map_chapters", "1", "-c", "copy", *subtitle_codec(container)]
    if container in (".mp4", ".mov", ".m4v"):
        cmd += ["-video_track_timescale", str(rate.numerator)]
    with atomic_write(dst, keep_suffix=True) as tmp:
        _ffmpeg(["-v", "error", "-y", *cmd, str(tmp)], what=str(dst))
        frames = probe(tmp).frames  # checked before the result replaces anything
        if frames != info.frames:
            raise VideoError(f"{dst}: the result has {frames} frames, expected {info.frames}; nothing was replaced")


def subtitle_codec(container: str) -> list[str]:
    """Containers that hold text subtitles only in their own format get them converted (MP4: mov_text)."""
    return {".mp4": ["-c:s", "mov_text"], ".mov": ["-c:s", "mov_text"], ".m4v": ["-c:s", "mov_text"], ".webm": ["-c:s", "webvtt"]}.get(
        container, []
    )


def preflight(job: VideoJob, info: VideoInfo, size: tuple[int, int], rate: Fraction) -> None:
    """Encode one black frame with the job's settings into the output's container, with the input's
    other streams: a setting or a container that cannot work fails here, before any frame is upscaled."""
    container = job.dst.suffix.lower()
    if job.hwaccel == "cuda" and (why := hwaccel_failure("cuda", str(job.src))) is not None:
        raise VideoError(_hwaccel_problem(job.src, why))
    with tempfile.TemporaryDirectory(prefix="esr-preflight-") as folder:
        test = Path(folder) / f"check{container}"
        cmd = [
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s={size[0]}x{size[1]}:r={rate}",
            "-t",
            f"{float(2 / rate):.6f}",
            "-i",
            str(job.src),
            "-map",
            "0:v",
            "-map",
            "1:a?",
            "-map",
            "1:s?",
            "-t",
            "0.2",
            *job.encode.encoder_args(info),
            "-c:a",
            "copy",
            "-c:s",
            "copy",
            *subtitle_codec(container),
            str(test),
        ]
        _test_encode(cmd, job.encode.codec, job.dst)


def _test_encode(cmd: list[str], codec: str, dst: Path) -> None:
    """Run a test encode; its failure is one line naming `dst` (for a hardware encoder, what it needs)."""
    try:
        _ffmpeg(cmd, what=str(dst), timeout=120, reason=functools.partial(_encoder_reason, codec))
    except subprocess.TimeoutExpired:
        raise VideoError(f"{dst}: the encoder did not finish a test frame in 2 minutes") from None


def check_hardware(encode: EncodeSettings, hwaccel: str, src: Path, dst: Path) -> None:
    """Open a hardware encoder on two small frames, and the CUDA device for --hwaccel cuda: a machine without
    the GPU, its driver or runtime fails here in one line, in a fraction of a second (the CLI calls this before
    it loads the model; the preflight tries again at the output's size, and decodes the input with CUDA)."""
    if hardware(encode.codec) is not None:
        cmd = [
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=black:s=256x256:r=10",
            "-frames:v",
            "2",
            *encode.encoder_args(),
            "-f",
            "null",
            "-",
        ]
        _test_encode(cmd, encode.codec, dst)
    if hwaccel == "cuda" and (why := hwaccel_failure("cuda")) is not None:
        raise VideoError(_hwaccel_problem(src, why))


# --hwaccel: none decodes on the CPU; cuda on an NVIDIA GPU (NVDEC), or fails at the preflight where it cannot;
# auto uses cuda where it works and the CPU elsewhere, silently. The decoded frames are the same either way.
HWACCELS = ("none", "auto", "cuda")


@functools.cache
def hwaccel_failure(method: str, src: str | None = None) -> str | None:
    """Why ffmpeg cannot decode with `method` here: its device does not open or, given `src`, the video's first
    frame does not decode on it (libavcodec would quietly decode on the CPU instead); None when it can. Asked
    once per process: a Ray worker asks on its own machine."""
    if src is None:
        args = ["-v", "error", "-init_hw_device", method, "-f", "lavfi", "-i", "nullsrc=s=64x64", "-frames:v", "1", "-f", "null", "-"]
    else:
        args = ["-v", "warning", "-hwaccel", method, "-i", src, "-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"]
    try:
        proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "it did not answer in a minute"
    err = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:  # the first line about the device, not a container's warning before it
        return _first_line("\n".join(re.findall(r"^.*(?:cuda|device|hwaccel|nvdec|cuvid).*$", err, re.M | re.I)) or err)
    fallback = re.search(r"^.*(Failed setup for format|hwaccel initiali[sz]ation returned error).*$", err, re.M)
    return _first_line(fallback.group(0)) if fallback else None


def _hwaccel_problem(src: Path, why: str) -> str:
    return f"{src}: --hwaccel cuda cannot decode here ({why}): it needs an NVIDIA GPU and driver; --hwaccel auto falls back to the CPU"


def _hwaccel_args(hwaccel: str, src: Path, pix_fmt: str) -> tuple[list[str], list[str]]:
    """The decoder's options for `hwaccel`: before its input, and after it. The frames CUDA decodes come back
    in its own layout (nv12, p010); they are repacked, losslessly, into the input's pixel format first, so
    that RGB comes from the very conversion software decoding takes, and the frames are the same."""
    if hwaccel == "none" or (hwaccel == "auto" and hwaccel_failure("cuda", str(src)) is not None):
        return [], []
    return ["-hwaccel", "cuda"], (["-vf", f"format={pix_fmt}"] if re.fullmatch(r"\w+", pix_fmt) else [])


def decoder_args(work: SegmentWork, seek: Fraction | None, frames: int) -> list[str]:
    """The decoder's command: `frames` frames of the video from `seek` (None: the start), raw RGB on its
    stdout; downloaded from the GPU by ffmpeg where it decodes there (no -hwaccel_output_format)."""
    before, after = _hwaccel_args(work.hwaccel, work.src, work.info.pix_fmt)
    return [
        FFMPEG,
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        *before,
        *(["-ss", f"{float(seek):.6f}"] if seek is not None else []),
        "-i",
        str(work.src),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-frames:v",
        str(frames),
        *after,
        "-f",
        "rawvideo",
        "-pix_fmt",
        work.raw_fmt,
        "-",
    ]
