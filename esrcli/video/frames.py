"""Frames with their own durations (an upscaled animated GIF, WebP or APNG) encoded as a video file.

The frames go to the bundled ffmpeg through a pipe at a constant rate: one tick is the greatest
common divisor of the durations (at least 10 ms), and each frame is repeated for as many ticks as
its duration holds, so every frame shows exactly as long as it did. Transparency is flattened
onto black (video holds none); odd sizes are padded by one pixel for 4:2:0 chroma. Written atomically.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..errors import VideoError
from .encode import EncodeSettings
from .ffmpeg import FFMPEG, _ffmpeg_reason

_MIN_TICK_MS = 10
_DEFAULT_MS = 100  # what browsers show a GIF frame of no duration for


def frame_ticks(durations: Sequence[int]) -> tuple[int, list[int]]:
    """(tick in ms, ticks per frame): the constant rate that shows every duration exactly (to 10 ms)."""
    shown = [d if d > 0 else _DEFAULT_MS for d in durations]
    tick = max(_MIN_TICK_MS, math.gcd(*shown))
    return tick, [max(1, round(d / tick)) for d in shown]


def _flatten(frame: np.ndarray) -> np.ndarray:
    """RGB over black where the frame has transparency."""
    if frame.shape[2] == 4:
        alpha = frame[..., 3:].astype(np.uint16)
        return np.ascontiguousarray(((frame[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8))
    return np.ascontiguousarray(frame[..., :3])


def write_frames_video(frames: Sequence[np.ndarray], durations: Sequence[int], path: Path, *, crf: int = 18) -> Path:
    """Encode HxWx3 (or x4, alpha dropped) uint8 frames, each shown for its duration in ms."""
    if not frames:
        raise VideoError(f"{path}: no frames to encode")
    h, w = frames[0].shape[:2]
    tick, repeats = frame_ticks(durations)
    codec = "libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264"
    settings = EncodeSettings(codec=codec, crf=crf if codec == "libx264" else 30)
    rate = Fraction(1000, tick)
    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-framerate", str(rate), "-i", "-"]
    args += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *settings.encoder_args()]
    if codec == "libvpx-vp9":
        args += ["-b:v", "0"]
    with atomic_write(path, keep_suffix=True) as tmp:
        proc = subprocess.Popen([*args, str(tmp)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            for frame, count in zip(frames, repeats):
                data = _flatten(frame).tobytes()
                for _ in range(count):
                    proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise VideoError(f"{path}: cannot encode ({_ffmpeg_reason(stderr)})")
    return path
