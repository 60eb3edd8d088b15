"""--denoise auto for a video: one strength for the whole of it, chosen from a sample of its frames, so that
every segment (and a resumed run, and every Ray worker) uses the same.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np

from .ffmpeg import FFMPEG
from .job import VideoJob
from .probe import VideoInfo, probe

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
