"""Refusing, before any frame is upscaled, what cannot work: an output that cannot be written, an encoder
or a GPU that does not open here, settings or a container that fail on a test encode.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

from ..errors import VideoError
from .encode import EncodeSettings, _encoder_reason, hardware, subtitle_codec
from .ffmpeg import _ffmpeg
from .hwaccel import _hwaccel_problem, hwaccel_failure
from .job import VideoJob
from .probe import VideoInfo


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
