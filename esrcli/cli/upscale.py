"""`esr upscale`: images, folders and globs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..paths import FORMATS
from ..registry import DEFAULT_MODEL
from .common import (
    denoise_option,
    device_options,
    interrupt_code,
    model_option,
    name_part,
    open_pipeline,
    ray_options,
    tiling_options,
    tta_option,
)
from .output import Output, counting_columns, output_options
from .watching import check_watch_options, run_watch, watch_options

if TYPE_CHECKING:
    from ..api import Model
    from ..batch import Batch, Outcome, Settings, Task
    from ..jobs import FilesRun, ModelSpec, Ray
    from ..scaling import Pipeline

EXAMPLES = """\b
Examples:
  esr upscale photo.jpg                           photo_x4.jpg beside it, with the embedded model
  esr upscale photo.jpg -m span-tiny              a registry model (downloaded once)
  esr upscale shots/ -o big/ -s 2 -m efdn         every image of a folder, x2
  esr upscale "raw/**/*.png" -r -o out/ -m span   a glob, mirrored under out/
  esr upscale scan.tif -s 3 --tile 256 -v         any factor; -v shows the plan
  esr upscale inbox/ -o big/ --watch              new images as they arrive, until Ctrl-C
  esr upscale anim.gif -o anim.mp4                every frame of an animation, as a video
"""


@click.command(epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (one input) or folder. Default: beside each input.")
@model_option(DEFAULT_MODEL)
@click.option("-s", "--scale", type=float, help="Any factor > 1 (e.g. 2, 3, 4, 1.5, 8). Default: the model's scale.")
@tiling_options
@click.option("-r", "--recursive", is_flag=True, help="Descend into subfolders; outputs mirror the input tree under -o.")
@click.option("--suffix", callback=name_part, help="Added to output names (no folders). Default: _x{scale}.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["same", *FORMATS]),
    default="same",
    show_default=True,
    help="Output format. heic needs pip install 'esrcli[heif]', jxl pip install 'esrcli[jxl]'.",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="Lossy quality, on each encoder's own scale: JPEG, WebP, AVIF (libavif's; 10 and 12-bit AVIF get the same AV1 "
    "quantizer), HEIC (x265's), JPEG XL (libjxl's; 100 is lossless). From 90 up, JPEG, AVIF and HEIC keep full colour "
    "resolution (4:4:4).",
)
@click.option("--skip-existing/--overwrite", default=True, show_default=True, help="Leave existing outputs alone, or replace them.")
@click.option(
    "--alpha",
    "alpha_mode",
    type=click.Choice(["model", "bicubic"]),
    default="model",
    show_default=True,
    help="Draw the edges of transparency with the model or with bicubic resampling; constant, fully opaque and fully transparent areas stay exact either way.",
)
@click.option(
    "--dither/--no-dither",
    default=False,
    show_default=True,
    help="Animated GIF output: dither the upscaled frames onto their shared palette (smoother gradients, more noise).",
)
@click.option("--allow-large", is_flag=True, help="Accept images over the 100-megapixel decompression-bomb limit.")
@device_options
@ray_options
@denoise_option()
@tta_option
@watch_options
@output_options(
    verbose_help="Say which model, scale plan and tiling are used, and each file's --denoise strength.",
    quiet_help="No progress bars.",
    json_help="Print a JSON summary on stdout.",
)
def upscale(
    inputs: tuple[str, ...],
    output: Path | None,
    model_ref: str,
    scale: float | None,
    tile: int | None,
    overlap: int | None,
    batch: int | None,
    recursive: bool,
    suffix: str | None,
    fmt: str,
    quality: int,
    skip_existing: bool,
    alpha_mode: str,
    dither: bool,
    allow_large: bool,
    device: str,
    precision: str,
    ray_address: str | None,
    ray_workers: int | None,
    denoise: float | str | None,
    tta: bool,
    watch: bool,
    poll: float | None,
    settle: float | None,
    ui: Output,
) -> None:
    """Upscale images: files, folders and globs, tiled seamlessly, with nothing lost from the file.

    An animated GIF, WebP or PNG (APNG) has every frame upscaled and is written in the same format
    with each frame's duration, the loop count and transparency kept; -o with a video suffix (.mp4,
    .mkv, .mov, .webm) writes it as a video."""
    from ..batch import Settings
    from ..jobs import ModelSpec
    from ..scaling import format_scale

    folders = _check_before_model(inputs, output, recursive, fmt, watch=watch, poll=poll, settle=settle, ray=bool(ray_address))
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
    settings = Settings(quality=quality, alpha_mode=alpha_mode, overwrite=not skip_existing, allow_large=allow_large, dither=dither)
    suffix = suffix if suffix is not None else f"_x{format_scale(pipeline.plan.target)}"
    if watch:
        _describe_plan(ui, model, pipeline, runs)
        run_watch(
            ui,
            folders,
            out=output,
            model=model,
            pipeline=pipeline,
            settings=settings,
            recursive=recursive,
            suffix=suffix,
            fmt=fmt,
            settle=settle,
            poll=poll,
            say_outcome=_say_outcome,
        )
    spec = ModelSpec(model_ref, device, precision, scale, denoise)
    _run_batch(ui, inputs, output, recursive, suffix, fmt, (model, pipeline, runs), settings, spec, ray_address, ray_workers)


def _check_before_model(
    inputs: tuple[str, ...],
    output: Path | None,
    recursive: bool,
    fmt: str,
    *,
    watch: bool,
    poll: float | None,
    settle: float | None,
    ray: bool,
) -> list[Path] | None:
    """What can be refused before the model opens, in one line: option clashes, a missing format extra,
    watched folders that cannot be watched. Returns those folders with --watch."""
    check_watch_options(watch=watch, poll=poll, settle=settle, ray=ray)
    if fmt != "same":
        from ..imagefile.plugins import require

        require(fmt, f"--format {fmt}")  # a missing extra (esrcli[heif], esrcli[jxl]) is one line, before any work
    if not watch:
        return None
    from ..watch import check_folders

    return check_folders(list(inputs), output, recursive)


def _run_batch(
    ui: Output,
    inputs: tuple[str, ...],
    output: Path | None,
    recursive: bool,
    suffix: str,
    fmt: str,
    opened: tuple[Model, Pipeline, tuple[object, object]],
    settings: Settings,
    spec: ModelSpec,
    ray_address: str | None,
    ray_workers: int | None,
) -> None:
    """Plan the files, run them (here or on Ray), print the result and exit as a batch does."""
    from ..atomic import remove_stale_partials
    from ..batch import plan_batch
    from ..jobs import Ray

    model, pipeline, runs = opened
    jobs = plan_batch(inputs, out=output, recursive=recursive, suffix=suffix, fmt=fmt)
    _describe_plan(ui, model, pipeline, runs)
    for folder in {task.output.parent for task in jobs.tasks}:
        remove_stale_partials(folder)  # left by an esr that was killed outright
    for failure in jobs.failures:
        ui.error(failure.error, in_json=False)  # the JSON document lists them
    ray = Ray(ray_address, ray_workers or 0).open() if ray_address else None  # before any progress bar: a refusal is one line
    run = _run(ui, jobs, pipeline, settings, spec, ray)
    ui.result(lambda: run.summary(model=model.name, pipeline=pipeline), human=lambda: _summarise(ui, jobs, run))
    if run.interrupted is not None:
        raise SystemExit(interrupt_code(run.interrupted))
    if run.of("failed"):
        raise SystemExit(1)


def _describe_plan(ui: Output, model: Model, pipeline: Pipeline, runs: tuple[object, object]) -> None:
    """-v: which model runs where, the scale plan and the tiling, before the first file."""
    if not ui.verbose:
        return
    from ..scaling import format_scale

    runs_on, runs_in = runs
    plan = pipeline.plan
    tiles = pipeline.upscalers[plan.passes[0]].plan
    tiling = "whole image" if tiles.tile == 0 else f"tiles of {tiles.tile} px, overlap {tiles.overlap}, up to {tiles.batch} per call"
    if tiles.whole:
        tiling = f"whole images up to {tiles.whole / 1e6:.2f} MP, larger ones in the fewest tiles that fit (overlap {tiles.overlap})"
    ui.detail(f"model {model.name} ({model.arch}, {model.params:,} params) on {runs_on} in {str(runs_in).removeprefix('torch.')}")
    ensemble = "; x8 self-ensemble (--tta): 8 views of each tile averaged" if pipeline.tta else ""
    ui.detail(f"scale x{format_scale(plan.target)}: {plan.describe()}; {tiling}{ensemble}")


def _run(ui: Output, jobs: Batch, pipeline: Pipeline, settings: Settings, spec: ModelSpec, ray: Ray | None) -> FilesRun:
    """The batch under a files bar and a tiles bar, each outcome said as it is written; the cluster is left at the end."""
    from ..jobs import upscale_files

    with ui.progress(*counting_columns()) as progress:
        files = progress.add_task("files", total=len(jobs.tasks))
        tiles = progress.add_task("tiles", total=None, visible=False)

        def start(task: Task, total: int) -> None:
            progress.update(files, description=f"{task.source.name}")
            progress.reset(tiles, total=total, visible=total > 1, description="  tiles")

        def finished(outcome: Outcome) -> None:  # called from the writer thread, in task order
            _say_outcome(ui, outcome)
            progress.advance(files)

        def on_tile(count: int) -> None:
            progress.advance(tiles, count)

        try:
            return upscale_files(jobs, pipeline, settings, spec, ray=ray, on_start=start, on_tile=on_tile, on_outcome=finished)
        finally:
            if ray is not None:
                ray.close()


def _say_outcome(ui: Output, outcome: Outcome) -> None:
    """A failure always (but in the JSON document with --json); with -v, a skip and the --denoise strength used."""
    from ..denoise import describe

    if outcome.status == "failed":
        ui.note(f"[bold red]failed:[/] {outcome.error}")
    elif outcome.status == "skipped":
        ui.detail(f"skipped: {outcome.error}")
    elif outcome.status == "done" and outcome.denoise and ui.verbose:
        ui.detail(f"{outcome.source}: {describe(outcome.denoise)}")


def _summarise(ui: Output, jobs: Batch, run: FilesRun) -> None:
    """The closing lines on stderr: chatter when all went well, said even with --quiet when something did not."""
    done, skipped, failed = run.of("done"), run.of("skipped"), run.of("failed")
    trouble = bool(failed or run.interrupted)
    say = ui.note if trouble else ui.say
    summary = f"{len(done)} upscaled, {len(skipped)} skipped, {len(failed)} failed in {run.seconds:.1f} s"
    if run.interrupted is not None:
        summary = f"interrupted after {len(run.outcomes) - len(jobs.failures)} of {len(jobs.tasks)} files: {summary}"
    say(summary if not trouble else f"[bold red]{summary}[/]")
    if len(failed) > 1:
        for o in failed:
            say(f"  {o.error}", markup=False)
    if run.cluster and run.cluster.retried:
        say(f"retried on another worker after one died: {', '.join(run.cluster.retried)}", markup=False)
