"""`esr video`: upscale a video end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from ..registry import DEFAULT_MODEL
from .common import (
    FiniteFloat,
    denoise_option,
    device_options,
    interrupt_code,
    model_option,
    open_pipeline,
    ray_options,
    tiling_options,
    tta_option,
)
from .output import Output, counting_columns, output_options

if TYPE_CHECKING:
    from ..api import Model
    from ..jobs import ModelSpec, Ray
    from ..scaling import Pipeline
    from ..video import EncodeSettings, VideoJob, VideoResult

HWACCEL_CHOICES = ["none", "auto", "cuda"]  # esrcli.video.HWACCELS, without importing it (and torch) for --help

EXAMPLES = """\b
Examples:
  esr video in.mp4 out.mp4                          x4 with the embedded model, libx264 CRF 18
  esr video in.mkv out.mkv -m span -s 2 --crf 16    every audio/subtitle track and chapter kept
  esr video in.mp4 out.mp4 --codec libx265 --pix-fmt yuv420p10le --preset slow
  esr video in.mp4 out.mp4 --resume                 continue after Ctrl-C, a kill or a crash
  esr video in.mp4 out.mp4 --codec hevc_nvenc --crf 20 --hwaccel auto
                                                    NVIDIA: encode on the GPU, and decode there where it can
"""


def _line(exc: Exception) -> str:
    """The error as one line of plain text: a file name like "[draft] clip.mp4" is not Rich markup."""
    return escape(" ".join(str(exc).split()))


def _rate(value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"'{value}' is not a frame rate (e.g. 24, 29.97 or 30000/1001)") from None
    if rate <= 0:
        raise click.BadParameter("the frame rate must be positive")
    return rate


@click.command(epilog=EXAMPLES)
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@model_option(DEFAULT_MODEL)
@click.option("-s", "--scale", type=float, help="Any factor > 1. Default: the model's scale.")
@tiling_options
@click.option(
    "--codec",
    default="libx264",
    show_default=True,
    help="Any ffmpeg video encoder: libx264, libx265, libvpx-vp9, ffv1..., or a hardware one: h264_nvenc, hevc_nvenc, av1_nvenc "
    "(NVIDIA), *_qsv (Intel), *_vaapi (Linux VAAPI), *_amf (AMD), *_vulkan.",
)
@click.option(
    "--crf",
    type=int,
    help="Constant-quality factor, lower is better: 0-51 for libx264/libx265, 0-63 for libvpx-vp9 and AV1, 4-63 for libvpx. "
    "Hardware encoders take it as their own option: NVENC -cq (1-51, AV1 1-63), QSV -global_quality (1-51), VAAPI/AMF/Vulkan "
    "constant QP (to 51, or 255 for AV1/VP9). -1 leaves rate control to the encoder.  [default: 18; 72 on 0-255 scales]",
)
@click.option("--preset", help="Encoder preset: e.g. slow (x264, x265, QSV), p1-p7 (NVENC), speed/balanced/quality (AMF).")
@click.option("--pix-fmt", default="yuv420p", show_default=True, help="Output pixel format, e.g. yuv420p10le for 10 bits.")
@click.option("--fps", help="Output frame rate (every frame is kept; the duration follows). Default: the input's exact rate.")
@click.option(
    "--ffmpeg-arg",
    "ffmpeg_args",
    multiple=True,
    help="Extra encoder argument, passed as is (repeatable): --ffmpeg-arg=-tune --ffmpeg-arg=film.",
)
@click.option(
    "--segment",
    "segment_seconds",
    type=FiniteFloat(min=0.5, max=3600),
    default=10.0,
    show_default=True,
    help="Seconds per resumable segment.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same input and settings.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (or an interrupted run's parts).")
@click.option(
    "--hwaccel",
    type=click.Choice(HWACCEL_CHOICES),
    default="none",
    show_default=True,
    help="Decode the input on the GPU: cuda (NVIDIA; fails at once where it cannot), or auto: cuda where it works, else the CPU. "
    "The frames are the same.",
)
@click.option(
    "--allow-truncated",
    is_flag=True,
    help="Upscale the frames a truncated input holds (its container announces more) instead of refusing it.",
)
@device_options
@ray_options
@denoise_option()
@tta_option
@output_options(
    verbose_help="Print the input's size, frames, timing and streams, the model, the scale plan and --denoise.",
    quiet_help="No progress bar.",
    json_help="Print a JSON summary on stdout.",
)
def video(
    src: Path,
    dst: Path,
    model_ref: str,
    scale: float | None,
    tile: int | None,
    overlap: int | None,
    batch: int | None,
    codec: str,
    crf: int | None,
    preset: str | None,
    pix_fmt: str,
    fps: str | None,
    ffmpeg_args: tuple[str, ...],
    segment_seconds: float,
    resume: bool,
    overwrite: bool,
    allow_truncated: bool,
    hwaccel: str,
    device: str,
    precision: str,
    ray_address: str | None,
    ray_workers: int | None,
    denoise: float | str | None,
    tta: bool,
    ui: Output,
) -> None:
    """Upscale a video: exact frame count and rate, every stream kept, resumable."""
    from ..jobs import ModelSpec, Ray, video_summary
    from ..video import VideoJob

    started = time.perf_counter()
    encode = _encode_settings(codec, crf, preset, pix_fmt, fps, ffmpeg_args)
    _check_before_model(ui, src, dst, encode, hwaccel, overwrite)
    model, pipeline, runs = open_pipeline(
        model_ref,
        device,
        precision,
        scale=scale,
        tile=tile,
        overlap=overlap,
        batch=batch,
        ray=bool(ray_address),
        progress=ui.show_progress,
        denoise=denoise,
        tta=tta,
    )
    job = VideoJob(
        src,
        dst,
        pipeline,
        encode,
        model_key=f"{model.name}:{model.source}:{runs[1]}",
        segment_seconds=segment_seconds,
        resume=resume,
        overwrite=overwrite,
        allow_truncated=allow_truncated,
        hwaccel=hwaccel,
    )
    ray = Ray(ray_address, ray_workers or 0).open() if ray_address else None  # before any progress bar: a refusal is one line
    spec = ModelSpec(model_ref, device, precision, scale, denoise)
    result, cluster = _run(ui, job, spec, ray, on_info=_describer(ui, src, model, pipeline, runs))
    seconds = time.perf_counter() - started
    _say_after(ui, src, result, cluster, pipeline)
    ui.result(
        lambda: video_summary(job, result, model=model.name, seconds=seconds, cluster=cluster),
        human=lambda: ui.say(
            f"{dst}: {result.frames} frames at {result.rate} fps, {result.size[0]}x{result.size[1]}, in {seconds:.1f} s", markup=False
        ),
    )


def _encode_settings(
    codec: str, crf: int | None, preset: str | None, pix_fmt: str, fps: str | None, extra: tuple[str, ...]
) -> EncodeSettings:
    """The encoder options; --crf's default is the codec's, and -1 leaves rate control to the encoder."""
    from ..video import EncodeSettings, default_crf

    crf = default_crf(codec) if crf is None else None if crf < 0 else crf
    return EncodeSettings(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, fps=_rate(fps), extra=list(extra))


def _check_before_model(ui: Output, src: Path, dst: Path, encode: EncodeSettings, hwaccel: str, overwrite: bool) -> None:
    """An output that cannot be made, a --crf the encoder cannot take, hardware that is not there: one line
    (in every mode) and exit code 1, before the model loads."""
    from ..video import VideoError, check_hardware, check_output

    try:
        check_output(src, dst, overwrite=overwrite)
        encode.check(dst)
        check_hardware(encode, hwaccel, src, dst)
    except VideoError as exc:
        ui.error(_line(exc))
        raise SystemExit(1) from None


def _describer(ui: Output, src: Path, model: Model, pipeline: Pipeline, runs: tuple[object, object]) -> Callable[[Any], None]:
    """-v, once the input is probed: its size, frames, timing and streams, and the model and scale plan."""
    from ..scaling import format_scale

    def on_info(info: Any) -> None:
        if not ui.verbose:
            return
        runs_on, runs_in = runs
        plan = pipeline.plan
        timing = f"{info.rate} fps" + (" (variable: output at this average rate)" if info.vfr else "")
        kinds = ", ".join(f"{s.kind} {s.codec}" for s in info.streams)
        ui.detail(f"{src}: {info.width}x{info.height}, {info.frames} frames, {timing}; streams: {kinds}", markup=False)
        ui.detail(
            f"model {model.name} on {runs_on} ({str(runs_in).removeprefix('torch.')}), x{format_scale(plan.target)}: {plan.describe()}"
            + ("; x8 self-ensemble (--tta)" if pipeline.tta else ""),
            markup=False,
        )

    return on_info


def _run(ui: Output, job: VideoJob, spec: ModelSpec, ray: Ray | None, on_info: Callable[[Any], None]) -> tuple[VideoResult, Any]:
    """The frames under one bar. An interrupt or a failure is one line (with what was kept) and its exit code;
    the cluster is left either way."""
    from ..jobs import upscale_one_video
    from ..video import VideoError, parts_dir

    with ui.progress(*counting_columns()) as progress:
        task = progress.add_task("frames", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            return upscale_one_video(job, spec, ray=ray, on_progress=on_progress, on_info=on_info)
        except KeyboardInterrupt as exc:
            progress.stop()
            folder = parts_dir(job.dst)
            ui.error(
                f"interrupted: finished segments are kept in {escape(str(folder))}; run the same command with --resume to continue"
                if folder.is_dir()
                else "interrupted before any segment was finished; nothing is kept"
            )
            raise SystemExit(interrupt_code(exc)) from None
        except VideoError as exc:
            progress.stop()
            ui.error(_line(exc))
            raise SystemExit(1) from None
        finally:
            if ray is not None:
                ray.close()


def _say_after(ui: Output, src: Path, result: VideoResult, cluster: Any, pipeline: Pipeline) -> None:
    """Before the closing line: -v's --denoise strength, a worker retried, and a truncated input (even with --quiet)."""
    from ..video import DENOISE_SAMPLES

    if ui.verbose and (result.denoise or pipeline.choose is not None):
        how = f"auto, from {DENOISE_SAMPLES} frames" if pipeline.choose is not None else "as asked"
        ui.detail(f"{src}: denoise {result.denoise:g} ({how})", markup=False)
    if cluster and cluster.retried:
        ui.note(f"retried on another worker after one died: {', '.join(cluster.retried)}")
    if result.missing:
        ui.warning(f"{src} is truncated: {float(result.missing):.3f} s of its video are missing from the output")
