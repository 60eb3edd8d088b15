"""Encoder settings: the ffmpeg options an output is encoded with (--codec, --crf, --preset, --pix-fmt,
the colour description), each encoder's quality scale, the hardware encoder families and what they need,
and ffmpeg's complaints about an encoder put in one line.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import VideoError
from .ffmpeg import FFMPEG, _ffmpeg_reason, _first_line
from .probe import VideoInfo

CHROMA_SUBSAMPLED = re.compile(r"^(yuv|yuvj|nv)(420|422|411|410|12|16|21)")


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


def subtitle_codec(container: str) -> list[str]:
    """Containers that hold text subtitles only in their own format get them converted (MP4: mov_text)."""
    return {".mp4": ["-c:s", "mov_text"], ".mov": ["-c:s", "mov_text"], ".m4v": ["-c:s", "mov_text"], ".webm": ["-c:s", "webvtt"]}.get(
        container, []
    )
