"""Reading a video's streams and exact timing with ffmpeg (no ffprobe is bundled): `probe` and `VideoInfo`.

Timing: a constant-rate input keeps its exact rational rate (24000/1001 stays 24000/1001, also
when the container rounded its timestamps, as Matroska's milliseconds do) and its frame count. A variable-rate input keeps every frame and its duration, at a constant rate
equal to its average (its individual timestamps are evened out); `fps` overrides the rate.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import VideoError
from .ffmpeg import FFMPEG, _ffmpeg, _ffmpeg_reason
from .hwaccel import _hwaccel_args


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
