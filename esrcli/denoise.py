"""Denoise strength: a model's weights mixed with its robust partner's, by hand or from the input.

A registry model may name a `robust` partner: the same network trained on degraded inputs, started from
its weights, so that their weights mix well (a linear path between them stays a good model, as
Real-ESRGAN's denoise strength uses). Strength 0 is the model itself, 1 the partner. `auto` measures
the input (esrcli.estimate) and maps that to a strength; the mapping was fitted on the training photos
under known degradations (benchmarks/denoise_fit.py), never on the benchmark sets.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import DenoiseError as DenoiseError
from .estimate import Degradation
from .refs import ModelRef

AUTO = "auto"
STEP = 0.05  # auto strengths are rounded to this, so that a batch of files shares a handful of networks


def parse_strength(value: object) -> float | str | None:
    """None (the model as it is), "auto", or a number in 0..1."""
    if value is None or value == AUTO:
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise DenoiseError(f"denoise {value!r}: a number from 0 to 1, or auto") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0 or math.isnan(float(value)):
        raise DenoiseError(f"denoise {value!r}: a number from 0 to 1, or auto")
    return float(value)


def partner_of(model: ModelRef) -> ModelRef:
    """The robust partner a --denoise strength mixes `model` with, or the one-line refusal."""
    partner = model.partner()
    if partner is None:
        raise DenoiseError(
            f"{model.text}: --denoise needs a model with a robust partner to mix with (models.toml robust; esr-tiny has one)"
        )
    return partner


def mix(base: nn.Module, partner: nn.Module, strength: float) -> nn.Module:
    """(1 - strength) * base + strength * partner, tensor by tensor, in a new network (0: `base` itself,
    bit for bit). Both must be the same network: same tensor names and shapes."""
    if strength == 0.0:
        return base
    ours, theirs = base.state_dict(), partner.state_dict()
    if ours.keys() != theirs.keys() or any(ours[k].shape != theirs[k].shape for k in ours):
        raise DenoiseError("the model and its robust partner are not the same network: their weights cannot be mixed")
    mixed = copy.deepcopy(base)
    mixed.load_state_dict({k: torch.lerp(v, theirs[k].to(v), strength) if v.is_floating_point() else v for k, v in ours.items()})
    return mixed


@dataclass(frozen=True)
class StrengthMap:
    """The strength each measure calls for, at one scale: (measure, strength) points, linear between
    them and flat beyond; the largest of what the JPEG quality (or blockiness) and the noise call for wins."""

    quality: tuple[tuple[float, float], ...]
    blockiness: tuple[tuple[float, float], ...]
    sigma: tuple[tuple[float, float], ...]


# Fitted by benchmarks/denoise_fit.py on 32 training photos (BSD200, Photos2K reduced x3; esr-tiny /
# esr-tiny-real at each scale): the strength that scored best at each JPEG quality, and at each noise
# sigma as esrcli.estimate measures it (clean LR photos measure 0.5, small detailed ones up to 2). A decoded
# JPEG's 8x8 grid (blockiness) stands in for its quality when the input is not a JPEG file: quality 80
# reads 0.15, 70 0.23, 60 0.3, small clean pictures up to 0.08 (and photos that were JPEGs once, as BSD200's and T91's were,
# up to 0.5: they are JPEG inputs). The first pass of a plan decides (it is the one that sees the input).
STRENGTH_MAPS: dict[int, StrengthMap] = {
    4: StrengthMap(  # esr-tiny version 3, esr-tiny-real version 4
        quality=((60.0, 1.0), (70.0, 0.9), (80.0, 0.8), (90.0, 0.5), (95.0, 0.3), (98.0, 0.0)),
        blockiness=((0.1, 0.0), (0.15, 0.8), (0.23, 0.9), (0.3, 1.0)),
        sigma=((2.0, 0.0), (3.2, 0.3), (5.1, 0.8), (8.0, 0.9), (9.9, 1.0)),
    ),
    # At x2 the partner wins sooner: from JPEG quality 80 (blockiness 0.18) and noise sigma 5 it is best
    # outright; quality 90 (0.06) and sigma 2 want (nearly) none. The blockiness ramp starts where small
    # clean pictures stop (0.08), as at x4.
    2: StrengthMap(  # version 3 of the pair
        quality=((80.0, 1.0), (90.0, 0.1), (95.0, 0.0)),
        blockiness=((0.08, 0.0), (0.18, 1.0)),
        sigma=((2.0, 0.0), (3.0, 0.2), (5.0, 0.9), (6.0, 1.0)),
    ),
}


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    xs, ys = zip(*points)
    return float(np.interp(x, xs, ys))


def strength_for(measured: Degradation, scale: int = 4) -> float:
    """The strength for a measured input at a model scale (the nearest fitted one), rounded to STEP: its
    JPEG quality (or, for pixels that are not a JPEG file, their 8x8 grid) and its noise each give one;
    the larger wins."""
    fitted = STRENGTH_MAPS.get(scale) or STRENGTH_MAPS[min(STRENGTH_MAPS, key=lambda s: (abs(s - scale), -s))]
    if measured.jpeg_quality is not None:
        from_jpeg = _interpolate(fitted.quality, measured.jpeg_quality)
    else:
        from_jpeg = _interpolate(fitted.blockiness, measured.blockiness)
    from_noise = _interpolate(fitted.sigma, measured.noise_sigma)
    return snap(max(from_jpeg, from_noise))


def describe(info: dict) -> str:
    """One line for -v: the strength, and under auto what it was decided from."""
    seen = []
    if info.get("jpeg_quality") is not None:
        seen.append(f"JPEG quality {info['jpeg_quality']:g}")
    if "blockiness" in info:
        seen.append(f"8x8 blocking {info['blockiness']:.3f}, noise sigma {info['noise_sigma']:.2f}")
    return f"denoise {info['denoise']:g}" + (f" (auto: {'; '.join(seen)})" if seen else "")


def snap(strength: float) -> float:
    """To the nearest STEP, so that inputs share a handful of mixed networks."""
    return round(round(strength / STEP) * STEP, 2)
