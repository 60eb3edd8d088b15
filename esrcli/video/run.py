"""A whole video run: the checks, the probe and the manifest (`prepare_video`), the segments still to
encode (`encode_span`), and the final mux (`finish_video`); `upscale_video` ties them together.

Frames are decoded to raw RGB on a pipe (never written as images), upscaled, and encoded into
segments of a few seconds each by their own ffmpeg process; decoding, inference and encoding
run in separate threads joined by bounded queues. A manifest, keyed on the input's content and
the settings, records finished segments, so `--resume` continues after Ctrl-C, a kill or a
crash. The final step concatenates the segments with exact durations and copies every audio
and subtitle track, the chapters and the metadata of the input without re-encoding.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from ..atomic import atomic_write
from ..errors import VideoError
from ..scaling import target_size
from .checks import check_output, preflight
from .denoise import decide_denoise
from .encode import CHROMA_SUBSAMPLED, subtitle_codec
from .ffmpeg import _ffmpeg
from .hwaccel import HWACCELS
from .job import VideoJob, VideoResult
from .manifest import Manifest, SegmentWork, fingerprint, missing_runs, parts_dir, resume_hint
from .probe import VideoInfo, _decoded_times, probe
from .span import encode_span


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
        "model": job.model_key + ("+tta" if job.pipeline.tta else ""),  # a run resumes only with the --tta it began with
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


def _problem(dst: Path, exc: BaseException) -> str:
    """The error's line: an OSError here is a write that failed (a full disk), never a traceback."""
    return str(exc) if isinstance(exc, VideoError) else f"{dst}: cannot write ({getattr(exc, 'strerror', None) or exc})"


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
