"""`esr video`: upscale a video end to end."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..registry import DEFAULT_MODEL
from .common import (
    FiniteFloat,
    RateColumn,
    device_options,
    fail,
    interrupt_code,
    model_option,
    open_model,
    print_json,
    ray_options,
    stderr,
    tiling_options,
    worker_spec,
)

EXAMPLES = """\b
Examples:
  esr video in.mp4 out.mp4                          x4 with the embedded model, libx264 CRF 18
  esr video in.mkv out.mkv -m span -s 2 --crf 16    every audio/subtitle track and chapter kept
  esr video in.mp4 out.mp4 --codec libx265 --pix-fmt yuv420p10le --preset slow
  esr video in.mp4 out.mp4 --resume                 continue after Ctrl-C, a kill or a crash
"""


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
@click.option("--codec", default="libx264", show_default=True, help="Any ffmpeg video encoder: libx264, libx265, libvpx-vp9, ffv1...")
@click.option(
    "--crf", type=int, default=18, show_default=True, help="Constant-quality factor (ignored by codecs without one: pass --crf -1)."
)
@click.option("--preset", help="Encoder preset, e.g. slow.")
@click.option("--pix-fmt", default="yuv420p", show_default=True, help="Output pixel format, e.g. yuv420p10le for 10 bits.")
@click.option("--fps", help="Output frame rate (every frame is kept; the duration follows). Default: the input's exact rate.")
@click.option(
    "--ffmpeg-arg",
    "ffmpeg_args",
    multiple=True,
    help="Extra encoder argument, passed as is (repeatable): --ffmpeg-arg=-tune --ffmpeg-arg=film.",
)
@click.option(
    "--segment", "segment_seconds", type=FiniteFloat(min=0.5, max=3600), default=10.0, show_default=True, help="Seconds per resumable segment."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same input and settings.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (or an interrupted run's parts).")
@click.option(
    "--allow-truncated",
    is_flag=True,
    help="Upscale the frames a truncated input holds (its container announces more) instead of refusing it.",
)
@device_options
@ray_options
@click.option("-v", "--verbose", is_flag=True, help="Print the input's size, frames, timing and streams, the model and the scale plan.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def video(
    src,
    dst,
    model_ref,
    scale,
    tile,
    overlap,
    batch,
    codec,
    crf,
    preset,
    pix_fmt,
    fps,
    ffmpeg_args,
    segment_seconds,
    resume,
    overwrite,
    allow_truncated,
    device,
    precision,
    ray_address,
    ray_workers,
    verbose,
    quiet,
    as_json,
) -> None:
    """Upscale a video: exact frame count and rate, every stream kept, resumable."""
    from ..scaling import format_scale
    from ..video import EncodeSettings, VideoError, VideoJob, upscale_video

    started = time.perf_counter()
    model = open_model(model_ref, device, precision, scale=scale, progress=not (quiet or as_json))
    pipeline = model.pipeline(scale, tile=tile, overlap=overlap, batch=batch)
    plan = pipeline.plan
    encode = EncodeSettings(
        codec=codec,
        crf=None if crf is not None and crf < 0 else crf,
        preset=preset,
        pix_fmt=pix_fmt,
        fps=_rate(fps),
        extra=list(ffmpeg_args),
    )
    job = VideoJob(src, dst, pipeline, encode, model_key=f"{model.name}:{model.source}:{model.dtype}",
                   segment_seconds=segment_seconds, resume=resume, overwrite=overwrite,
                   allow_truncated=allow_truncated)  # fmt: skip
    if ray_address:
        from .. import raydist

        ray = raydist.connect(ray_address)  # before any progress bar: a refusal is one line
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=quiet or as_json, transient=True) as progress:
        task = progress.add_task("frames", total=None)

        def on_info(info) -> None:
            if verbose and not as_json:
                timing = f"{info.rate} fps" + (" (variable: output at this average rate)" if info.vfr else "")
                kinds = ", ".join(f"{s.kind} {s.codec}" for s in info.streams)
                progress.console.print(
                    f"{src}: {info.width}x{info.height}, {info.frames} frames, {timing}; streams: {kinds}", highlight=False
                )
                progress.console.print(
                    f"model {model.name} on {model.device} ({str(model.dtype).removeprefix('torch.')}), x{format_scale(plan.target)}: {plan.describe()}",
                    highlight=False,
                )

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        cluster = None
        try:
            if ray_address:
                spec = worker_spec(model_ref, device, precision, scale, tile, overlap, batch)
                result, cluster = raydist.upscale_video(ray, job, spec, workers=ray_workers or 0, on_progress=on_progress, on_info=on_info)
            else:
                result = upscale_video(job, on_progress=on_progress, on_info=on_info)
        except KeyboardInterrupt as exc:
            progress.stop()
            fail("interrupted: finished segments are kept; run the same command with --resume to continue")
            raise SystemExit(interrupt_code(exc)) from None
        except VideoError as exc:
            progress.stop()
            fail(str(exc))
            raise SystemExit(1) from None
    if ray_address:
        raydist.disconnect(ray)
    seconds = time.perf_counter() - started
    summary = {
        "input": str(src),
        "output": str(dst),
        "model": model.name,
        "scale": plan.target,
        "frames": result.frames,
        "resumed_from": result.resumed_from,
        "rate": str(result.rate),
        "truncated_input_missing_seconds": round(float(result.missing), 3),
        "size": list(result.size),
        "seconds": round(seconds, 3),
        "fps": round((result.frames - result.resumed_from) / seconds, 3) if seconds else None,
        **({"ray": {"workers": cluster.workers, "gpus": cluster.gpus, "retried": cluster.retried}} if cluster else {}),
    }
    if cluster and cluster.retried and not as_json:
        stderr.print(f"retried on another worker after one died: {', '.join(cluster.retried)}", highlight=False)
    if result.missing and not as_json:
        stderr.print(f"warning: {src} is truncated: {float(result.missing):.3f} s of its video are missing from the output", highlight=False)
    if as_json:
        print_json(summary)
    elif not quiet:
        stderr.print(
            f"{dst}: {result.frames} frames at {result.rate} fps, {result.size[0]}x{result.size[1]}, in {seconds:.1f} s", highlight=False
        )
