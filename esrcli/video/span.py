"""Frames through the model: a decoder process, the model, and an encoder process per segment, run by the
engine's threads (`encode_span`); the unit of work a local run or a Ray worker does.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction

import numpy as np

from ..engine import Stages, run_stages
from ..errors import VideoError
from ..scaling import Pipeline
from ..tiling import HostCopy
from .encode import _encoder_reason
from .ffmpeg import FFMPEG, _ffmpeg_reason
from .hwaccel import _hwaccel_args
from .manifest import SegmentWork


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
