"""The bundled ffmpeg executable, and running it: every other video module calls ffmpeg through these,
so a failure always reads as one line naming what failed and ffmpeg's most telling complaint.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import imageio_ffmpeg

from ..errors import VideoError

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


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
