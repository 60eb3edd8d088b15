"""`esr models`: the registry, downloads and the fused cache."""

from __future__ import annotations

import click
from rich.table import Table

from ..registry import (
    ModelEntry,
    RegistryError,
    Weights,
    default_registry,
    embedded_source,
    fused_cache_path,
)
from ..sources import HubSource, PackageSource, UrlSource
from .output import Output, output_options


def _source_text(source: UrlSource | HubSource | PackageSource) -> str:
    if isinstance(source, HubSource):
        return f"hf://{source.repo_id}/{source.filename}@{source.revision}"
    return source.url if isinstance(source, UrlSource) else f"embedded: {source}"


def _entry_json(entry: ModelEntry) -> dict:
    return {
        "name": entry.name,
        "title": entry.title,
        "arch": entry.arch,
        "args": entry.args,
        "licence": entry.licence,
        "paper": entry.paper,
        "notes": entry.notes,
        "clamp_features": entry.clamp_features,
        "robust": entry.robust,
        "weights": [
            {
                "scale": w.scale,
                "file": w.filename,
                "sha256": w.sha256,
                "size": w.size,
                "sources": [_source_text(s) for s in w.sources],
                "cached": str(fused_cache_path(entry, w)) if fused_cache_path(entry, w).is_file() else None,
            }
            for w in entry.weights
        ],
    }


CLAMP_NOTE = (
    "As released, these weights turn saturated colour edges (screenshots, graphics: pure blue, red or cyan areas, "
    "coloured text) into speckle, blotches and ringing. esr holds each block's output, and each conv's in it, inside "
    "the per-channel range it reaches on photographs, by name or from the release file: that removes the speckle "
    "and leaves photographs as they were (Set5/Set14 PSNR within 0.001 dB). benchmarks/flat_colours.py measures it."
)

MODELS_EXAMPLES = """\b
Examples:
  esr models list                          every name -m accepts
  esr models info span                     architecture, licence, paper, pinned sources
  esr models fetch span-tiny efdn          download, verify and fuse once
  esr models fetch efdn --file EFDN_gv.pth fill the cache from a copy you have (offline)
  esr models path span-tiny                the fused .safetensors file
"""


@click.group(epilog=MODELS_EXAMPLES)
def models() -> None:
    """List, inspect and fetch the registry's models."""


@models.command("list", epilog="\b\nExamples:\n  esr models list\n  esr models list --json")
@output_options(json_help="Print JSON instead of a table.")
def list_models(ui: Output) -> None:
    """A table of every model name -m accepts."""
    entries = list(default_registry())
    ui.result(lambda: [_entry_json(e) for e in entries], human=lambda: ui.show(_models_table(entries), highlight=None))


def _models_table(entries: list[ModelEntry]) -> Table:
    """`esr models list` for a person: which scales are cached, and which of them are embedded."""
    table = Table(title="esr models", title_justify="left")
    for column in ("name", "arch", "scales", "cached", "licence", "description"):
        table.add_column(column, overflow="fold")
    for e in entries:
        cached = ", ".join(
            f"x{w.scale}" + (" (embedded)" if embedded_source(w) else "") for w in e.weights if fused_cache_path(e, w).is_file()
        )
        cached = cached or "-"
        table.add_row(e.name, e.arch, ", ".join(f"x{s}" for s in e.scales), cached, e.licence, e.title)
    return table


@models.command("info", epilog="\b\nExamples:\n  esr models info span\n  esr models info efdn --json")
@click.argument("name")
@output_options(json_help="Print JSON.")
def info(name: str, ui: Output) -> None:
    """Architecture, licence, paper and pinned sources of one model."""
    data = _entry_json(default_registry().get(name))
    ui.result(data, human=lambda: _show_info(ui, data))


def _show_info(ui: Output, data: dict) -> None:
    """`esr models info` for a person: the JSON document's fields, one a line."""
    ui.show(f"[bold]{data['name']}[/]: {data['title']}", highlight=None)
    for key in ("arch", "args", "licence", "paper", "notes"):
        if data[key]:
            ui.show(f"  {key}: {data[key]}")
    if data["robust"]:
        ui.show(f"  robust partner: {data['robust']} (--denoise mixes their weights; auto, from each input, by default)")
    if data["clamp_features"]:
        ui.show(f"  clamp_features: yes. {CLAMP_NOTE}")
    for w in data["weights"]:
        ui.show(f"  x{w['scale']}: {w['file']}  sha256 {w['sha256']}  {w['size'] or '?'} bytes")
        for s in w["sources"]:
            ui.show(f"      from {s}")
        ui.show(f"      cached: {w['cached'] or 'no'}")


def _variants(entry: ModelEntry, scale: int | None) -> list[Weights]:
    return [entry.variant(scale)] if scale else list(entry.weights)


@models.command(
    "fetch",
    epilog="\b\nExamples:\n  esr models fetch span-tiny efdn\n  esr models fetch --all\n  esr models fetch efdn -s 2 --file EFDNx2_baseline.pth",
)
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Every model in the registry.")
@click.option("-s", "--scale", type=int, help="Only this scale (default: every scale of each model).")
@click.option(
    "--file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Use this local copy (checked against the pinned SHA-256) instead of downloading.",
)
@output_options(quiet_help="No progress bars.")
def fetch(names: tuple[str, ...], fetch_all: bool, scale: int | None, from_file: str | None, ui: Output) -> None:
    """Download, verify and fuse models once, so later runs work offline."""
    registry = default_registry()
    if fetch_all:
        names = tuple(registry.entries)
    if not names:
        raise click.UsageError("name one or more models, or pass --all")
    if from_file:
        if len(names) != 1:
            raise click.UsageError("--file takes exactly one model name")
        entry = registry.get(names[0])
        candidates = _variants(entry, scale)
        if scale is None and len(candidates) > 1:
            from ..download import sha256_file

            digest = sha256_file(from_file)
            candidates = [w for w in candidates if w.sha256 == digest] or candidates[:1]
        from ..loading import import_model_file

        path = import_model_file(entry, candidates[0], from_file)
        ui.show(f"{entry.name} x{candidates[0].scale}: {path}")
        return
    from ..loading import fetch_model

    for name in names:
        entry = registry.get(name)
        for weights in _variants(entry, scale):
            path = fetch_model(entry, weights, progress=ui.show_progress)[0]
            ui.show(f"{entry.name} x{weights.scale}: {path}")


@models.command("path", epilog="\b\nExamples:\n  esr models path span-tiny\n  esr models path esr-tiny -s 2")
@click.argument("name")
@click.option("-s", "--scale", type=int, help="Which scale (default: the model's first).")
def path(name: str, scale: int | None) -> None:
    """Print the fused weight file of a fetched model (exit 1 if not fetched)."""
    entry = default_registry().get(name)
    target = fused_cache_path(entry, entry.variant(scale))
    if not target.is_file():
        raise RegistryError(f"model '{name}' x{entry.variant(scale).scale} is not fetched yet: run `esr models fetch {name}`")
    click.echo(str(target))
