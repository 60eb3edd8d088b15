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

One module per concern, each importing only those before it: `ffmpeg` (running the bundled ffmpeg),
`hwaccel` (decoding on the GPU), `probe` (streams and timing), `encode` (encoder settings), `manifest`
(the parts kept for --resume), `job` (what a run is asked and answers), `checks` (refusals before any
work), `span` (frames through decoder, model and encoders), `denoise` (--denoise auto) and `run` (the
whole run). This package re-exports their public names, which the rest of esr imports from here.
"""

from __future__ import annotations

from ..errors import VideoError as VideoError
from .checks import check_hardware, check_output, preflight
from .denoise import DENOISE_SAMPLES, decide_denoise, sample_frames
from .encode import (
    CHROMA_SUBSAMPLED,
    HARDWARE,
    OPEN_FAILED,
    QUALITY,
    SCALE_MATRICES,
    UPLOAD_FORMATS,
    EncodeSettings,
    Hardware,
    Quality,
    default_crf,
    encoder_options,
    hardware,
    quality_args,
    subtitle_codec,
)
from .ffmpeg import FFMPEG
from .hwaccel import HWACCELS, hwaccel_failure
from .job import VideoJob, VideoResult
from .manifest import Manifest, SegmentWork, fingerprint, missing_runs, parts_dir, resume_hint
from .probe import COLOUR_NAME, COMMON_RATES, MAX_REORDER, NOPTS, STREAM_LINE, Stream, VideoInfo, probe
from .run import finish_video, prepare_video, upscale_video
from .span import decoder_args, encode_span

__all__ = [
    "CHROMA_SUBSAMPLED",
    "COLOUR_NAME",
    "COMMON_RATES",
    "DENOISE_SAMPLES",
    "FFMPEG",
    "HARDWARE",
    "HWACCELS",
    "MAX_REORDER",
    "NOPTS",
    "OPEN_FAILED",
    "QUALITY",
    "SCALE_MATRICES",
    "STREAM_LINE",
    "UPLOAD_FORMATS",
    "EncodeSettings",
    "Hardware",
    "Manifest",
    "Quality",
    "SegmentWork",
    "Stream",
    "VideoError",
    "VideoInfo",
    "VideoJob",
    "VideoResult",
    "check_hardware",
    "check_output",
    "decide_denoise",
    "decoder_args",
    "default_crf",
    "encode_span",
    "encoder_options",
    "finish_video",
    "fingerprint",
    "hardware",
    "hwaccel_failure",
    "missing_runs",
    "parts_dir",
    "prepare_video",
    "preflight",
    "probe",
    "quality_args",
    "resume_hint",
    "sample_frames",
    "subtitle_codec",
    "upscale_video",
]
