"""Weight files to networks and back: .pth and .safetensors, detection, strict loading, fusion.

Training-form weights are fused here, once, at load time: a network that leaves this
module is always in inference form, in eval mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor

from .archs import SRNet, UnknownArchitecture, build, detect, fuse_model
from .archs.blocks import Reparameterizable
from .atomic import atomic_write
from .errors import WeightsError as WeightsError
from .paths import WEIGHT_SUFFIXES as WEIGHT_SUFFIXES

WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a weight file, unwrapped from training wrappers."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file, not a weight file")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        else:
            metadata = {}
            sd = safe_torch_load(path)
    except WeightsError:
        raise
    except Exception as exc:  # torch and safetensors raise many types for a bad file
        raise WeightsError(f"{path}: not a weight file (neither a PyTorch checkpoint nor safetensors that can be read)") from exc
    return unwrap(sd, path), metadata


def safe_torch_load(path: Path) -> Any:
    """torch.load with weights_only, its refusals explained without its advice to turn safety off."""
    import pickle
    import re
    import warnings

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and not magic.startswith(b"\x80"):  # neither a torch zip archive nor a pickle
        raise WeightsError(f"{path}: not a weight file (neither a PyTorch checkpoint nor safetensors)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. the pickle-protocol UserWarning of the safe unpickler
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise
        asked = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" (it asks for {asked.group(1)})" if asked else ""
        raise WeightsError(
            f"{path}: refused: this pickle tries to run code or build objects other than tensors{what}; "
            "esr loads only plain tensors and never runs code from a weight file"
        ) from None


def unwrap(obj: Any, path: str | Path = "<weights>") -> dict[str, Tensor]:
    """The bare state dict inside a training checkpoint (EMA weights preferred)."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if k in obj), None)
        if key is None:
            raise WeightsError(f"{path}: no state dict found (top-level keys: {', '.join(map(str, list(obj)[:6]))})")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel/DDP
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _drop_stale(model: SRNet, sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Remove fused copies that training-form files carry: they are recomputed, never trusted."""
    stale = {
        f"{name}.{key}" for name, module in model.named_modules() if isinstance(module, Reparameterizable) for key in module.stale_keys
    }
    return {k: v for k, v in sd.items() if k not in stale}


def _short(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … (+{len(keys) - limit})" if len(keys) > limit else "")


def load_strict(model: SRNet, sd: Mapping[str, Tensor], source: str) -> None:
    """load_state_dict(strict=True), with one readable line for missing, unexpected or misshapen keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshapen = [f"{k} {tuple(sd[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or misshapen:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({_short(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys ({_short(unexpected)})")
        if misshapen:
            parts.append(f"wrong shapes ({_short(misshapen, 3)})")
        raise WeightsError(f"{source}: weights do not fit {model.arch} {model.config}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def network_from_state_dict(
    sd: Mapping[str, Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    source: str = "<weights>",
) -> SRNet:
    """The inference-form network for a state dict: esr metadata if present, else detection."""
    metadata = metadata or {}
    if "esr.arch" in metadata:
        arch = metadata["esr.arch"]
        try:
            config = json.loads(metadata.get("esr.config", "{}"))
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise WeightsError(f"{source}: its esr.config metadata is not a JSON object of constructor arguments")
        form = metadata.get("esr.form", "fused")
    else:
        try:
            arch, config = detect(sd)
        except UnknownArchitecture as exc:
            raise WeightsError(f"{source}: {exc}") from None
        form = config.pop("form")
    config.update(overrides or {})
    try:
        model = build(arch, form=form, **config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{source}: cannot build {arch} with {config}: {' '.join(str(exc).split())}") from None
    if model.scale < 2:
        raise WeightsError(f"{source}: a x{model.scale} network; esr upscales by factors of 2 and more")
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    if form == "train":
        sd = _drop_stale(model, sd)
    load_strict(model, sd, source)
    if form == "train":
        model = fuse_model(model)
    check_runs(model.eval(), source)
    return model


def check_runs(model: SRNet, source: str) -> None:
    """Weights that load but cannot upscale (NaN or inf values, a head for another channel count) are
    refused at load, not at the first image: one tiny forward pass tells."""
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise WeightsError(f"{source}: the weights hold NaN or infinite values")
    try:
        with torch.inference_mode():
            out = model(torch.full((1, 3, 8, 8), 0.5))
    except RuntimeError as exc:
        raise WeightsError(f"{source}: the network does not run on an RGB image ({' '.join(str(exc).split())[:200]})") from None
    if out.shape != (1, 3, 8 * model.scale, 8 * model.scale) or not torch.isfinite(out).all():
        raise WeightsError(f"{source}: the network does not give a finite x{model.scale} RGB image")


def load_network(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> SRNet:
    """Read, detect, strictly load and fuse a weight file."""
    sd, metadata = read_state_dict(path)
    return network_from_state_dict(sd, metadata, overrides=overrides, source=str(path))


def network_metadata(model: SRNet) -> dict[str, str]:
    """What a later load needs to rebuild the network without detection."""
    return {
        "esr.arch": model.arch,
        "esr.config": json.dumps(model.config, sort_keys=True),
        "esr.form": "fused",
        "esr.scale": str(model.scale),
    }


def save_network(
    model: SRNet, path: str | Path, *, dtype: torch.dtype = torch.float32, extra_metadata: Mapping[str, str] | None = None
) -> Path:
    """Write the fused weights as safetensors with esr metadata, atomically."""
    from .archs import fused_state_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in fused_state_dict(model).items()}
    metadata = {**network_metadata(model), **(extra_metadata or {})}
    write_safetensors(sd, path, metadata)
    return path


def write_safetensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """safetensors with a sorted header, written atomically: the same tensors give the same bytes."""
    data = canonical_safetensors(save(dict(tensors), metadata=dict(metadata or {})))
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(data)


def canonical_safetensors(data: bytes) -> bytes:
    """The same file with its JSON header's keys sorted.

    safetensors keeps metadata in a Rust HashMap, so the same network saved twice gets its metadata in
    a different order each run: different bytes and SHA-256 for identical weights. Sorted, an export is
    reproducible (a re-published model is byte-identical, a pin can be checked by exporting again)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(dict(sorted(header.items())), separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the tensor data to 8 bytes
    return len(text).to_bytes(8, "little") + text + data[8 + n :]
