"""`esr bench`: quality on benchmark sets, and speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..errors import NoSuchVariant as NoSuchVariant
from ..errors import SpeedError as SpeedError
from .common import FINITE_SECONDS, denoise_option, device_options, model_option, open_model, tta_option
from .output import Output, counting_columns, output_options


def _size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if not (0 < w <= 16384 and 0 < h <= 16384):
            raise ValueError
        return w, h
    except ValueError:
        raise click.BadParameter(f"'{value}' is not WIDTHxHEIGHT, e.g. 320x180") from None


def _set_folder(path: Path) -> Path:
    if not path.is_dir():
        raise click.BadParameter(
            f"{path}: no such folder. esr ships no benchmark sets: download one (Set5, Set14, BSD100...) and pass its folder, "
            "holding HR/ and optionally LR_bicubic/X4/ (or simply images)"
        )
    return path


BENCH_EXAMPLES = """\b
Examples:
  esr bench quality -m efdn --data sets/Set5 --data sets/Set14   PSNR/SSIM on Y, the papers' protocol
  esr bench quality -m span-ntire24 --data sets/Set14 --metric rgb --json
  esr bench speed -m span-tiny --size 1280x720 --device cuda --precision fp16
"""


@click.group(epilog=BENCH_EXAMPLES)
def bench() -> None:
    """Measure a model's quality (PSNR/SSIM) or speed."""


@bench.command(
    "quality",
    epilog="""\b
Examples:
  esr bench quality -m efdn --data sets/Set5 --data sets/Set14 --data sets/BSD100
  esr bench quality -m runs/span26 --data val/ --limit 10 --json
""",
)
@model_option()
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    callback=lambda ctx, param, values: [_set_folder(v) for v in values],
    help="A benchmark set you downloaded (esr ships none): a folder with HR/ and optionally LR_bicubic/X{s}/, or of images (repeatable).",
)
@click.option("-s", "--scale", type=click.IntRange(2, 16), help="Which registry variant (default: the model's first).")
@click.option(
    "--metric", type=click.Choice(["y", "rgb"]), default="y", show_default=True, help="PSNR/SSIM on BT.601 Y (papers) or on RGB (NTIRE)."
)
@click.option("--crop", type=click.IntRange(min=0), help="Border pixels ignored on each side [default: the scale].")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N images of each set.")
@click.option(
    "--degrade",
    "degrade",
    metavar="SPEC",
    help="Make LR from HR with a fixed degradation: blur:SIGMA (HR, before the reduction), noise:SIGMA, jpeg:QUALITY, "
    "joined with + (e.g. blur:1.2+noise:5+jpeg:60). Identical on every run.",
)
@device_options
@denoise_option(default="here: the model as it is (0)")
@tta_option
@output_options(quiet_help="No progress bar.", json_help="Print a JSON summary.")
def quality(
    model_ref: str,
    data_dirs: list[Path],
    scale: int | None,
    metric: str,
    crop: int | None,
    limit: int | None,
    degrade: str | None,
    device: str,
    precision: str,
    denoise: float | str | None,
    tta: bool,
    ui: Output,
) -> None:
    """PSNR and SSIM of a model on benchmark sets, with the papers' protocol.

    -m bicubic scores MATLAB's bicubic interpolation, the baseline (-s picks its scale, default 4; it runs on
    the CPU in float64 whatever --device says)."""
    from ..bench import evaluate_set
    from ..degrade import parse_spec
    from ..paths import hr_folder, list_images

    if degrade:
        parse_spec(degrade)
    loaded = open_bench_model(model_ref, device, precision, scale=scale, progress=ui.show_progress, denoise=denoise, tta=tta)
    results = {}
    total = sum(len(list_images(hr_folder(d))[:limit]) for d in data_dirs)
    with ui.progress(*counting_columns(rate=False)) as progress:
        task = progress.add_task(f"{loaded.name} x{loaded.scale}", total=total)
        for d in data_dirs:
            score = evaluate_set(
                loaded.network,
                loaded.scale,
                d,
                channel=metric,
                crop=crop,
                limit=limit,
                degrade=degrade,
                on_image=lambda _p: progress.advance(task),
                network_for=loaded.network_for,
            )
            results[d.name] = {"psnr": round(score.psnr, 4), "ssim": round(score.ssim, 4), "images": score.images}
    summary = {
        "model": loaded.name,
        "scale": loaded.scale,
        "metric": metric,
        "crop": loaded.scale if crop is None else crop,
        "degradation": degrade or "none (bicubic)",
        "denoise": 0.0 if denoise is None else denoise,
        "tta": tta,
        "sets": results,
    }
    ui.result(summary, human=lambda: ui.show(_quality_table(summary, degrade), highlight=None))


def _quality_table(summary: dict, degrade: str | None) -> Table:
    """The human form of `esr bench quality`: one row per set."""
    lr = f", LR {degrade}" if degrade else ""
    tta = ", x8 self-ensemble" if summary.get("tta") else ""
    title = f"{summary['model']} x{summary['scale']}{tta}, {summary['metric'].upper()} (crop {summary['crop']}){lr}"
    table = Table(title=title, title_justify="left")
    for column in ("set", "images", "PSNR (dB)", "SSIM"):
        table.add_column(column, justify="right" if column != "set" else "left")
    for name, r in summary["sets"].items():
        table.add_row(name, str(r["images"]), f"{r['psnr']:.2f}", f"{r['ssim']:.4f}")
    return table


class BenchModel:
    """What a benchmark needs of a model: its name, its network and that network's native scale."""

    def __init__(self, name: str, network, scale: int, network_for=None) -> None:
        self.name, self.network, self.scale = name, network, scale
        self.network_for = network_for  # under --denoise auto: the network for one LR image


def open_bench_model(
    model_ref: str,
    device: str,
    precision: str,
    *,
    scale: int | None,
    progress: bool,
    denoise: float | str | None = None,
    tta: bool = False,
) -> BenchModel:
    """A model's native variant to score (as it is, unless --denoise or --tta is given: the network the
    pipeline runs, so the scores are those of `esr upscale` with the same options), or the MATLAB-bicubic
    baseline for -m bicubic."""
    if model_ref == "bicubic":
        from ..bench import MatlabBicubic
        from ..errors import EnsembleError

        if denoise is not None:
            raise click.BadParameter("bicubic has no robust partner to mix with", param_hint="'--denoise'")
        if tta:
            raise EnsembleError("--tta with -m bicubic: bicubic is the same in every flip and turn, so the ensemble only takes 8x the time")
        return BenchModel("bicubic", MatlabBicubic(scale or 4), scale or 4)
    model = open_model(model_ref, device, precision, scale=scale, denoise=denoise or 0.0, progress=progress, tta=tta)
    if scale is not None and scale not in model.native:
        available = ", ".join(f"x{s}" for s in model.native)
        raise NoSuchVariant(f"model '{model.name}' has no x{scale} weights (available: {available})")
    native = model.network.scale
    pipeline = model.pipeline(native, tile=0)
    if pipeline.choose is None:
        return BenchModel(model.name, pipeline.upscalers[native].network, native)
    return BenchModel(model.name, model.network, native, lambda lr, tables: pipeline.for_input(lr, tables)[0].upscalers[native].network)


@bench.command(
    "speed",
    epilog="""\b
Examples:
  esr bench speed -m span-tiny --size 320x180
  esr bench speed -m espan --size 1920x1080 --device cuda --precision fp16 --json
  esr bench speed -m span-tiny --backend onnxruntime      the exported ONNX model, same input
""",
)
@model_option()
@click.option("-s", "--scale", type=click.IntRange(2, 16), help="Which registry variant (default: the model's first).")
@click.option("--size", default="320x180", show_default=True, help="Input size WIDTHxHEIGHT (each side up to 16384).")
@click.option("--seconds", default=2.0, show_default=True, type=FINITE_SECONDS, help="Time spent timing (after warm-up).")
@device_options
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnxruntime"]),
    default="torch",
    show_default=True,
    help="onnxruntime: export the model to ONNX (as esr export does) and time it there (pip install 'esrcli[onnx]').",
)
@output_options(json_help="Print JSON.")
def speed(model_ref: str, scale: int | None, size: str, seconds: float, device: str, precision: str, backend: str, ui: Output) -> None:
    """Parameters, MACs, latency and output megapixels per second."""
    from ..bench import measure_speed

    width, height = _size(size)
    if backend == "onnxruntime":
        _onnx_speed(model_ref, scale, size, width, height, seconds, device, precision, ui)
        return
    loaded = open_bench_model(model_ref, device, precision, scale=scale, progress=ui.show_progress)
    try:
        result = measure_speed(loaded.network, loaded.scale, width, height, min_seconds=seconds)
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "memory" not in str(exc).lower():
            raise
        raise SpeedError(f"--size {size}: not enough memory to run {loaded.name} on a {width}x{height} input; try a smaller size") from None
    param = next(loaded.network.parameters())
    _print_speed(ui, loaded.name, loaded.scale, "torch", str(param.device), str(param.dtype).removeprefix("torch."), result)


def _onnx_speed(
    model_ref: str, scale: int | None, size: str, width: int, height: int, seconds: float, device: str, precision: str, ui: Output
) -> None:
    """Export to a temporary ONNX file and time it in onnxruntime on the CPU or CUDA."""
    import tempfile

    from ..bench import measure_onnx_speed
    from ..export import ONNX_EXTRA, require_onnx, write_onnx

    try:
        import onnxruntime
    except ImportError:
        raise SpeedError(f"--backend onnxruntime needs onnxruntime: {ONNX_EXTRA}") from None
    require_onnx()
    available = onnxruntime.get_available_providers()
    cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        device = "cuda" if cuda else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise SpeedError(f"--device {device}: esr times onnxruntime on cpu or cuda")
    if device != "cpu" and not cuda:
        raise SpeedError(f"--device {device}: this onnxruntime has no CUDA provider (providers: {', '.join(available)})")
    if precision == "bf16":
        raise SpeedError("--precision bf16: esr exports ONNX in fp32 or fp16")
    fp16 = precision == "fp16" or (precision == "auto" and device != "cpu")
    loaded = open_bench_model(model_ref, "cpu", "fp32", scale=scale, progress=ui.show_progress)
    providers = (
        ["CPUExecutionProvider"] if device == "cpu" else [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)})]
    )
    with tempfile.TemporaryDirectory(prefix="esr-bench-") as scratch:
        path = Path(scratch) / "model.onnx"
        write_onnx(loaded.network, path, fp16=fp16, metadata={})
        try:
            result = measure_onnx_speed(
                path, loaded.network, loaded.scale, width, height, fp16=fp16, providers=providers, min_seconds=seconds
            )
        except MemoryError:
            raise SpeedError(
                f"--size {size}: not enough memory to run {loaded.name} on a {width}x{height} input; try a smaller size"
            ) from None
    _print_speed(ui, loaded.name, loaded.scale, "onnxruntime", device, "float16" if fp16 else "float32", result)


def _print_speed(ui: Output, name: str, scale: int, backend: str, device: str, precision: str, result: Any) -> None:
    """Both backends' answer: one line, or the JSON document."""
    data = {"model": name, "scale": scale, "backend": backend, "device": device, "precision": precision, **result.as_dict()}
    width, height = result.input_size
    ui.result(
        data,
        human=lambda: ui.show(
            f"{name} x{scale} on {device} ({backend}, {precision}), input {width}x{height}: "
            f"{result.params:,} params, {result.macs_g:.2f} GMACs, {result.latency_ms:.1f} ms, "
            f"{result.output_mpix_per_s:.2f} output MP/s ({result.runs} runs)"
        ),
    )
