"""What every command shares: one-line errors and interrupts, device, model and tiling options.

What a command prints, and where, is output.py's."""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from ..errors import EsrError, EsrWarning
from .output import fail, stderr

if TYPE_CHECKING:  # the heavy modules (torch, numpy) load only when a command does real work
    from ..api import Model


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so every command cleans up the same way for both."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt (Terminated) in the main thread while a command runs.

    SIGINT is reset to Python's handler even when the parent ignored it (background jobs of scripts,
    nohup), so an interrupt always stops esr cleanly instead of being lost."""
    old_term = signal.signal(signal.SIGTERM, _terminate)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def interrupt_code(exc: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal number."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


class EsrGroup(click.Group):
    """Turns the library's expected failures into one red line and exit code 1, and an interrupt into
    exit code 130 (143 for SIGTERM), never a traceback.

    An error esr did not foresee is still one line (its type and text, and how to see the traceback
    with ESR_DEBUG=1): it is a defect to fix, but not one a user should have to read Python for."""

    def invoke(self, ctx: click.Context) -> Any:
        with interruptible(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except EsrError as exc:
                fail(_one_line(exc))
                ctx.exit(1)
            except KeyboardInterrupt as exc:
                fail("interrupted")
                ctx.exit(interrupt_code(exc))
            except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
                raise
            except MemoryError:
                fail("out of memory: try a smaller --tile, --batch or input")
                ctx.exit(1)
            except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
                if os.environ.get("ESR_DEBUG"):
                    raise
                fail(
                    f"unexpected {type(exc).__name__}: {_one_line(exc)} (a defect in esr: please report it; ESR_DEBUG=1 shows the traceback)"
                )
                ctx.exit(1)


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
) -> None:
    """The library's EsrWarnings as one line, like errors; anything else as Python shows it."""
    if issubclass(category, EsrWarning):
        stderr.print(f"[yellow]esr: warning:[/] {_one_line(Exception(str(message)))}", highlight=False)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace("[", "\\[")


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (click's ranges let them through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        number = super().convert(value, param, ctx)
        if number is not None and not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


FINITE_SECONDS = FiniteFloat(min=0)


def name_part(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback for options that become part of a file name: refused before any work."""
    from ..paths import OutputNameError, check_name_part

    if value is not None:
        try:
            check_name_part(value, f"--{param.name}")
        except OutputNameError as exc:
            raise click.BadParameter(str(exc).split(": ", 1)[1], ctx, param) from None
    return value


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


def open_model(
    model_ref: str,
    device: str,
    precision: str,
    *,
    scale: float | None = None,
    denoise: float | str | None = None,
    progress: bool = True,
    tta: bool = False,
) -> Model:
    """The API's Model for -m, --device, --precision, --denoise and --tta: the CLI adds nothing but progress bars."""
    from ..api import Model

    return Model(model_ref, scale=scale, device=device, precision=precision, denoise=denoise, progress=progress, tta=tta)


def open_pipeline(
    model_ref: str, device: str, precision: str, *, scale, tile, overlap, batch, ray: bool, progress: bool, denoise=None, tta: bool = False
):
    """The model and the pipeline -s, --tile, --overlap and --batch ask for. With --ray the model is opened
    on this machine's CPU only to plan: the work, and the device memory, are the workers'; the plan is
    made for the device this machine would use, so the pixels equal a local run's. Also returns that
    device and precision: where the work runs, as a local run would."""
    if not ray:
        model = open_model(model_ref, device, precision, scale=scale, denoise=denoise, progress=progress, tta=tta)
        return model, model.pipeline(scale, tile=tile, overlap=overlap, batch=batch), (model.device, model.dtype)
    from ..device import resolve_device, resolve_precision
    from ..raydist import check_device

    check_device(device)
    target = resolve_device(device)
    plan_for = (target, resolve_precision(precision, target))
    model = open_model(model_ref, "cpu", "fp32", scale=scale, denoise=denoise, progress=progress, tta=tta)
    return model, model.pipeline(scale, tile=tile, overlap=overlap, batch=batch, plan_for=plan_for), plan_for


def ray_options(f: Callable) -> Callable:
    """--ray and --ray-workers, shared by `esr upscale` and `esr video`."""
    f = click.option(
        "--ray-workers",
        type=click.IntRange(min=1),
        help="CPU workers on the cluster (default: one per N CPUs, N being the threads a local run uses, so the pixels equal "
        "a local run's; with GPUs, one per GPU).",
    )(f)
    f = click.option(
        "--ray",
        "ray_address",
        metavar="ADDRESS",
        help="Spread the work over a Ray cluster: auto, HOST:PORT, ray://HOST:PORT, or local (a cluster for this run). "
        'Needs pip install "esrcli[ray]" and a filesystem the workers share.',
    )(f)
    return f


def _denoise(ctx: click.Context, param: click.Parameter, value: str | None) -> float | str | None:
    from ..denoise import DenoiseError, parse_strength

    try:
        return parse_strength(value)
    except DenoiseError as exc:
        raise click.BadParameter(str(exc)) from None


def denoise_option(default: str = "for models with a partner: auto, measured on each input (a video: once)") -> Callable:
    """--denoise, shared by the commands that run a model with a robust partner; `default` says what no value means."""
    return click.option(
        "--denoise",
        metavar="S|auto",
        callback=_denoise,
        help="Mix the model's weights with its robust partner's (models.toml robust): 0 = the model, 1 = the partner, for "
        f"JPEG and noisy inputs. Default {default}.",
    )


def tta_option(f: Callable) -> Callable:
    """--tta, shared by `esr upscale`, `esr video` and `esr bench quality`."""
    return click.option(
        "--tta",
        is_flag=True,
        help="x8 self-ensemble: upscale the 8 flips and 90-degree turns of the input and average them. A little more "
        "accurate (esr-tiny x4: +0.04 to +0.11 dB PSNR on BSD100, Set14, Set5) for 8x the work.",
    )(f)


def tiling_options(f: Callable) -> Callable:
    """--tile, --overlap and --batch, shared by `esr upscale` and `esr video`."""
    f = click.option("--batch", type=click.IntRange(min=1), help="Tiles per forward call. Default: from free memory.")(f)
    f = click.option(
        "--overlap", type=click.IntRange(min=0), help="Context around each tile, in input pixels. Default: the model's receptive field."
    )(f)
    f = click.option("--tile", type=click.IntRange(min=0), help="Tile size in input pixels; 0 = whole image. Default: from free memory.")(f)
    return f
