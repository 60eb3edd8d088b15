"""Training losses: pixel losses, EFDN's gradient variance, ESPAN's frequency-aware loss.

`build_loss` sums the terms the config weights above zero and reports each one, so the live
view and metrics.jsonl show what the total is made of.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ..runconfig import LossConfig

# (sr, hr) -> (loss, terms): the terms detached but left on the device, read back only when logged.
LossFn = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, Tensor]]]


def charbonnier(sr: Tensor, hr: Tensor, eps: float = 1e-3) -> Tensor:
    return torch.sqrt((sr - hr) ** 2 + eps * eps).mean()


def _grey(x: Tensor) -> Tensor:
    return 0.2989 * x[:, 0:1] + 0.5870 * x[:, 1:2] + 0.1140 * x[:, 2:3]


_EDGE_FILTERS = {
    "x": ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0)),
    "y": ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0)),
    "l": ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0)),
}


def _patch_variance(x: Tensor, patch: int = 8) -> Tensor:
    """Unbiased variance of each non-overlapping patch x patch block: (B, blocks)."""
    blocks = F.unfold(x, kernel_size=patch, stride=patch)  # (B, patch*patch, blocks)
    return blocks.var(dim=1, unbiased=True)


def gradient_variance(sr: Tensor, hr: Tensor, patch: int = 8) -> dict[str, Tensor]:
    """EFDN's edge-enhanced gradient-variance terms: MSE of per-patch variances of Sobel-x, Sobel-y and Laplacian maps."""
    a, b = _grey(sr), _grey(hr)
    terms = {}
    for name, mask in _EDGE_FILTERS.items():
        kernel = torch.tensor(mask, dtype=sr.dtype, device=sr.device).view(1, 1, 3, 3)
        va = _patch_variance(F.conv2d(a, kernel, padding=1), patch)
        vb = _patch_variance(F.conv2d(b, kernel, padding=1), patch)
        terms[name] = F.mse_loss(va, vb)
    return terms


@lru_cache(maxsize=16)
def _gaussian5(sigma: float = 1.0) -> Tensor:
    r = torch.arange(5, dtype=torch.float64) - 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def _blur(x: Tensor) -> Tensor:
    k = _gaussian5().to(x).view(1, 1, 5, 5).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


@lru_cache(maxsize=16)
def _dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix: D @ x transforms the columns of x."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d.float()


def dct2(x: Tensor) -> Tensor:
    h, w = x.shape[-2:]
    return _dct_matrix(h).to(x) @ x @ _dct_matrix(w).to(x).T


def frequency_aware(sr: Tensor, hr: Tensor, alpha: float = 1.0, beta: float = 0.001) -> dict[str, Tensor]:
    """ESPAN's loss terms: L2, the L1 of high-pass residuals (x - blur(x)), and the L1 of 2-D DCTs."""
    return {
        "l2": F.mse_loss(sr, hr),
        "hf": alpha * F.l1_loss(hr - _blur(hr), sr - _blur(sr)),
        "dct": beta * F.l1_loss(dct2(hr), dct2(sr)),
    }


def trim(x: Tensor, pixels: int) -> Tensor:
    """`x` without `pixels` rows and columns at each edge."""
    if pixels <= 0:
        return x
    return x[..., pixels : x.shape[-2] - pixels, pixels : x.shape[-1] - pixels]


def has_terms(cfg: LossConfig) -> bool:
    return any((cfg.l1, cfg.l2, cfg.charbonnier, cfg.gv, cfg.freq))


def build_loss(cfg: LossConfig) -> LossFn:
    """The weighted sum of the configured terms; each term's value is reported by name."""

    def loss(sr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts: dict[str, Tensor] = {}
        if cfg.l1:
            parts["l1"] = cfg.l1 * F.l1_loss(sr, hr)
        if cfg.l2:
            parts["l2"] = cfg.l2 * F.mse_loss(sr, hr)
        if cfg.charbonnier:
            parts["charbonnier"] = cfg.charbonnier * charbonnier(sr, hr)
        if cfg.gv:
            gv = gradient_variance(sr, hr)
            parts["gv"] = cfg.gv * (cfg.gv_x * gv["x"] + cfg.gv_y * gv["y"] + cfg.gv_l * gv["l"])
        if cfg.freq:
            fa = frequency_aware(sr, hr, cfg.freq_alpha, cfg.freq_beta)
            parts["freq"] = cfg.freq * (fa["l2"] + fa["hf"] + fa["dct"])
        total = sum(parts.values()) if parts else sr.new_zeros(())  # a distillation run may use none
        return total, {k: v.detach() for k, v in parts.items()}  # type: ignore[return-value]

    return loss
