"""What every command shares: consoles, one-line errors, device and model options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from ..archs import UnknownArchitecture
from ..device import DeviceError, resolve_device, resolve_precision
from ..download import DownloadError
from ..registry import LoadedModel, RegistryError, load_model
from ..train.config import ConfigError
from ..train.trainer import TrainingError
from ..upscale import ScaleError
from ..weights import WeightsError

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

USER_ERRORS: tuple[type[BaseException], ...] = (
    DeviceError,
    DownloadError,
    RegistryError,
    ScaleError,
    ConfigError,
    TrainingError,
    WeightsError,
    UnknownArchitecture,
    FileNotFoundError,
)


def fail(message: str) -> None:
    stderr.print(f"[bold red]esr: error:[/] {message}", highlight=False, markup=True)


class EsrGroup(click.Group):
    """Turns the library's expected failures into one red line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            fail(str(exc).replace("[", "\\["))
            ctx.exit(1)


class RateColumn(ProgressColumn):
    """Items per second, for tiles and frames (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f}/s" if speed else "", style="progress.data.speed")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def model_option(default: str | None = None) -> Callable:
    return click.option(
        "-m",
        "--model",
        "model_ref",
        default=default,
        required=default is None,
        metavar="MODEL",
        help="Registry name (esr models list), a .pth/.safetensors file, an esr train run folder, or hf://owner/repo/file."
        + (f"  [default: {default}]" if default else ""),
    )


def device_options(f: Callable) -> Callable:
    f = click.option(
        "--precision",
        default="auto",
        show_default=True,
        type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
        help="auto: fp16 on CUDA/MPS, fp32 on CPU.",
    )(f)
    f = click.option(
        "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps (auto: CUDA, then MPS, then CPU)."
    )(f)
    return f


def open_model(model_ref: str, device: str, precision: str, *, scale: int | None = None, progress: bool = True) -> LoadedModel:
    dev = resolve_device(device)
    return load_model(model_ref, scale=scale, device=dev, dtype=resolve_precision(precision, dev), progress=progress)


def tiling_options(f: Callable) -> Callable:
    """--tile, --overlap and --batch, shared by `esr upscale` and `esr video`."""
    f = click.option("--batch", type=click.IntRange(min=1), help="Tiles per forward call. Default: from free memory.")(f)
    f = click.option(
        "--overlap", type=click.IntRange(min=0), help="Context around each tile, in input pixels. Default: the model's receptive field."
    )(f)
    f = click.option("--tile", type=click.IntRange(min=0), help="Tile size in input pixels; 0 = whole image. Default: from free memory.")(f)
    return f


def open_upscaler(
    model_ref: str,
    scale: float | None,
    tile: int | None,
    overlap: int | None,
    batch: int | None,
    device: str,
    precision: str,
    *,
    progress: bool,
):
    """The model variant for `scale`, its scale plan, and an Upscaler with the requested (or automatic) tiling."""
    from ..tiling import TilePlan, Upscaler, auto_plan, default_overlap
    from ..upscale import load_for_scale

    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    loaded, plan = load_for_scale(model_ref, scale, device=dev, dtype=dtype, progress=progress)
    if tile is None:
        auto = auto_plan(loaded.network, loaded.scale, dev, dtype, overlap)
        tiles = TilePlan(auto.tile, auto.overlap, batch or auto.batch)
    else:
        tiles = TilePlan(tile, default_overlap(loaded.network) if overlap is None else overlap, batch or 1)
    return loaded, plan, Upscaler(loaded.network, loaded.scale, tiles), dev, dtype
