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

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from .atomic import atomic_write
from .errors import EsrError
from .scaling import Pipeline, target_size

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
CHROMA_SUBSAMPLED = re.compile(r"^(yuv|yuvj|nv)(420|422|411|410|12|16|21)")


class VideoError(EsrError):
    """A video that cannot be processed; the message is one line naming the file."""


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


def _ffmpeg(args: list[str], *, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise VideoError(f"{what}: {_ffmpeg_reason(proc.stderr.decode(errors='replace'))}")
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
        "not currently supported",
        "Could not find tag",
        "Error",
        "error",
    ):
        for line in lines:
            if pattern in line:
                return re.sub(r"^\[[^\]]+\]\s*", "", line)
    return lines[-1] if lines else "ffmpeg failed"


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
    # framecrc rows: stream, dts, pts, duration, size, checksum[, F=flags when not just "key"]; AVI stores
    # no pts (NOPTS): use the dts
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    packets = [tuple(int(v) for v in row[1:4]) for row in rows]
    if not packets:
        raise VideoError(f"{path}: the video stream has no frames")
    pts = sorted(p if p != NOPTS else d for d, p, _ in packets)
    info.seekable = all(p != NOPTS for _, p, _ in packets)
    index_of = {t: i for i, t in enumerate(pts)}
    key = [len(row) < 7 or int(row[6].strip().removeprefix("F="), 16) & 1 for row in rows]
    info.keyframes = sorted(index_of[p if p != NOPTS else d] for (d, p, _), k in zip(packets, key) if k)
    if pts[0] == NOPTS:
        raise VideoError(f"{path}: the video stream carries no timestamps")
    durations = {d for *_, d in packets if d > 0}
    steps = {b - a for a, b in zip(pts, pts[1:]) if b > a}
    end = pts[-1] + max(durations or steps or {1})
    info.frames = len(packets)
    info.frame_times = [p * tb for p in pts]
    info.start = pts[0] * tb
    info.duration = (end - pts[0]) * tb
    if len(steps | durations) == 1:
        info.rate = 1 / (next(iter(steps | durations)) * tb)
    elif (rate := _rounded_constant_rate(pts, tb)) is not None:
        info.rate = rate
    else:
        info.vfr = len(steps) > 1
        info.rate = (Fraction(info.frames) / info.duration).limit_denominator(1001000) if info.duration else Fraction(25)
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
    crf: int | None = 18
    preset: str | None = None
    pix_fmt: str = "yuv420p"
    fps: Fraction | None = None  # override the output rate (every frame is kept)
    extra: list[str] = field(default_factory=list)  # passed to the encoder as they are

    def encoder_args(self, info: VideoInfo) -> list[str]:
        args = ["-c:v", self.codec, "-pix_fmt", self.pix_fmt]
        if self.crf is not None:
            args += ["-crf", str(self.crf)]
            if self.codec.startswith("libvpx"):
                args += ["-b:v", "0"]  # constant-quality mode
        if self.preset:
            args += ["-preset", self.preset]
        # Keep the source's colour description, and convert RGB to YUV with its matrix, for what it
        # declares; an undeclared part stays undeclared (ffmpeg then assumes the usual).
        matrix, primaries, transfer = info.colorspace
        if matrix in SCALE_MATRICES:
            args += ["-vf", f"scale=out_color_matrix={matrix}"]
        for option, value in (("-colorspace", matrix), ("-color_primaries", primaries), ("-color_trc", transfer)):
            if value:
                args += [option, value]
        return args + list(self.extra)


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
                    isinstance(s, dict) and isinstance(s.get("frames"), int) and s["frames"] > 0 and isinstance(s["index"], int)
                    and (folder / str(s.get("file"))).is_file()
                    for s in manifest.segments
                )
            )  # fmt: skip
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


@dataclass
class VideoResult:
    frames: int
    resumed_from: int
    rate: Fraction
    size: tuple[int, int]
    missing: Fraction = Fraction(0)  # seconds a truncated input lacked (--allow-truncated)


class _Failed:
    """Carries a worker thread's exception to the main thread."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _reader(
    proc: subprocess.Popen, frame_bytes: int, shape: tuple[int, ...], dtype: np.dtype, skip: int, out: queue.Queue, stop: threading.Event
) -> None:
    try:
        n = 0
        while not stop.is_set():
            buf = proc.stdout.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            if n >= skip:
                out.put(np.frombuffer(buf, dtype).reshape(shape))
            n += 1
        out.put(None)
    except BaseException as exc:  # surfaced by the main thread
        out.put(_Failed(exc))


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
        cmd = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", work.raw_fmt, "-s", f"{w}x{h}",
               "-r", str(work.rate), "-i", "-", *work.encode.encoder_args(work.info), "-f", "nut", str(self.tmp)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames_in_segment = 0

    def write(self, frame: np.ndarray) -> None:
        if self.proc is None:
            self._open()
        try:
            self.proc.stdin.write(frame.tobytes())
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
        raise VideoError(f"{self.work.dst}: the encoder failed ({_ffmpeg_reason(err)})")

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


_ABORT = object()  # tells the encoder thread to stop without finishing its segment (None finishes it)


def _writer(writer: _SegmentWriter, frames: queue.Queue, errors: queue.Queue) -> None:
    try:
        while (frame := frames.get()) is not None:
            if frame is _ABORT:
                return
            writer.write(frame)
        writer.close()
    except BaseException as exc:
        errors.put(exc)
        while True:  # keep the producer from blocking on a full queue
            frame = frames.get()
            if frame is None or frame is _ABORT:
                return


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


def prepare_video(job: VideoJob, on_info: Callable[[VideoInfo], None] | None = None) -> tuple[SegmentWork, Manifest]:
    """Checks, probe, a test encode and the manifest (new, or the interrupted run's): no frame is upscaled here."""
    src, dst = job.src, job.dst
    if src.resolve() == dst.resolve():
        raise VideoError(f"{dst}: the output would overwrite the input; choose another name")
    if dst.is_dir() or (dst.exists() and not dst.is_file()):
        raise VideoError(f"{dst}: is {'a folder' if dst.is_dir() else 'not a regular file'}; name the output video file")
    if dst.exists() and not job.overwrite:
        raise VideoError(f"{dst}: already exists (pass --overwrite to replace it)")
    if not dst.parent.is_dir():
        raise VideoError(f"{dst}: the folder {dst.parent} does not exist")
    if not dst.suffix:
        raise VideoError(f"{dst}: has no suffix, so no container can be chosen (e.g. .mp4, .mkv, .mov, .webm)")
    info = probe(src)
    if info.missing and not job.allow_truncated:
        raise VideoError(
            f"{src}: the file is truncated: its container announces {float(info.declared):.3f} s of video but holds "
            f"{float(info.duration):.3f} s ({info.frames} frames); pass --allow-truncated to upscale the frames it holds"
        )
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
    work = SegmentWork(src, dst, folder, info, job.encode, out_size, "rgb48le" if deep else "rgb24", rate, manifest.segment_frames)
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
    return VideoResult(work.info.frames, resumed_from, work.rate, work.size, work.info.missing)


def upscale_video(
    job: VideoJob, on_progress: Callable[[int, int], None] | None = None, on_info: Callable[[VideoInfo], None] | None = None
) -> VideoResult:
    """Upscale `job.src` into `job.dst`: segments, then the final mux; see the module docstring."""
    work, manifest = prepare_video(job, on_info)
    resumed = manifest.frames_done
    if on_progress:
        on_progress(resumed, work.info.frames)
    try:
        for first, stop in missing_runs(work, manifest):
            before = manifest.frames_done
            encode_span(
                work, job.pipeline, first, stop,
                on_segment=lambda index, file, frames: manifest.record(work.folder, index, file, frames),
                on_frames=(lambda n, base=before: on_progress(base + n, work.info.frames)) if on_progress else None,
            )  # fmt: skip
        return finish_video(job, work, manifest, resumed)
    except BaseException:
        if not manifest.segments:  # nothing worth resuming: leave no trace
            shutil.rmtree(work.folder, ignore_errors=True)
        raise


def encode_span(
    work: SegmentWork,
    pipeline: Pipeline,
    first: int,
    stop: int,
    *,
    on_segment: Callable[[int, str, int], None],
    on_frames: Callable[[int], None] | None = None,
) -> None:
    """Decode, upscale and encode segments [first, stop) of `work`, in three overlapping threads.

    Decoding starts at the span's first frame (seeking there); each segment is announced through
    `on_segment` once its encoder closed cleanly, and nothing of an unfinished one is kept."""
    info, dtype = work.info, work.dtype
    w, h = info.width, info.height
    frame_bytes = w * h * 3 * dtype.itemsize
    first_frame = first * work.segment_frames
    count = min(info.frames, stop * work.segment_frames) - first_frame
    seek, skip = work.seek(first_frame)
    decode = [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", *(["-ss", f"{float(seek):.6f}"] if seek is not None else []),
              "-i", str(work.src), "-map", "0:v:0", "-fps_mode", "passthrough", "-frames:v", str(count + skip),
              "-f", "rawvideo", "-pix_fmt", work.raw_fmt, "-"]  # fmt: skip
    decoder = subprocess.Popen(decode, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=frame_bytes * 2)
    stop_event = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=8)
    encoded: queue.Queue = queue.Queue(maxsize=8)
    errors: queue.Queue = queue.Queue()
    writer = _SegmentWriter(work, first, on_segment)
    reader = threading.Thread(target=_reader, args=(decoder, frame_bytes, (h, w, 3), dtype, skip, decoded, stop_event), daemon=True)
    encoder = threading.Thread(target=_writer, args=(writer, encoded, errors), daemon=True)
    reader.start()
    encoder.start()
    done = 0
    per_call = pipeline.frames_per_call
    try:
        finished = False
        while not finished:
            batch: list[np.ndarray] = []
            while len(batch) < per_call:  # take what is ready, waiting only for the first frame
                try:
                    item = decoded.get() if not batch else decoded.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Failed):
                    raise item.exc
                if item is None:
                    finished = True
                    break
                batch.append(np.ascontiguousarray(item))
            if not errors.empty():
                raise errors.get()
            if not batch:
                continue
            try:
                ups = pipeline.run_frames(batch)
            except (MemoryError, RuntimeError) as exc:  # after the Upscaler's own retries: stop, never skip
                raise VideoError(
                    f"{work.src}: frame {first_frame + done + 1} could not be upscaled ({exc}); finished segments are kept for --resume"
                ) from exc
            for up in ups:
                encoded.put(up)
            done += len(batch)
            if on_frames:
                on_frames(done)
        encoded.put(None)
        encoder.join()
        if not errors.empty():
            raise errors.get()
        if decoder.wait() != 0 or done != count:
            reason = (
                _ffmpeg_reason(decoder.stderr.read().decode(errors="replace"))
                if decoder.returncode
                else f"decoded {done} of the {count} frames from frame {first_frame + 1}"
            )
            raise VideoError(f"{work.src}: decoding failed ({reason})")
    except BaseException:
        stop_event.set()
        decoder.kill()
        # Unblock and stop the encoder thread, then drop its unfinished segment.
        while encoder.is_alive():
            try:
                encoded.put(_ABORT, timeout=0.1)
            except queue.Full:
                try:
                    encoded.get_nowait()
                except queue.Empty:
                    pass
            encoder.join(timeout=0.1)
        writer.abort()
        raise
    finally:
        decoder.wait()


def _mux(job: VideoJob, info: VideoInfo, manifest: Manifest, folder: Path, rate: Fraction) -> None:
    """Concatenate the segments with exact durations and copy every other stream of the input."""
    lines = []
    for segment in sorted(manifest.segments, key=lambda s: s["index"]):
        lines.append(f"file '{segment['file']}'")
        lines.append(f"duration {float(Fraction(segment['frames']) / rate):.9f}")
    (folder / "concat.txt").write_text("\n".join(lines) + "\n")
    dst = job.dst
    container = dst.suffix.lower()
    cmd = ["-itsoffset", f"{float(info.start):.9f}", "-f", "concat", "-safe", "0", "-i", str(folder / "concat.txt"), "-i", str(job.src),
           "-map", "0:v", "-map", "1:a?", "-map", "1:s?"]  # fmt: skip
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
    with tempfile.TemporaryDirectory(prefix="esr-preflight-") as folder:
        test = Path(folder) / f"check{container}"
        cmd = ["-v", "error", "-f", "lavfi", "-i", f"color=c=black:s={size[0]}x{size[1]}:r={rate}", "-t", f"{float(2 / rate):.6f}",
               "-i", str(job.src), "-map", "0:v", "-map", "1:a?", "-map", "1:s?", "-t", "0.2", *job.encode.encoder_args(info),
               "-c:a", "copy", "-c:s", "copy", *subtitle_codec(container), str(test)]  # fmt: skip
        try:
            _ffmpeg(cmd, what=str(job.dst), timeout=120)
        except subprocess.TimeoutExpired:
            raise VideoError(f"{job.dst}: the encoder did not finish a test frame in 2 minutes") from None
