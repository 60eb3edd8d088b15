"""What every architecture in the library shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

FORMS = ("fused", "train")


@dataclass(frozen=True)
class LoRAGroup:
    """Convs whose module names match `pattern` (fnmatch) get a ConvLoRA of rank `rank`, scale `alpha`."""

    pattern: str
    rank: int
    alpha: float


@dataclass(frozen=True)
class LoRAPlacement:
    """Where a finetune puts adapters (`groups`, first match wins) and where affinity distillation reads
    features (`taps`, fnmatch patterns of module names) by default, for one architecture."""

    groups: tuple[LoRAGroup, ...]
    taps: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChannelSet:
    """Feature channels that are kept or dropped together when a network is narrowed: the convs that
    write them (output rows) and those that read them (input columns, from `offset` on, where a conv
    reads a concatenation)."""

    writers: tuple[str, ...]
    readers: tuple[tuple[str, int], ...]


class SRNet(nn.Module):
    """A super-resolution network that can rebuild itself and recognise its own weights.

    `config` holds exactly the constructor arguments (less `form`), so a network can be
    rebuilt in the other form, or from a file's metadata, without knowing its class.
    """

    # What an architecture declares about itself, next to its code (esrcli.archs registers the class):
    arch: ClassVar[str]  # its id: models.toml `arch`, train configs' model.arch, exported metadata
    title: ClassVar[str]  # how people write it: model cards, --help
    # Detection tries architectures by this number, lowest first: one whose keys are a subset of another's
    # (SPAN's, of ESPAN's) comes after it, so the more specific family answers first.
    detect_order: ClassVar[int] = 100
    forms: ClassVar[tuple[str, ...]] = FORMS  # "train" (re-parameterisable branches) and/or "fused"
    # True when an output pixel depends only on the inputs within the summed radii of the network's
    # convolutions (no pooling, no resampling): tiles with that much context are then exact (esrcli.tiling).
    local: ClassVar[bool] = True
    half: ClassVar[bool] = True  # runs in fp16/bf16 (False: esr keeps it in fp32 whatever --precision says)
    spandrel: ClassVar[bool] = False  # spandrel (chaiNNer, ComfyUI) loads its state dict as esr writes it
    lora: ClassVar[LoRAPlacement | None] = None  # the default placement of `esr finetune-lora`'s adapters

    def __init__(self, *, scale: int, config: dict[str, Any], form: str) -> None:
        super().__init__()
        if form not in self.forms:
            raise ValueError(f"form must be one of {self.forms}, not {form!r}")
        self.scale = scale
        self.config = config
        self.form = form

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        """Constructor arguments (with `form`) read from a state dict, or None if not this architecture."""
        raise NotImplementedError

    def channel_sets(self) -> dict[str, ChannelSet] | None:
        """How this network's feature channels hang together (see ChannelSet), for narrowing it to a
        smaller width; None where the architecture does not say (it cannot be narrowed)."""
        return None


def count_indexed(sd: Mapping[str, Tensor], prefix: str, sep: str = ".") -> int:
    """How many distinct indices N appear in keys `{prefix}{sep}N.…` (blocks, cells, chains)."""
    pattern = re.compile(rf"{re.escape(prefix)}{re.escape(sep)}(\d+)\.")
    return len({m.group(1) for key in sd if (m := pattern.match(key))})
