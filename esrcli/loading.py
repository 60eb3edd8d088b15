"""Model references to networks ready to run: registry names, weight files, run folders, hf:// URIs.

Registry weights are fetched from pinned sources, checked by SHA-256, fused once, and the fused
network cached as safetensors, so later loads read one file: nothing is verified or fused again.
A registry model with `clamp_features` gets its calibrated feature clamp here, on every load, by
name or from its release file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from .archs import SRNet
from .archs.blocks import EvalConv
from .archs.span import SPAB
from .device import memory_format
from .download import ChecksumMismatch, DownloadError, OfflineError, fetch, fetch_first, manual_download_advice, sha256_file
from .refs import ModelRef
from .registry import ModelEntry, Registry, Weights, default_registry, embedded_source, fused_cache_path
from .weights import WeightsError, load_network, network_from_state_dict, read_state_dict, save_network

FEATURE_BOUNDS = Path(__file__).resolve().parent / "weights" / "feature_bounds.safetensors"
"""Per-channel bounds of every SPAB and of each conv in it, by weight file SHA-256 (benchmarks/flat_colours.py --calibrate)."""


class _Clamped:
    """Holds a module's output, per channel, inside the range it reaches on photographs.

    The NTIRE SPAN releases amplify a saturated colour edge block after block (on a blue field
    with yellow text, up to 400 times the range a photograph spans, past it) until the flat areas around it fill with speckle; held to the calibrated
    range, every conv and block stays in the regime the weights were trained in. The bounds are
    non-persistent buffers: the state dict, and every file written from it, holds the plain weights."""

    feature_low: Tensor
    feature_high: Tensor

    def _clamp(self, t: Tensor) -> Tensor:
        return t.clamp_(self.feature_low, self.feature_high)  # in place: a fresh conv or block output; +2% time, not +27%


class ClampedSPAB(_Clamped, SPAB):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, first = super().forward(x)
        return self._clamp(out), first


class ClampedConv(_Clamped, EvalConv):
    def forward(self, x: Tensor) -> Tensor:
        return self._clamp(super().forward(x))


_CLAMPED = {SPAB: ClampedSPAB, EvalConv: ClampedConv}


@cache
def _feature_bounds() -> dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FEATURE_BOUNDS)) if FEATURE_BOUNDS.is_file() else {}


def feature_bounds(sha256: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Module name -> (low, high) per channel, calibrated for the weight file `sha256`; empty if none were."""
    table = _feature_bounds()
    names = {k.split("/")[1] for k in table if k.startswith(f"{sha256}/")}
    return {n: (table[f"{sha256}/{n}/low"], table[f"{sha256}/{n}/high"]) for n in sorted(names)}


def clamp_sites(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """What the clamp holds: every SPAB block's output and the output of each conv inside one."""
    blocks = {name: m for name, m in network.named_modules() if isinstance(m, SPAB)}
    convs = {f"{b}.{n}": m for b, block in blocks.items() for n, m in block.named_children() if isinstance(m, EvalConv)}
    return blocks | convs


def clamp_features(network: SRNet, sha256: str, source: str) -> SRNet:
    """Clamp `network` (in place) with the bounds calibrated for the weight file `sha256`.

    In place, by giving each site a subclass that only adds the clamp, not by wrapping: the network stays
    what every caller expects (its class, scale, config and state dict), and the clamp goes wherever it
    goes: tiles, fp16, ONNX, video, Ray workers."""
    bounds, sites = feature_bounds(sha256), clamp_sites(network)
    if not sites or set(bounds) != set(sites):
        raise WeightsError(
            f"{source}: models.toml asks for clamp_features, but {FEATURE_BOUNDS.name} has no bounds for these weights "
            f"(SHA-256 {sha256[:16]}…); re-make it with benchmarks/flat_colours.py --calibrate"
        )
    for name, module in sites.items():
        low, high = bounds[name]
        reference = next(module.parameters())  # a conv's weight, or a block's first conv's: its output width
        if low.numel() != reference.shape[0] or high.numel() != reference.shape[0]:
            raise WeightsError(f"{source}: feature bounds for {name} have {low.numel()} channels, it has {reference.shape[0]}")
        for key, value in (("feature_low", low), ("feature_high", high)):
            module.register_buffer(key, value.reshape(1, -1, 1, 1).to(reference), persistent=False)
        module.__class__ = _CLAMPED.get(type(module), type(module))  # already clamped: new bounds, same class
    network.feature_clamp_sha256 = sha256  # which release's bounds: exports record it (esrcli.export)
    return network


def remove_clamp(network: torch.nn.Module) -> torch.nn.Module:
    """`network` (in place) as its weights were released: for formats that cannot carry the clamp."""
    plain = {clamped: base for base, clamped in _CLAMPED.items()}
    for module in network.modules():
        if type(module) in plain:
            module.__class__ = plain[type(module)]
            del module.feature_low, module.feature_high
    if hasattr(network, "feature_clamp_sha256"):
        del network.feature_clamp_sha256
    return network


def clamped_blocks(network: torch.nn.Module) -> int:
    """How many of `network`'s blocks run with a feature clamp (0: it runs as its weights were released)."""
    return sum(isinstance(m, ClampedSPAB) for m in network.modules())


def clamp_as_recorded(network: SRNet, path: Path, registry: Registry | None = None, metadata: dict[str, str] | None = None) -> SRNet:
    """The clamp of a clamped registry model, wherever its weights are loaded from: the release file
    itself (by its SHA-256), or an esr safetensors export of it (its metadata names the model and release;
    pass it where it was read already)."""
    registry = registry or default_registry()
    pins = {w.sha256: w for e in registry if e.clamp_features for w in e.weights}
    sha256 = ""
    if path.suffix.lower() == ".safetensors":
        if metadata is None:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
        entry = registry.entries.get(metadata.get("esr.model", ""))
        if entry is not None and entry.clamp_features and metadata.get("esr.sha256") in pins:
            sha256 = metadata["esr.sha256"]
    if not sha256 and path.stat().st_size in {w.size for w in pins.values()}:  # only a file of a pinned size is hashed
        digest = sha256_file(path)
        sha256 = digest if digest in pins else ""
    return clamp_features(network, sha256, str(path)) if sha256 else network


@dataclass
class LoadedModel:
    """A network ready to run, with where it came from."""

    ref: ModelRef
    network: SRNet
    source: str  # the weight file read (a registry variant's fused file), or the run folder
    # What an export of it records (esr.* metadata: the release's name and pin, a run's config and
    # step, an earlier export's facts) and the files an export must never overwrite.
    provenance: dict[str, str] = field(default_factory=dict)
    inputs: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def scale(self) -> int:
        """The network's native scale."""
        return self.network.scale

    @property
    def arch(self) -> str:
        return self.network.arch

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.network.parameters())


def _fuse_into_cache(entry: ModelEntry, weights: Weights, original: Path) -> tuple[Path, SRNet]:
    """Fuse a downloaded release once and write it to the cache; the network comes back as well, so
    the first load runs it without reading the file it just wrote."""
    sd, metadata = read_state_dict(original)
    network = network_from_state_dict(sd, metadata, overrides=entry.args, source=str(original))
    if network.scale != weights.scale:
        raise WeightsError(f"{original}: a x{network.scale} network, but models.toml lists it as x{weights.scale}")
    extra = {"esr.model": entry.name, "esr.sha256": weights.sha256, "esr.licence": entry.licence}
    return save_network(network, fused_cache_path(entry, weights), extra_metadata=extra), network


def fetch_model(entry: ModelEntry, weights: Weights, *, progress: bool = True) -> tuple[Path, SRNet | None]:
    """The fused file of a registry model's variant, downloading and fusing on first use; with the
    network when it was fused just now (None: read it from the file)."""
    packaged = embedded_source(weights)
    if packaged is not None:
        return fetch(packaged, name=entry.name, progress=progress), None  # checked against its pin (once, then by a stamp)
    target = fused_cache_path(entry, weights)
    if target.is_file():
        return target, None
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
    return _fuse_into_cache(entry, weights, path)[0]


STRUCTURAL_KEYS = ("esr.arch", "esr.config", "esr.form", "esr.scale")  # how to rebuild a network, not where it came from


def _released(network: SRNet, registry: Registry) -> dict[str, str]:
    """A release file esr clamps (a registry pin's SHA-256) names its model in its exports, so that esr clamps them too."""
    sha256 = getattr(network, "feature_clamp_sha256", None)
    entry = next((e for e in registry if sha256 in {w.sha256 for w in e.weights}), None) if sha256 else None
    return {"esr.model": entry.name, "esr.sha256": sha256, "esr.licence": entry.licence} if entry else {}


def _from_registry(ref: ModelRef, native: int | None, progress: bool) -> LoadedModel:
    entry = ref.entry
    assert entry is not None
    weights = entry.variant(native)
    path, network = fetch_model(entry, weights, progress=progress)
    if network is None:
        try:
            network = load_network(path, overrides=entry.args)
        except WeightsError:  # a damaged cache entry: rebuild it once (a packaged file was checked against its pin)
            if embedded_source(weights) is not None:
                raise
            path.unlink(missing_ok=True)
            path, network = fetch_model(entry, weights, progress=progress)
            network = network or load_network(path, overrides=entry.args)
    if entry.clamp_features:
        network = clamp_features(network, weights.sha256, entry.name)
    provenance = {"esr.model": entry.name, "esr.sha256": weights.sha256, "esr.licence": entry.licence}
    return LoadedModel(ref, network, str(path), provenance, (path,))


def _from_run(ref: ModelRef, use_ema: bool, lora_strength: float) -> LoadedModel:
    from .runconfig import CHECKPOINT, CONFIG, METRICS
    from .runs import network_from_run

    network, cfg, step = network_from_run(ref.path, use_ema=use_ema, strength=lora_strength)
    provenance = {"esr.trained_steps": str(step), "esr.train_config": cfg.to_toml(), "esr.weights": "ema" if use_ema else "raw"}
    if lora_strength != 1.0:
        provenance["esr.lora_strength"] = repr(lora_strength)
    return LoadedModel(ref, network, ref.text, provenance, tuple(ref.path / n for n in (CHECKPOINT, CONFIG, METRICS)))


def _from_file(ref: ModelRef, path: Path, registry: Registry) -> LoadedModel:
    sd, metadata = read_state_dict(path)
    network = clamp_as_recorded(network_from_state_dict(sd, metadata, source=str(path)), path, registry, metadata)
    recorded = {k: v for k, v in metadata.items() if k.startswith("esr.") and k not in STRUCTURAL_KEYS}  # an earlier export's
    provenance = {**_released(network, registry), **recorded}
    if ref.kind == "hub":
        provenance["esr.source"] = ref.text
        return LoadedModel(ref, network, str(path), provenance)
    return LoadedModel(ref, network, str(path), provenance, (path,))


def _from_hub(ref: ModelRef, progress: bool, registry: Registry) -> LoadedModel:
    assert ref.hub is not None
    try:
        path = fetch(ref.hub, name=ref.text, progress=progress)
    except DownloadError as exc:
        if isinstance(exc, (ChecksumMismatch, OfflineError)):
            raise
        raise DownloadError(f"{exc}; {manual_download_advice(None, ref.hub)}", reason=exc.reason) from exc
    return _from_file(ref, Path(path), registry)


def load_reference(
    ref: str | ModelRef,
    *,
    native: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    registry: Registry | None = None,
    use_ema: bool = True,
    lora_strength: float = 1.0,
) -> LoadedModel:
    """A fused, eval-mode network on `device` in `dtype`, from any model reference: the one way esr
    turns a reference into a network (API, CLI, export, training, Ray workers).

    `native` picks a registry model's variant by its native scale (a file has the one it was trained
    for); `use_ema` and `lora_strength` pick a run folder's weights."""
    registry = registry or default_registry()
    ref = ModelRef.parse(ref, registry)
    if ref.kind == "registry":
        loaded = _from_registry(ref, native, progress)
    elif ref.kind == "run":
        loaded = _from_run(ref, use_ema, lora_strength)
    elif ref.kind == "hub":
        loaded = _from_hub(ref, progress, registry)
    else:
        loaded = _from_file(ref, ref.path, registry)
    loaded.network = place(loaded.network, device, dtype)
    return loaded


def place(network: SRNet, device: torch.device | str, dtype: torch.dtype) -> SRNet:
    """Move to device, precision and the memory format that suits the device, frozen."""
    device = torch.device(device)
    network = network.to(device=device, dtype=dtype, memory_format=memory_format(device)).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return network
