"""Kernel algebra for structural re-parameterisation.

A training-form block is a sum of parallel branches, each branch a chain of
convolutions applied to an input that was zero-padded *once* for the whole
chain. Under that convention every chain is exactly one convolution whose
kernel is the spatial composition of its kernels, at the borders too, and
parallel branches add once their kernels are centre-padded to one size. The
functions here work on `Kernel` pairs (weight, bias) and know nothing of
modules, so Conv3XC, EDBB, GRep and LoRA merging all share them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Kernel = tuple[Tensor, Tensor]
"""A dense convolution: weight (out, in, k, k) and bias (out,)."""


def conv_kernel(conv: nn.Conv2d) -> Kernel:
    """The (weight, bias) of a dense conv in float64, with a zero bias when it has none.

    Kernel algebra runs in float64 so that a fused conv differs from its branches by the
    rounding of one fp32 convolution, not by the rounding of the algebra as well.
    """
    if conv.groups != 1:
        raise ValueError("grouped convs must be made dense first (see depthwise_to_dense)")
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else weight.new_zeros(weight.shape[0])
    return weight, bias


def depthwise_to_dense(weight: Tensor) -> Tensor:
    """A depthwise (C, 1, k, k) kernel as the equivalent dense (C, C, k, k) one."""
    channels = weight.shape[0]
    eye = torch.eye(channels, dtype=weight.dtype, device=weight.device)
    return eye[:, :, None, None] * weight[:, 0][:, None]


def identity_kernel(channels: int, size: int = 1, *, like: Tensor | None = None) -> Kernel:
    """The kernel of x -> x, centred in a size x size window."""
    kwargs = {"dtype": like.dtype, "device": like.device} if like is not None else {}
    weight = torch.zeros(channels, channels, size, size, **kwargs)
    idx = torch.arange(channels, device=weight.device)
    weight[idx, idx, size // 2, size // 2] = 1.0
    return weight, weight.new_zeros(channels)


def center_pad(weight: Tensor, size: int) -> Tensor:
    """Zero-pad a k x k kernel to size x size, keeping it centred."""
    k = weight.shape[-1]
    if k == size:
        return weight
    if k > size or (size - k) % 2:
        raise ValueError(f"cannot centre a {k}x{k} kernel in {size}x{size}")
    p = (size - k) // 2
    return F.pad(weight, (p, p, p, p))


def compose(first: Kernel, second: Kernel) -> Kernel:
    """The kernel of `second(first(x))` for 'valid' convs on a once-padded input.

    The spatial sizes add (k1 + k2 - 1); the channel matrices multiply; the first
    bias passes through the second weight.
    """
    w1, b1 = first
    w2, b2 = second
    k2 = w2.shape[-1]
    # Full convolution of the kernels, treating w1's input channels as a batch.
    stacked = F.pad(w1.transpose(0, 1), (k2 - 1,) * 4)
    weight = F.conv2d(stacked, w2.flip(-1, -2)).transpose(0, 1)
    bias = w2.sum(dim=(2, 3)) @ b1 + b2
    return weight.contiguous(), bias


def compose_chain(kernels: list[Kernel]) -> Kernel:
    """Fold a chain of kernels, first applied first."""
    result = kernels[0]
    for kernel in kernels[1:]:
        result = compose(result, kernel)
    return result


def add(kernels: list[Kernel]) -> Kernel:
    """Sum parallel branches, centre-padding each kernel to the largest size."""
    size = max(w.shape[-1] for w, _ in kernels)
    weight = sum(center_pad(w, size) for w, _ in kernels)
    bias = sum(b for _, b in kernels)
    return weight, bias  # type: ignore[return-value]
