"""`--tta`: the x8 self-ensemble (EDSR's geometric self-ensemble, Lim et al. 2017).

Each input runs through the network in the 8 poses of the square (the dihedral group: the identity,
the flips, the 90-degree turns and the two transposes); each output is turned back and the 8 are
averaged in float32, so rounding happens once, where the Upscaler quantises.

`SelfEnsemble` wraps a network and is itself one. `api.Model.pipeline` puts it in each Upscaler when a
pipeline is built, so everything around the forward call runs it without knowing: tiles and their
blending (a tile's 8 views are the 8 views of its window: a conv network's reach is the same in every
pose, so tiles stay exact), batches of tiles, the fp32 retry of a half-precision tile that overflowed
(the fp32 network is wrapped too), every pass of a scale plan, `--denoise` mixes and Ray workers
(WorkerSpec.tta). `esr bench quality` scores the same wrapper.

Where the device gains from batching, a tile's views go as one batch: all 8 when it is square, else
two of 4 (a turn swaps its sides). On a CPU they go one at a time: a batch of 8 is slower there than 8
calls (esr-tiny, 1 thread: 5.0 s against 3.1 s for a 256x256 tile), as batching tiles is.
"""

from __future__ import annotations

import torch
from torch import nn

from .device import memory_format
from .errors import EnsembleError as EnsembleError

# A pose: transpose or not, then flip these dims. The 4 flips of both orientations are the 8 symmetries
# of the square; the order is the order of the sum (the identity first).
POSES: tuple[tuple[bool, tuple[int, ...]], ...] = tuple((t, dims) for t in (False, True) for dims in ((), (-1,), (-2,), (-2, -1)))


def pose(x: torch.Tensor, transpose: bool, dims: tuple[int, ...]) -> torch.Tensor:
    """(.., h, w) in one pose."""
    x = x.transpose(-2, -1) if transpose else x
    return x.flip(dims) if dims else x


def unpose(y: torch.Tensor, transpose: bool, dims: tuple[int, ...]) -> torch.Tensor:
    """The inverse of `pose`: an output turned back."""
    y = y.flip(dims) if dims else y
    return y.transpose(-2, -1) if transpose else y


def check_tta(value: object) -> bool:
    if not isinstance(value, bool):
        raise EnsembleError(f"tta {value!r}: must be True or False")
    return value


def views_per_call(device: torch.device) -> int:
    """How many of a tile's views one forward call takes on `device` (what a tile plan budgets for)."""
    return 1 if torch.device(device).type == "cpu" else len(POSES)


class SelfEnsemble(nn.Module):
    """`network` averaged over the 8 poses of its input: (B, C, h, w) -> (B, C, h*s, w*s) float32.

    The output is the plain mean of the network's outputs, not clamped (the caller clamps, as it does
    for the network alone); a non-finite value in any view stays non-finite, so a half-precision
    overflow is still seen and retried."""

    def __init__(self, network: nn.Module, *, per_call: int = len(POSES)) -> None:
        super().__init__()
        self.network = network
        self.per_call = per_call  # views per forward call: 1, or all a tile's views of one shape (8 or 4)

    @property
    def scale(self) -> int:
        return self.network.scale

    def groups(self, height: int, width: int) -> list[list[tuple[bool, tuple[int, ...]]]]:
        """The views of a (height, width) input, as the forward calls that run them."""
        if self.per_call <= 1:
            return [[p] for p in POSES]
        if height == width:
            return [list(POSES)]
        return [[p for p in POSES if p[0] == t] for t in (False, True)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = memory_format(x.device)
        out: torch.Tensor | None = None
        for group in self.groups(*x.shape[-2:]):
            batch = torch.cat([pose(x, *p) for p in group]) if len(group) > 1 else pose(x, *group[0])
            y = self.network(batch.contiguous(memory_format=fmt))
            for p, part in zip(group, y.chunk(len(group))):
                part = unpose(part, *p)
                if out is None:
                    out = part.to(torch.float32, copy=True)
                else:
                    out += part
        assert out is not None
        return out.mul_(1.0 / len(POSES))  # a power of two: exact
