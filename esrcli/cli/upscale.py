"""`esr upscale`: images, folders and globs."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..paths import FORMATS
from ..registry import DEFAULT_MODEL
from .common import (
    RateColumn,
    denoise_option,
    device_options,
    fail,
    interrupt_code,
    model_option,
    name_part,
    open_pipeline,
    print_json,
    ray_options,
    stderr,
    tiling_options,
)

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
@click.option("-v", "--verbose", is_flag=True, help="Say which model, scale plan and tiling are used, and each file's --denoise strength.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def upscale(
    inputs,
    output,
    model_ref,
    scale,
    tile,
    overlap,
    batch,
    recursive,
    suffix,
    fmt,
    quality,
    skip_existing,
    alpha_mode,
    allow_large,
    device,
    precision,
    ray_address,
    ray_workers,
    denoise,
    verbose,
    quiet,
    as_json,
) -> None:
    """Upscale images: files, folders and globs, tiled seamlessly, with nothing lost from the file."""
    from ..atomic import remove_stale_partials
    from ..batch import Settings, plan_batch
    from ..denoise import describe
    from ..jobs import ModelSpec, Ray, upscale_files
    from ..scaling import format_scale

    model, pipeline, (runs_on, runs_in) = open_pipeline(
        model_ref,
        device,
        precision,
        scale=scale,
        tile=tile,
        overlap=overlap,
        batch=batch,
        ray=bool(ray_address),
        progress=not (quiet or as_json),
        denoise=denoise,
    )
    plan = pipeline.plan
    settings = Settings(quality=quality, alpha_mode=alpha_mode, overwrite=not skip_existing, allow_large=allow_large)
    jobs = plan_batch(
        inputs, out=output, recursive=recursive, suffix=suffix if suffix is not None else f"_x{format_scale(plan.target)}", fmt=fmt
    )
    if verbose and not as_json:
        tiles = pipeline.upscalers[plan.passes[0]].plan
        tiling = "whole image" if tiles.tile == 0 else f"tiles of {tiles.tile} px, overlap {tiles.overlap}, up to {tiles.batch} per call"
        if tiles.whole:
            tiling = f"whole images up to {tiles.whole / 1e6:.2f} MP, larger ones in the fewest tiles that fit (overlap {tiles.overlap})"
        stderr.print(
            f"model {model.name} ({model.arch}, {model.params:,} params) on {runs_on} in {str(runs_in).removeprefix('torch.')}",
            highlight=False,
        )
        stderr.print(f"scale x{format_scale(plan.target)}: {plan.describe()}; {tiling}", highlight=False)
    for folder in {task.output.parent for task in jobs.tasks}:
        remove_stale_partials(folder)  # left by an esr that was killed outright
    if not as_json:
        for failure in jobs.failures:
            fail(failure.error)
    ray = Ray(ray_address, ray_workers or 0).open() if ray_address else None  # before any progress bar: a refusal is one line
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, disable=quiet or as_json, transient=True) as progress:
        files = progress.add_task("files", total=len(jobs.tasks))
        tiles_task = progress.add_task("tiles", total=None, visible=False)

        def start(task, total: int) -> None:
            progress.update(files, description=f"{task.source.name}")
            progress.reset(tiles_task, total=total, visible=total > 1, description="  tiles")

        def finished(outcome) -> None:  # called from the writer thread, in task order
            if outcome.status == "failed" and not as_json:
                progress.console.print(f"[bold red]failed:[/] {outcome.error}", highlight=False)
            elif outcome.status == "skipped" and verbose and not as_json:
                progress.console.print(f"skipped: {outcome.error}", highlight=False)
            elif outcome.status == "done" and verbose and outcome.denoise and not as_json:
                progress.console.print(f"{outcome.source}: {describe(outcome.denoise)}", highlight=False)
            progress.advance(files)

        try:
            run = upscale_files(
                jobs,
                pipeline,
                settings,
                ModelSpec(model_ref, device, precision, scale, denoise),
                ray=ray,
                on_start=start,
                on_tile=lambda n: progress.advance(tiles_task, n),
                on_outcome=finished,
            )
        finally:
            if ray is not None:
                ray.close()

    done, skipped, failed = run.of("done"), run.of("skipped"), run.of("failed")
    if as_json:
        print_json(run.summary(model=model.name, pipeline=pipeline))
    elif not quiet or failed or run.interrupted:
        summary = f"{len(done)} upscaled, {len(skipped)} skipped, {len(failed)} failed in {run.seconds:.1f} s"
        if run.interrupted is not None:
            summary = f"interrupted after {len(run.outcomes) - len(jobs.failures)} of {len(jobs.tasks)} files: {summary}"
        stderr.print(summary if not (failed or run.interrupted) else f"[bold red]{summary}[/]", highlight=False)
        if len(failed) > 1:
            for o in failed:
                stderr.print(f"  {o.error}", highlight=False, markup=False)
        if run.cluster and run.cluster.retried:
            stderr.print(f"retried on another worker after one died: {', '.join(run.cluster.retried)}", highlight=False, markup=False)
    if run.interrupted is not None:
        raise SystemExit(interrupt_code(run.interrupted))
    if failed:
        raise SystemExit(1)
