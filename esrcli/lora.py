"""ConvLoRA and spatial-affinity distillation (DSCLoRA, NTIRE 2025 ESR).

A ConvLoRA wraps a frozen k x k conv with trainable factors A (r*k, Cin*k) and B (Cout*k, r*k);
the conv runs with W + (alpha / r) * (B @ A) viewed row-major as W's shape. B starts at zero,
so a fresh adapter changes nothing. ConvLoRA is a `Reparameterizable`: the same
`fused_state_dict` that folds Conv3XC branches merges W + dW (in fp32) back under the original
conv's keys, so a finetuned student exports as a plain student.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .archs.base import LoRAGroup as LoRAGroup
from .archs.blocks import Reparameterizable
from .archs.span import SPAN
from .errors import LoRAError as LoRAError


class ConvLoRA(Reparameterizable):
    def __init__(self, conv: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        if conv.groups != 1 or conv.kernel_size[0] != conv.kernel_size[1]:
            raise LoRAError("ConvLoRA needs a dense conv with a square kernel")
        k = conv.kernel_size[0]
        self.conv = conv.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(conv.weight.new_zeros(rank * k, conv.in_channels * k))
        self.lora_B = nn.Parameter(conv.weight.new_zeros(conv.out_channels * k, rank * k))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta(self) -> Tensor:
        return (self.lora_B @ self.lora_A).view(self.conv.weight.shape) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv
        return F.conv2d(x, c.weight + self.delta(), c.bias, c.stride, c.padding, c.dilation, c.groups)

    def fused_state_dict(self) -> dict[str, Tensor]:
        merged = self.conv.weight.detach().float() + self.delta().detach().float()
        state = {"weight": merged.to(self.conv.weight.dtype)}
        if self.conv.bias is not None:
            state["bias"] = self.conv.bias.detach()
        return state


DSCLORA_GROUPS = SPAN.lora.groups if SPAN.lora else ()  # the released DSCLoRA code's placement in SPAN


def placement(
    network: nn.Module, groups: Sequence[Mapping[str, Any]] = (), tapped_layers: Sequence[str] = ()
) -> tuple[list[LoRAGroup], list[str]]:
    """The adapters and distillation taps of a LoRA run: a config's where it gives them, else what the
    network's architecture declares (`SRNet.lora`); an architecture that declares none needs them given."""
    declared = getattr(type(network), "lora", None)
    if not groups and declared is None:
        arch = getattr(network, "arch", type(network).__name__)
        raise LoRAError(
            f"the {arch} network's architecture declares no LoRA placement (DSCLoRA's is for SPAN-family students: span, "
            "span-tiny, esr-tiny...); pick one as --student, or give [lora] groups (and taps) that name its convs"
        )
    chosen = [LoRAGroup(str(g["pattern"]), int(g["rank"]), float(g["alpha"])) for g in groups] if groups else list(declared.groups)
    return chosen, list(tapped_layers) if tapped_layers or declared is None else list(declared.taps)


def add_lora(network: nn.Module, groups: Sequence[LoRAGroup] | None = None) -> list[str]:
    """Freeze `network` and wrap every matching conv in a ConvLoRA (first matching group wins); no
    `groups`: the architecture's own placement."""
    if groups is None:
        groups = placement(network)[0]
    network.requires_grad_(False)
    wrapped = []
    for name, module in list(network.named_modules()):
        if not isinstance(module, nn.Conv2d):
            continue
        group = next((g for g in groups if fnmatch.fnmatchcase(name, g.pattern)), None)
        if group is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, attr, ConvLoRA(module, group.rank, group.alpha))
        wrapped.append(name)
    if not wrapped:
        arch = getattr(network, "arch", type(network).__name__)
        raise LoRAError(
            f"the {arch} network has no conv that the LoRA placement {[g.pattern for g in groups]} names: DSCLoRA's placement "
            "is for SPAN-family students (span, span-tiny, esr-tiny...); pick one as --student, or give [lora] groups that match this network"
        )
    return wrapped


def set_strength(network: nn.Module, strength: float) -> int:
    """Scale every adapter's update: the merge then gives W + strength * dW.

    Strength below 1 interpolates between the student and the finetune in weight space (as WiSE-FT
    does): a finetune on a few hundred images helps some images and hurts others, and a shorter step
    along its direction can keep the gains while losing less on images unlike the training set.
    Returns how many adapters were scaled."""
    adapters = [m for m in network.modules() if isinstance(m, ConvLoRA)]
    for m in adapters:
        m.scaling = strength * m.alpha / m.rank
    return len(adapters)


def lora_parameters(network: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in network.named_parameters() if n.endswith(("lora_A", "lora_B"))]


# --- spatial-affinity distillation -----------------------------------------------------


def _normalised(feature: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, N) with each pixel's channel vector divided by its L2 norm."""
    f = feature.flatten(2).float()
    return f / (f.norm(dim=1, keepdim=True) + 1e-8)


def affinity_loss(student: Tensor, teacher: Tensor, chunk: int = 1024) -> Tensor:
    """mean |A_s - A_t| with A = F^T F over normalised pixels (N x N), any channel widths.

    The N x N matrices are built `chunk` rows at a time, so memory stays at chunk * N per image.
    """
    s, t = _normalised(student), _normalised(teacher)
    b, _, n = s.shape
    total = s.new_zeros(())
    for i in range(0, n, chunk):
        a_s = s[:, :, i : i + chunk].transpose(1, 2) @ s
        a_t = t[:, :, i : i + chunk].transpose(1, 2) @ t
        total = total + (a_s - a_t).abs().sum()
    return total / (b * n * n)


def tapped(network: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The names of the modules that `patterns` (fnmatch) select."""
    return [name for name, _ in network.named_modules() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


@contextmanager
def taps(network: nn.Module, patterns: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of the modules matching `patterns` during forwards, by module name."""
    outputs: dict[str, Tensor] = {}
    names = set(tapped(network, patterns))
    if patterns and not names:
        raise LoRAError(f"no module matches the distillation taps {list(patterns)}")
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
        for name, module in network.named_modules()
        if name in names
    ]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def count(network: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad), sum(p.numel() for p in network.parameters())
