"""The model registry (models.toml) and model references to loaded networks.

A model reference is a registry name, a local weight file, or an `hf://owner/repo/file`
URI. Registry weights are fetched from pinned sources, checked by SHA-256, fused once,
and the fused network cached as safetensors so later loads skip both steps.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from .archs import SRNet
from .device import memory_format
from .download import (
    ChecksumMismatch,
    DownloadError,
    HubSource,
    OfflineError,
    PackageSource,
    Source,
    UrlSource,
    cache_dir,
    fetch,
    fetch_first,
    manual_download_advice,
    sha256_file,
)
from .errors import EsrError
from .scaling import ScalePlan, plan_scale
from .weights import (
    WEIGHT_SUFFIXES,
    WeightsError,
    load_network,
    network_from_state_dict,
    read_state_dict,
    save_network,
)

DEFAULT_MODEL = "esr-tiny"
"""The model used when none is named: trained by `esr train`, shipped in the package, works offline."""


class RegistryError(EsrError, ValueError):
    """An unknown model name, a missing scale or a malformed models.toml."""


@dataclass(frozen=True)
class Weights:
    """One released weight file of a model, at one scale, with every place it can come from."""

    scale: int
    sha256: str
    size: int | None
    filename: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    arch: str
    args: dict[str, Any]
    licence: str
    paper: str
    weights: tuple[Weights, ...]
    notes: str = ""

    @property
    def scales(self) -> list[int]:
        return [w.scale for w in self.weights]

    @property
    def default_scale(self) -> int:
        return self.weights[0].scale

    def variant(self, scale: int | None = None) -> Weights:
        if scale is None:
            return self.weights[0]
        for weights in self.weights:
            if weights.scale == scale:
                return weights
        available = ", ".join(f"x{s}" for s in self.scales)
        raise RegistryError(f"model '{self.name}' has no x{scale} weights (available: {available})")


def _source(raw: dict[str, Any], weights: dict[str, Any], where: str) -> Source:
    sha, size = weights["sha256"].lower(), weights.get("size")
    if "url" in raw:
        return UrlSource(url=raw["url"], sha256=sha, size=size, filename=weights.get("file"))
    if "package" in raw:
        return PackageSource(path=raw["package"], sha256=sha, size=size)
    if "hub" in raw:
        return HubSource(repo_id=raw["hub"], filename=raw["path"], revision=raw.get("revision", "main"), sha256=sha, size=size)
    raise RegistryError(f"{where}: a source needs 'url', 'hub' or 'package'")


def _entry(name: str, raw: dict[str, Any], where: str) -> ModelEntry:
    try:
        weights = tuple(
            Weights(
                scale=int(w["scale"]),
                sha256=w["sha256"].lower(),
                size=w.get("size"),
                filename=w.get("file") or name,
                sources=tuple(_source(s, w, f"{where} [{name}]") for s in w["sources"]),
            )
            for w in raw["weights"]
        )
        return ModelEntry(
            name=name,
            title=raw["title"],
            arch=raw["arch"],
            args=dict(raw.get("args", {})),
            licence=raw["licence"],
            paper=raw.get("paper", ""),
            weights=weights,
            notes=raw.get("notes", ""),
        )
    except KeyError as exc:
        raise RegistryError(f"{where}: model '{name}' lacks {exc}") from None


@dataclass
class Registry:
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise RegistryError(f"{path}: cannot read the model registry ({exc})") from None
        return cls({name: _entry(name, body, str(path)) for name, body in raw.items()}, path)

    def get(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.entries, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(self.entries)})"
            raise RegistryError(f"unknown model '{name}'{hint}; a weight file path or hf://owner/repo/file also works") from None

    def __iter__(self):
        return iter(self.entries.values())


def default_registry_path() -> Path:
    """models.toml inside the installed package, or at the top of a source checkout."""
    packaged = Path(__file__).with_name("models.toml")
    return packaged if packaged.is_file() else Path(__file__).resolve().parents[1] / "models.toml"


@cache
def default_registry() -> Registry:
    return Registry.from_file(os.environ.get("ESR_MODELS_TOML") or default_registry_path())


# --- loading ---------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A network ready to run, with where it came from."""

    name: str
    network: SRNet
    source: str

    @property
    def scale(self) -> int:
        return self.network.scale

    @property
    def arch(self) -> str:
        return self.network.arch

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def embedded_source(weights: Weights) -> PackageSource | None:
    """The packaged file of an embedded model: already fused (written by esr export), always at hand."""
    return next((s for s in weights.sources if isinstance(s, PackageSource)), None)


def fused_cache_path(entry: ModelEntry, weights: Weights) -> Path:
    """Where the fused weights of a variant live: the packaged file itself for embedded models."""
    packaged = embedded_source(weights)
    if packaged is not None:
        return packaged.file
    return cache_dir() / "fused" / f"{entry.name}-x{weights.scale}-{weights.sha256[:16]}.safetensors"


def _fuse_into_cache(entry: ModelEntry, weights: Weights, original: Path) -> Path:
    sd, metadata = read_state_dict(original)
    network = network_from_state_dict(sd, metadata, overrides=entry.args, source=str(original))
    if network.scale != weights.scale:
        raise WeightsError(f"{original}: a x{network.scale} network, but models.toml lists it as x{weights.scale}")
    extra = {"esr.model": entry.name, "esr.sha256": weights.sha256, "esr.licence": entry.licence}
    return save_network(network, fused_cache_path(entry, weights), extra_metadata=extra)


def fetch_model(entry: ModelEntry, weights: Weights, *, progress: bool = True) -> Path:
    """The fused cache file for a registry model, downloading and fusing on first use."""
    packaged = embedded_source(weights)
    if packaged is not None:
        return fetch(packaged, name=entry.name, progress=progress)  # checked against its pin (once, then by a stamp)
    target = fused_cache_path(entry, weights)
    if target.is_file():
        return target
    original = fetch_first(weights.sources, name=entry.name, progress=progress)
    return _fuse_into_cache(entry, weights, original)


def import_model_file(entry: ModelEntry, weights: Weights, path: str | Path) -> Path:
    """Fill the cache from a file the user already has (offline machines), checked against the pin."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    digest = sha256_file(path)
    if digest != weights.sha256:
        raise WeightsError(f"{path}: SHA-256 {digest[:16]}… is not the pinned {weights.sha256[:16]}… of '{entry.name}' x{weights.scale}")
    return _fuse_into_cache(entry, weights, path)


def is_file_reference(ref: str) -> bool:
    return Path(ref).suffix.lower() in WEIGHT_SUFFIXES or os.sep in ref or Path(ref).exists()


def load_model(
    ref: str,
    *,
    scale: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    registry: Registry | None = None,
) -> LoadedModel:
    """A fused, eval-mode network on `device` in `dtype`, from any model reference.

    `scale` picks a registry variant; a file has the one scale it was trained for.
    """
    registry = registry or default_registry()
    if ref.startswith("hf://"):
        source = HubSource.from_uri(ref)
        try:
            path = fetch(source, name=ref, progress=progress)
        except DownloadError as exc:
            if isinstance(exc, (ChecksumMismatch, OfflineError)):
                raise
            raise DownloadError(f"{exc}; {manual_download_advice(None, source)}", reason=exc.reason) from exc
        loaded = LoadedModel(ref, load_network(path), source=ref)
    elif ref not in registry.entries and Path(ref).is_dir():
        from .train.export import network_from_run

        network, _, _ = network_from_run(ref)
        loaded = LoadedModel(Path(ref).name, network, source=str(ref))
    elif ref not in registry.entries and is_file_reference(ref):
        loaded = LoadedModel(Path(ref).name, load_network(ref), source=str(ref))
    else:
        entry = registry.get(ref)
        weights = entry.variant(scale)
        path = fetch_model(entry, weights, progress=progress)
        try:
            network = load_network(path, overrides=entry.args)
        except WeightsError:  # a damaged cache entry: rebuild it once (a packaged file was checked against its pin)
            if embedded_source(weights) is not None:
                raise
            path.unlink(missing_ok=True)
            network = load_network(fetch_model(entry, weights, progress=progress), overrides=entry.args)
        loaded = LoadedModel(entry.name, network, source=str(path))
    loaded.network = place(loaded.network, device, dtype)
    return loaded


def load_for_scale(
    ref: str, scale: float | None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, progress: bool = True
) -> tuple[ScalePlan, dict[int, LoadedModel]]:
    """The plan that reaches `scale` (default: the model's own) and the variants it runs, by scale.

    A registry model offers every scale it has weights for; a file or run folder its one scale."""
    registry = default_registry()
    if ref in registry.entries:
        entry = registry.get(ref)
        plan = plan_scale(entry.scales, entry.default_scale if scale is None else scale)
        loaded = {s: load_model(ref, scale=s, device=device, dtype=dtype, progress=progress) for s in plan.scales}
        return plan, loaded
    model = load_model(ref, device=device, dtype=dtype, progress=progress)
    return plan_scale([model.scale], model.scale if scale is None else scale), {model.scale: model}


def place(network: SRNet, device: torch.device | str, dtype: torch.dtype) -> SRNet:
    """Move to device, precision and the memory format that suits the device, frozen."""
    device = torch.device(device)
    network = network.to(device=device, dtype=dtype, memory_format=memory_format(device)).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network
