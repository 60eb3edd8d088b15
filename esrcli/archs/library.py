"""Build, recognise and fuse networks of any registered architecture. Knows nothing of files or the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import UnknownArchitecture
from .base import SRNet
from .blocks import Reparameterizable
from .catalogue import get, names


def in_detection_order() -> list[type[SRNet]]:
    """Every architecture's class, in the order detection tries them (their `detect_order`, then id)."""
    return sorted((get(n) for n in names()), key=lambda cls: (cls.detect_order, cls.arch))


def build(arch: str, form: str = "fused", **config: Any) -> SRNet:
    cls = get(arch)
    if form not in cls.forms:
        raise UnknownArchitecture(f"{cls.title} has no {form!r} form (it has {', '.join(cls.forms)})")
    return cls(form=form, **config)


def detect(sd: Mapping[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """The architecture and constructor arguments (with `form`) that a state dict belongs to."""
    near_miss = None
    for cls in in_detection_order():
        name = cls.arch
        try:
            config = cls.detect(sd)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:  # this family's keys, not its shapes
            near_miss = (
                near_miss
                or f"they look like {name} weights, but {exc if isinstance(exc, ValueError) else 'some tensors are missing or misshapen'}"
            )
            config = None
        if config is not None:
            return name, config
    if near_miss:
        raise UnknownArchitecture(near_miss)
    sample = ", ".join(list(sd)[:4])
    raise UnknownArchitecture(f"no known architecture has these weights (first keys: {sample})")


def fused_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of `model`'s inference form: every re-parameterisable block folded."""
    folded: dict[str, Tensor] = {}
    prefixes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, Reparameterizable) and not any(name.startswith(p) for p in prefixes):
            prefix = f"{name}." if name else ""
            folded.update({prefix + k: v.detach() for k, v in module.fused_state_dict().items()})
            prefixes.append(prefix)
    for key, value in model.state_dict().items():
        if not any(key.startswith(p) for p in prefixes):
            folded[key] = value
    return folded


def fuse_model(model: SRNet) -> SRNet:
    """An inference-form copy of a training-form network, with the same output."""
    reference = next(model.parameters())
    fused = build(model.arch, form="fused", **model.config).to(device=reference.device, dtype=reference.dtype)
    fused.load_state_dict(fused_state_dict(model), strict=True)
    return fused.eval()


__all__ = ["build", "detect", "fuse_model", "fused_state_dict", "in_detection_order"]
