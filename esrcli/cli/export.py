"""`esr export`: any model to esr safetensors, ONNX or spandrel's layout, and to the Hugging Face Hub."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..export_formats import EXPORT_FORMATS
from .common import FiniteFloat
from .output import Output, output_options

if TYPE_CHECKING:
    from ..export import ExportSource


@click.command(
    "export",
    epilog="""\b
Examples:
  esr export span-tiny --out span-tiny.onnx                  ONNX (dynamic size), checked in onnxruntime
  esr export span-tiny --out span-tiny-fp16.onnx --fp16      half-precision ONNX
  esr export span-ntire24 --out 4x-span28.pth                spandrel's SPAN layout: chaiNNer, ComfyUI
  esr export runs/span26 --out span26_x4.safetensors         a training run's fused weights, for -m
  esr export runs/lora --out lora.safetensors --strength 0.5 half the finetune's step
  esr export runs/span26 --push-to-hub me/span26 --data Set5 weights and a model card on the Hub
  esr export runs/span26 --to-folder hub/ --push-to-hub me/span26 --revision v2
""",
)
@click.argument("model_ref", metavar="MODEL")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The file to write: .safetensors, .onnx or .pth.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(EXPORT_FORMATS)),
    help="; ".join(f"{f.name}: {f.readers}" for f in EXPORT_FORMATS.values()) + ". Default: from --out.",
)
@click.option("-s", "--scale", type=click.IntRange(2, 16), help="Which registry variant (default: the model's first).")
@click.option("--fp16", is_flag=True, help="Half-precision weights (ONNX: float16 input, output and arithmetic).")
@click.option(
    "--check-image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Compare the export with esr on this picture. Default: a drawn test card with a photo's statistics.",
)
@click.option("--raw", is_flag=True, help="Run folders: the raw weights instead of their EMA.")
@click.option(
    "--strength",
    type=FiniteFloat(0, None),
    default=1.0,
    show_default=True,
    help="LoRA runs: merge W + STRENGTH * dW. Below 1, a shorter step from the student along the finetune.",
)
@click.option(
    "--denoise",
    type=FiniteFloat(0, 1),
    default=0.0,
    help="A model with a robust partner (models.toml robust): bake this mix of their weights into the file, as "
    "esr upscale --denoise S runs it (auto is per input: export a number).",
)
@click.option(
    "--push-to-hub", "repo_id", metavar="OWNER/REPO", help="Upload the fused safetensors and a model card to this Hub repository."
)
@click.option("--revision", default="main", show_default=True, help="The Hub branch to commit to (created from main if new).")
@click.option("--private", is_flag=True, help="Create the Hub repository private.")
@click.option("--licence", help="The licence the model card states (default: the registry's; a run or file has none).")
@click.option(
    "--to-folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write exactly what --push-to-hub uploads into this folder (with --push-to-hub, also push it).",
)
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Benchmark sets (HR/ and LR_bicubic/) whose PSNR/SSIM go into the model card (repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@output_options(json_help="Print what was written (and pushed) as JSON.")
def export(
    model_ref: str,
    out: Path | None,
    fmt: str | None,
    scale: int | None,
    fp16: bool,
    check_image: Path | None,
    raw: bool,
    strength: float,
    denoise: float,
    repo_id: str | None,
    revision: str,
    private: bool,
    licence: str | None,
    to_folder: Path | None,
    data_dirs: tuple[Path, ...],
    overwrite: bool,
    ui: Output,
) -> None:
    """Write MODEL (a registry name, weight file, run folder or hf:// file) for other runtimes or the Hub.

    Every file is checked before it is kept: ONNX in onnxruntime, the others read back by esr, on a
    picture, against esr's own output; the check's figures are printed."""
    if out is None and repo_id is None and to_folder is None:
        raise click.UsageError("say where to export: --out FILE, --push-to-hub OWNER/REPO or --to-folder DIR")
    if out is None and (fmt or check_image):
        raise click.UsageError("--format and --check-image apply to --out")
    if repo_id is None and to_folder is None and (data_dirs or private or licence or revision != "main"):
        raise click.UsageError("--data, --private, --licence and --revision apply to --push-to-hub and --to-folder")
    if repo_id is not None and (len(repo_id.split("/")) != 2 or not all(repo_id.split("/"))):
        raise click.UsageError(f"--push-to-hub takes OWNER/REPO, not {repo_id!r}")

    from ..export import open_source

    picture = _read_check_image(check_image) if check_image else None
    source = open_source(model_ref, native=scale, use_ema=not raw, strength=strength, denoise=denoise, progress=ui.show_progress)
    if licence:
        source.licence = source.metadata["esr.licence"] = licence
    report: dict = {"model": source.name, "arch": source.network.arch, "scale": source.network.scale}
    if out is not None:
        report.update(_export_file(ui, source, out, fmt=fmt, fp16=fp16, overwrite=overwrite, picture=picture))
    if repo_id is not None or to_folder is not None:
        report.update(_publish(ui, source, repo_id, revision, private, to_folder, data_dirs, fp16, overwrite))
    ui.result(report)


def _export_file(ui: Output, source: ExportSource, out: Path, *, fmt: str | None, fp16: bool, overwrite: bool, picture: Any) -> dict:
    """--out: the file, checked, under a spinner; what was written and how it matched is said as it is known."""
    with ui.status("exporting") as on_stage:
        result = source.export(out, fmt=fmt, fp16=fp16, overwrite=overwrite, check_image=picture, on_stage=on_stage)
    ui.show(f"{result.path} ({result.format}, {result.bytes:,} bytes)")
    for check in result.checks:
        ui.show(f"  matches esr on {check.describe()}")
    if result.unchecked:
        ui.note(f"  not checked: {result.unchecked}")
    return result.as_dict()


def _read_check_image(path: Path):
    from ..imagefile import read_rgb8

    return (path.name, read_rgb8(path))


def _scores(ui: Output, source: ExportSource, data_dirs: tuple[Path, ...]) -> dict:
    """--data: the PSNR/SSIM the model card states, each set announced as it starts (it takes a while)."""
    from ..bench import evaluate_set

    scores = {}
    for set_dir in data_dirs:
        ui.say(f"scoring {source.name} x{source.network.scale} on {set_dir.name}…")
        scores[set_dir.name] = evaluate_set(source.network, source.network.scale, set_dir)
    return scores


def _publish(
    ui: Output,
    source: ExportSource,
    repo_id: str | None,
    revision: str,
    private: bool,
    to_folder: Path | None,
    data_dirs: tuple[Path, ...],
    fp16: bool,
    overwrite: bool,
) -> dict:
    """--to-folder and --push-to-hub: the files (and the commit), said as they are made; their part of the report."""
    from ..publish import publish, write_folder

    scores = _scores(ui, source, data_dirs)
    if repo_id is None:
        files = write_folder(source, to_folder, repo_id="OWNER/REPO", revision=revision, fp16=fp16, scores=scores, overwrite=overwrite)
        ui.show(f"{to_folder}: " + ", ".join(f"{f.name} ({f.stat().st_size:,} bytes)" for f in files))
        return {"folder": str(to_folder), "files": [f.name for f in files]}
    with tempfile.TemporaryDirectory(prefix="esr-push-") as scratch:
        folder = to_folder or Path(scratch)
        if to_folder is not None and any(to_folder.iterdir() if to_folder.is_dir() else ()) and not overwrite:
            from ..publish import PublishError

            raise PublishError(f"{to_folder}: not empty; everything in it would be pushed (pass --overwrite to push it anyway)")
        published = publish(source, folder, repo_id, revision=revision, private=private, fp16=fp16, scores=scores)
        entry = published.registry_entry(source)
        ui.show(f"pushed {published.filename} ({published.size:,} bytes) and README.md to {repo_id}@{revision}")
        ui.show(f"commit {published.commit}  {published.url}")
        ui.show("to pin it, add to a models.toml (ESR_MODELS_TOML):\n" + entry, markup=False)
        return {
            "repo": repo_id,
            "revision": revision,
            "commit": published.commit,
            "url": published.url,
            "file": published.filename,
            "sha256": published.sha256,
            "bytes": published.size,
            "registry_entry": entry,
            **({"folder": str(to_folder)} if to_folder else {}),
        }
