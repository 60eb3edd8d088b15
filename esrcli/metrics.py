"""PSNR / SSIM as used in super-resolution papers.

Published SR numbers are computed in MATLAB on the Y channel of BT.601
YCbCr (0..255 scale, not rounded), with ``scale`` pixels shaved from every
border and Wang et al.'s SSIM ('valid' Gaussian filtering). Any deviation
(RGB instead of Y, rounded Y, 'same' padding) changes results by tenths of
a dB, so these functions reproduce that protocol exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["rgb_to_y", "psnr", "ssim", "to_uint8"]

_SSIM_WIN = 11
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_L = 255.0


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of 0..255 RGB in float64, unrounded, as MATLAB's rgb2ycbcr on doubles."""
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
    return 16.0 + (65.481 * arr[..., 0] + 128.553 * arr[..., 1] + 24.966 * arr[..., 2]) / 255.0


def _prepare(sr: np.ndarray, hr: np.ndarray, crop: int, channel: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate, expand grey, shave borders and pick channels -> float64 (C, H, W)."""
    if channel not in ("y", "rgb"):
        raise ValueError(f"channel must be 'y' or 'rgb', got {channel!r}")
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    pair = []
    for name, img in (("sr", sr), ("hr", hr)):
        arr = np.asarray(img)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"{name}: expected HxWx3 or HxW, got shape {arr.shape}")
        pair.append(arr)
    a, b = pair
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: sr {a.shape} vs hr {b.shape}")
    h, w = a.shape[:2]
    if 2 * crop >= h or 2 * crop >= w:
        raise ValueError(f"crop {crop} leaves nothing of a {h}x{w} image")
    if crop:
        a = a[crop:-crop, crop:-crop]
        b = b[crop:-crop, crop:-crop]
    if channel == "y":
        return rgb_to_y(a)[None], rgb_to_y(b)[None]
    a64 = np.asarray(a, dtype=np.float64).transpose(2, 0, 1)
    b64 = np.asarray(b, dtype=np.float64).transpose(2, 0, 1)
    return a64, b64


def psnr(sr: np.ndarray, hr: np.ndarray, crop: int, channel: str = "y") -> float:
    """PSNR in dB on 0..255 values after shaving ``crop`` border pixels; inf if equal."""
    a, b = _prepare(sr, hr, crop, channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(_SSIM_L**2 / mse)


@lru_cache(maxsize=1)
def _gaussian_1d() -> np.ndarray:
    """1-D factor of MATLAB's fspecial('gaussian', 11, 1.5); the 2-D window is its outer product."""
    r = (_SSIM_WIN - 1) / 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM map of one channel, with statistics only where the window fits."""
    h, w = a.shape
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise ValueError(f"SSIM needs at least {_SSIM_WIN}x{_SSIM_WIN} pixels, got {h}x{w}")
    x = torch.from_numpy(np.ascontiguousarray(a))
    y = torch.from_numpy(np.ascontiguousarray(b))
    # One grouped conv over the five moments instead of five separate filters.
    stack = torch.stack([x, y, x * x, y * y, x * y])[None]  # (1, 5, H, W)
    g = torch.from_numpy(_gaussian_1d())
    kv = g.view(1, 1, -1, 1).expand(5, 1, -1, 1).contiguous()
    kh = g.view(1, 1, 1, -1).expand(5, 1, 1, -1).contiguous()
    m = F.conv2d(F.conv2d(stack, kv, groups=5), kh, groups=5)[0]
    mu_x, mu_y, e_xx, e_yy, e_xy = m
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = e_xx - mu_xx
    var_y = e_yy - mu_yy
    cov = e_xy - mu_xy
    c1 = (_SSIM_K1 * _SSIM_L) ** 2
    c2 = (_SSIM_K2 * _SSIM_L) ** 2
    smap = ((2 * mu_xy + c1) * (2 * cov + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return float(smap.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop: int, channel: str = "y") -> float:
    """Wang et al. SSIM (MATLAB ssim_index); for 'rgb' the mean of per-channel SSIMs."""
    a, b = _prepare(sr, hr, crop, channel)
    vals = [_ssim_channel(a[c], b[c]) for c in range(a.shape[0])]
    return float(np.mean(vals))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model output (3, H, W) or (1, 3, H, W) in [0, 1] -> HxWx3 uint8 for saving/metrics."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got shape {tuple(x.shape)}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}")
    out = x.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    return out.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
