"""Narrowing a trained network to fewer channels, as the start of a smaller one (model.init from a
wider model of the same architecture).

Each set of channels that must go together (the architecture's `channel_sets`) loses the channels
whose removal changes the output least on a few LR patches: one channel at a time is zeroed at every
conv that writes it, and the change in the output measured. A network narrowed this way is worse than
either, but it starts its training far closer to the wide one than any fresh or same-width start."""

from __future__ import annotations

import torch
from torch import Tensor

from ..archs import SRNet
from ..archs.base import ChannelSet


def can_narrow(source: SRNet, target: SRNet) -> bool:
    """Whether `source` narrows to `target`: the same sets of channels, none of them narrower."""
    theirs, ours = source.channel_sets(), target.channel_sets()
    if theirs is None or ours is None or set(theirs) != set(ours):
        return False
    return all(_width(source, s) >= _width(target, ours[name]) for name, s in theirs.items()) and any(
        _width(source, s) > _width(target, ours[name]) for name, s in theirs.items()
    )


@torch.no_grad()
def narrowed_weights(source: SRNet, target: SRNet, lr: Tensor) -> dict[str, Tensor]:
    """`source`'s weights cut to `target`'s widths, dropping in each channel set the channels that matter
    least to the output on `lr` (a batch of LR patches in [0, 1])."""
    sets, widths = source.channel_sets(), target.channel_sets()
    assert sets is not None and widths is not None
    weights = {k: v.detach().float().clone() for k, v in source.state_dict().items()}
    source = source.eval()
    reference = source(lr).float()
    keep: dict[str, Tensor] = {}
    for name, channels in sets.items():
        costs = []
        for c in range(_width(source, channels)):
            trial = {k: v.clone() for k, v in weights.items() if _conv_of(k) in channels.writers}
            for writer in channels.writers:
                trial[f"{writer}.weight"][c] = 0
                trial[f"{writer}.bias"][c] = 0
            source.load_state_dict({**weights, **trial})
            costs.append(float((source(lr).float() - reference).square().mean()))
        n = _width(target, widths[name])
        keep[name] = torch.argsort(torch.tensor(costs), descending=True, stable=True)[:n].sort().values
    source.load_state_dict(weights)
    return _cut(weights, sets, keep, {name: _width(source, s) for name, s in sets.items()})


def _cut(weights: dict[str, Tensor], sets: dict[str, ChannelSet], keep: dict[str, Tensor], wide: dict[str, int]) -> dict[str, Tensor]:
    """The weights with only the kept rows of each writer and the kept columns of each reader."""
    out = dict(weights)
    columns: dict[str, list[tuple[int, Tensor]]] = {}  # per reading conv: (offset, input columns kept)
    for name, channels in sets.items():
        for writer in channels.writers:
            out[f"{writer}.weight"] = out[f"{writer}.weight"][keep[name]]
            out[f"{writer}.bias"] = out[f"{writer}.bias"][keep[name]]
        for reader, offset in channels.readers:
            columns.setdefault(reader, []).append((offset, keep[name] + offset))
    for reader, parts in columns.items():
        index = torch.cat([cols for _, cols in sorted(parts, key=lambda p: p[0])])
        out[f"{reader}.weight"] = out[f"{reader}.weight"][:, index]
    return out


def _conv_of(key: str) -> str:
    return key.rsplit(".", 1)[0]


def _width(network: SRNet, channels: ChannelSet) -> int:
    return int(network.get_submodule(channels.writers[0]).weight.shape[0])
