"""--hwaccel: whether ffmpeg can decode on the GPU here, and the decoder options that do it.

Kept apart from the hardware encoders (encode.py): probing a truncated input decodes it with these options too.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from .ffmpeg import FFMPEG, _first_line

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
