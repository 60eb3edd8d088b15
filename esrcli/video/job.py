"""What a video run is asked to do (`VideoJob`) and what it answers (`VideoResult`): apart from the run
itself so that the checks and the denoise decision, which the run uses, can take a job too.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..scaling import Pipeline
from .encode import EncodeSettings


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
    hwaccel: str = "none"  # how the input is decoded: none (the CPU), cuda, or auto (cuda where it works); see HWACCELS


@dataclass
class VideoResult:
    frames: int
    resumed_from: int
    rate: Fraction
    size: tuple[int, int]
    missing: Fraction = Fraction(0)  # seconds a truncated input lacked (--allow-truncated)
    denoise: float = 0.0  # the --denoise strength of the whole video
