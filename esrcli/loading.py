"""Model references to networks ready to run: registry names, weight files, run folders, hf:// URIs.

Registry weights are fetched from pinned sources, checked by SHA-256, fused once, and the fused
network cached as safetensors, so later loads read one file: nothing is verified or fused again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .archs import SRNet
from .device import memory_format
from .download import ChecksumMismatch, DownloadError, OfflineError, fetch, fetch_first, manual_download_advice, sha256_file
from .registry import ModelEntry, Registry, RegistryError, Weights, default_registry, embedded_source, fused_cache_path
from .scaling import ScalePlan, plan_scale
from .sources import HubSource
from .weights import WEIGHT_SUFFIXES, WeightsError, load_network, network_from_state_dict, read_state_dict, save_network


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


def load_reference(
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
    if not ref.strip():
        raise RegistryError("an empty model name (an unset variable?); esr models list shows the names")
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
        from .runs import network_from_run

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
        loaded = {s: load_reference(ref, scale=s, device=device, dtype=dtype, progress=progress) for s in plan.scales}
        return plan, loaded
    model = load_reference(ref, device=device, dtype=dtype, progress=progress)
    return plan_scale([model.scale], model.scale if scale is None else scale), {model.scale: model}


def place(network: SRNet, device: torch.device | str, dtype: torch.dtype) -> SRNet:
    """Move to device, precision and the memory format that suits the device, frozen."""
    device = torch.device(device)
    network = network.to(device=device, dtype=dtype, memory_format=memory_format(device)).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network
