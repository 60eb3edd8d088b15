"""MATLAB-compatible bicubic ``imresize`` in torch.

Super-resolution benchmarks (Set5, Set14, BSD100, DIV2K ...) ship LR images
made with MATLAB's ``imresize(img, 1/s, 'bicubic')``. PIL / OpenCV / torch
bicubic differ from it (other kernel constant, no antialiasing, other
boundary rule), which shifts PSNR by tenths of a dB, so training and
evaluation must use exactly MATLAB's resampling to be comparable with
published numbers.

The resize is separable: each dimension is a dense matrix product with a
weight matrix built once per ``(in_len, out_len, scale)`` and cached.
"""

from __future__ import annotations

import functools
import math
from typing import TypeVar

import numpy as np
import torch

__all__ = ["imresize", "bicubic_downscale_uint8", "mod_crop"]

_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)

# MATLAB's bicubic kernel support (in input pixels, before antialias widening).
_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic with a=-0.5, written in MATLAB's operation order for bit-parity."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    return (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1) + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))


@functools.lru_cache(maxsize=32)
def _weight_matrix_np(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) float64 matrix equal to MATLAB's ``contributions``.

    Mirrored taps that land on the same input pixel are summed, so the matrix
    product gives the same result as MATLAB's gather-and-weight loop.
    """
    antialias = scale < 1
    width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH

    x = np.arange(1, out_len + 1, dtype=np.float64)
    # Output pixel x (1-based) samples input coordinate u (1-based).
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]

    dist = u[:, None] - idx
    if antialias:
        # Stretching the kernel by 1/scale low-passes before decimation.
        w = scale * _cubic(scale * dist)
    else:
        w = _cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)

    # Symmetric padding: index sequence 1..n, n..1 repeated (MATLAB 'symmetric').
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    cols = aux[np.mod(idx.astype(np.int64) - 1, aux.size)]

    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], cols.shape)
    np.add.at(mat, (rows, cols), w)
    mat.setflags(write=False)
    return mat


# Small: one full-size DIV2K matrix is several MB and loaders see few shapes.
@functools.lru_cache(maxsize=32)
def _weight_matrix(in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Per-device/dtype copy so data loaders do not re-upload weights every call."""
    return torch.from_numpy(np.array(_weight_matrix_np(in_len, out_len, scale))).to(device=device, dtype=dtype)


def _output_len(in_len: int, scale: float) -> int:
    """MATLAB's ``ceil(scale * n)``, guarded so that e.g. 255 * (1/3) is 85, not 86."""
    exact = scale * in_len
    nearest = round(exact)
    if abs(exact - nearest) < 1e-9 * max(1.0, abs(exact)):
        return int(nearest)
    return int(math.ceil(exact))


def _resolve(in_hw: tuple[int, int], scale: float | None, size: tuple[int, int] | None) -> tuple[tuple[float, float], tuple[int, int]]:
    """Derive per-dimension scales and output sizes the way MATLAB does."""
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if size is not None:
        out_hw = (int(size[0]), int(size[1]))
        if min(out_hw) <= 0:
            raise ValueError(f"output size must be positive, got {size}")
    elif scale is not None:
        out_hw = (_output_len(in_hw[0], scale), _output_len(in_hw[1], scale))
    else:
        raise ValueError("imresize needs either scale or size")
    if scale is not None:
        scales = (float(scale), float(scale))
    else:
        scales = (out_hw[0] / in_hw[0], out_hw[1] / in_hw[1])
    return scales, out_hw


def _resize_dim(x: torch.Tensor, dim: int, out_len: int, scale: float) -> torch.Tensor:
    """Resize along dim -2 (rows) or -1 (columns) with a single matmul."""
    in_len = x.shape[dim]
    mat = _weight_matrix(in_len, out_len, scale, x.dtype, x.device)
    if dim == -2:
        return torch.matmul(mat, x)
    return torch.matmul(x, mat.transpose(0, 1))


def _order(scales: tuple[float, float]) -> tuple[int, int]:
    """MATLAB resizes the most-shrunk dimension first (stable: rows win ties)."""
    return (-2, -1) if scales[0] <= scales[1] else (-1, -2)


def imresize(
    x: torch.Tensor,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` on float tensors of shape (..., H, W).

    Give ``scale`` (same factor for H and W), ``size`` (H, W), or both (size
    then only fixes the output shape, like MATLAB's internal call). No
    clamping or rounding is done, so values may overshoot the input range.
    """
    if x.ndim < 2:
        raise ValueError(f"expected a tensor of shape (..., H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"imresize needs a floating point tensor, got {x.dtype}")
    in_hw = (int(x.shape[-2]), int(x.shape[-1]))
    scales, out_hw = _resolve(in_hw, scale, size)

    out = x
    for dim in _order(scales):
        k = 0 if dim == -2 else 1
        if in_hw[k] == out_hw[k] and scales[k] == 1.0:
            continue  # identity: MATLAB's weights reduce to a delta here
        out = _resize_dim(out, dim, out_hw[k], scales[k])
    return out


def _round_uint8(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's double->uint8 cast: round half away from zero, then saturate."""
    return (torch.sign(x) * torch.floor(torch.abs(x) + 0.5)).clamp_(0, 255)


def mod_crop(img: _ArrayT, scale: int) -> _ArrayT:
    """Crop the bottom/right so both sides divide by ``scale`` (top-left kept).

    Numpy arrays are taken as (H, W) or (H, W, C); torch tensors as (..., H, W).
    HR images must be cropped like this so that LR * scale == HR exactly.
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2], img.shape[-1]
        return img[..., : h - h % scale, : w - w % scale]
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale, ...]


def bicubic_downscale_uint8(hr: np.ndarray, scale: int) -> np.ndarray:
    """Make an LR uint8 image exactly as MATLAB's ``imresize(hr, 1/scale, 'bicubic')``.

    MATLAB resizes uint8 input one dimension at a time and stores the
    intermediate result as uint8, so the intermediate is rounded too; that
    is what makes the output bit-exact with the official benchmark LR files.
    """
    if hr.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {hr.dtype}")
    if hr.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C), got shape {hr.shape}")
    hr = mod_crop(hr, int(scale))
    h, w = hr.shape[0], hr.shape[1]
    if h == 0 or w == 0:
        raise ValueError(f"image smaller than scale {scale}")

    t = torch.from_numpy(np.array(hr, dtype=np.float64))
    if t.ndim == 3:
        t = t.permute(2, 0, 1)  # (C, H, W)
    s = 1.0 / scale
    out_hw = (h // scale, w // scale)
    for dim in _order((s, s)):
        k = 0 if dim == -2 else 1
        t = _round_uint8(_resize_dim(t, dim, out_hw[k], s))
    if t.ndim == 3:
        t = t.permute(1, 2, 0)
    return t.to(torch.uint8).numpy()
