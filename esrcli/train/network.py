"""The network a run trains: built from its config (a LoRA student, ESPAN with its teacher blocks),
warm-started from a released model, and seen at the student's depth for validation and export."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..archs import SRNet, build
from ..errors import EsrError
from ..runconfig import TrainConfig, TrainingError


def build_network(cfg: TrainConfig) -> SRNet:
    """The training network: for LoRA runs the frozen student with adapters; for ESPAN
    self-distillation, with the teacher's extra blocks."""
    if cfg.lora.student:
        from ..loading import load_reference, remove_clamp
        from ..lora import add_lora, placement

        # As released: a feature clamp (models.toml clamp_features) holds these weights' ranges, not the finetuned ones'.
        student = remove_clamp(load_reference(cfg.lora.student, progress=False).network)
        groups, taps = placement(student, cfg.lora.groups, cfg.lora.taps)
        # The config records the placement used (the architecture's, where it gave none): config.toml says what ran.
        cfg.lora.groups = [{"pattern": g.pattern, "rank": g.rank, "alpha": g.alpha} for g in groups]
        cfg.lora.taps = taps
        add_lora(student, groups)
        return student
    args = dict(cfg.model.args)
    if cfg.recipe.name == "espan-sd":
        if cfg.model.arch != "espan":
            raise TrainingError('the espan-sd recipe trains ESPAN: set model.arch = "espan"')
        args["n_blocks"] = args.get("n_blocks", 5) + cfg.recipe.extra_blocks
    elif cfg.recipe.name != "plain":
        raise TrainingError(f"unknown recipe '{cfg.recipe.name}' (plain or espan-sd)")
    return build(cfg.model.arch, form=cfg.model.form, scale=cfg.model.scale, **args)


def build_or_explain(cfg: TrainConfig) -> SRNet:
    """build_network, with what the architecture refuses (e.g. a width it cannot have) said as a TrainingError."""
    try:
        return build_network(cfg)
    except (TypeError, ValueError, RuntimeError) as exc:
        if isinstance(exc, EsrError):
            raise
        raise TrainingError(f"cannot build the network {cfg.model.arch} with {cfg.model.args}: {' '.join(str(exc).split())}") from None


def warm_start(network: nn.Module, ref: str, samples: Callable[[], torch.Tensor] | None = None) -> tuple[list[str], str]:
    """Copy the tensors of `ref` whose names and shapes match into `network`; return the names left
    at their initial values, and how `ref` was narrowed ("" if it was not). A wider model of the same
    architecture is narrowed to the network's widths first (train.narrow), judged on `samples()` (LR
    patches). The source is the fused model, so this suits form = "fused" runs."""
    from ..loading import load_reference, remove_clamp
    from .narrow import can_narrow, narrowed_weights

    source = remove_clamp(load_reference(ref, progress=False).network)  # the clamp describes the weights as they are
    if source.arch != network.arch:
        raise TrainingError(f"model.init '{ref}' is a {source.arch} model, but this run trains {network.arch}")
    own, theirs, narrowed = network.state_dict(), source.state_dict(), ""
    if samples is not None and can_narrow(source, network):
        theirs = narrowed_weights(source, network, samples())
        narrowed = f"narrowed from {source.config.get('channels')} to {network.config.get('channels')} channels"
    fits = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    if not any(k in fits for k, _ in network.named_parameters()):
        raise TrainingError(f"model.init '{ref}': none of its weights fit this network (same arch, width and form?)")
    network.load_state_dict(fits, strict=False)
    return sorted(set(own) - set(fits)), narrowed


class AtDepth(nn.Module):
    """An ESPAN evaluated at one backbone depth (the student during self-distillation)."""

    def __init__(self, network: nn.Module, depth: int) -> None:
        super().__init__()
        self.network, self.depth = network, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x, depths=(self.depth,))[0]
