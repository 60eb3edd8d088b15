"""What every architecture in the library shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

FORMS = ("fused", "train")


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

    arch: ClassVar[str]
    # True when an output pixel depends only on the inputs within the summed radii of the network's
    # convolutions (no pooling, no resampling): tiles with that much context are then exact.
    local: ClassVar[bool] = True

    def __init__(self, *, scale: int, config: dict[str, Any], form: str) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, not {form!r}")
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
