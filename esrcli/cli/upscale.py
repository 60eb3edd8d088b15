"""`esr upscale`: images, folders and globs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..paths import FORMATS
from ..registry import DEFAULT_MODEL
from .common import denoise_option, device_options, interrupt_code, model_option, name_part, open_pipeline, ray_options, tiling_options
from .output import Output, counting_columns, output_options

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
"""


@click.command(epilog=EXAMPLES)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (one input) or folder. Default: beside each input.")
@model_option(DEFAULT_MODEL)
@click.option("-s", "--scale", type=float, help="Any factor > 1 (e.g. 2, 3, 4, 1.5, 8). Default: the model's scale.")
@tiling_options
@click.option("-r", "--recursive", is_flag=True, help="Descend into subfolders; outputs mirror the input tree under -o.")
@click.option("--suffix", callback=name_part, help="Added to output names (no folders). Default: _x{scale}.")
@click.option("--format", "fmt", type=click.Choice(["same", *FORMATS]), default="same", show_default=True, help="Output format.")
@click.option("--quality", type=click.IntRange(1, 100), default=95, show_default=True, help="JPEG/WebP quality.")
@click.option("--skip-existing/--overwrite", default=True, show_default=True, help="Leave existing outputs alone, or replace them.")
@click.option(
    "--alpha",
    "alpha_mode",
    type=click.Choice(["model", "bicubic"]),
    default="model",
    show_default=True,
    help="Draw the edges of transparency with the model or with bicubic resampling; constant, fully opaque and fully transparent areas stay exact either way.",
)
@click.option("--allow-large", is_flag=True, help="Accept images over the 100-megapixel decompression-bomb limit.")
@device_options
@ray_options
@denoise_option()
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
    allow_large: bool,
    device: str,
    precision: str,
    ray_address: str | None,
    ray_workers: int | None,
    denoise: float | str | None,
    ui: Output,
) -> None:
    """Upscale images: files, folders and globs, tiled seamlessly, with nothing lost from the file."""
    from ..atomic import remove_stale_partials
    from ..batch import Settings, plan_batch
    from ..jobs import ModelSpec, Ray
    from ..scaling import format_scale

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
    )
    settings = Settings(quality=quality, alpha_mode=alpha_mode, overwrite=not skip_existing, allow_large=allow_large)
    suffix = suffix if suffix is not None else f"_x{format_scale(pipeline.plan.target)}"
    jobs = plan_batch(inputs, out=output, recursive=recursive, suffix=suffix, fmt=fmt)
    _describe_plan(ui, model, pipeline, runs)
    for folder in {task.output.parent for task in jobs.tasks}:
        remove_stale_partials(folder)  # left by an esr that was killed outright
    for failure in jobs.failures:
        ui.error(failure.error, in_json=False)  # the JSON document lists them
    ray = Ray(ray_address, ray_workers or 0).open() if ray_address else None  # before any progress bar: a refusal is one line
    run = _run(ui, jobs, pipeline, settings, ModelSpec(model_ref, device, precision, scale, denoise), ray)
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
    ui.detail(f"scale x{format_scale(plan.target)}: {plan.describe()}; {tiling}")


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
