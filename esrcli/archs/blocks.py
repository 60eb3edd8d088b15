"""Re-parameterisable blocks in their training and inference forms.

A training-form block (`Reparameterizable`) knows how to produce the state dict of
its inference form (`fused_state_dict`): `fuse_model` in `esrcli.archs` walks a
training-form network and builds the inference network from those pieces. Key
names follow the released checkpoints, so fused outputs load where theirs do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..reparam import (
    Kernel,
    add,
    center_pad,
    compose_chain,
    conv_kernel,
    depthwise_to_dense,
    identity_kernel,
)


class Reparameterizable(nn.Module):
    """A training-form block that folds into the convs of its inference form."""

    stale_keys: tuple[str, ...] = ()
    """Keys that released training-form files carry but that are recomputed, never trusted."""

    def fused_state_dict(self) -> dict[str, Tensor]:
        raise NotImplementedError


def as_eval_conv(kernel: Kernel, like: Tensor) -> dict[str, Tensor]:
    weight, bias = kernel
    return {"eval_conv.weight": weight.to(like.dtype), "eval_conv.bias": bias.to(like.dtype)}


class EvalConv(nn.Module):
    """Inference form of Conv3XC and GRep: one conv, stored as `eval_conv` like the released files."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.eval_conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.eval_conv(x)


class Conv3XC(Reparameterizable):
    """SPAN's 3x3 conv, trained as 1x1 -> 3x3 -> 1x1 (width x gain) plus a 1x1 skip.

    The input is padded once before the first 1x1, which is what makes the fused 3x3
    exact at the borders.
    """

    stale_keys = ("eval_conv.weight", "eval_conv.bias")

    def __init__(self, c_in: int, c_out: int, gain: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1, bias=bias)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1, bias=bias),
            nn.Conv2d(c_in * gain, c_out * gain, 3, bias=bias),
            nn.Conv2d(c_out * gain, c_out, 1, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)

    def kernel(self) -> Kernel:
        chain = compose_chain([conv_kernel(c) for c in self.conv])
        return add([chain, conv_kernel(self.sk)])

    def fused_state_dict(self) -> dict[str, Tensor]:
        return as_eval_conv(self.kernel(), like=next(self.parameters()))


class GRep(Reparameterizable):
    """General re-parameterisation: parallel conv chains (plus identity) merged into one k x k conv.

    `chains` lists each branch's kernel sizes, e.g. ((9,), (1,), (1, 9), (3, 3, 3, 3)) for a
    9x9 head: every chain's receptive field, sum(k - 1) + 1, must be odd and at most
    `kernel_size`. Intermediate convs of a chain are `width` channels wide.
    """

    stale_keys = ("eval_conv.weight", "eval_conv.bias")

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        chains: Sequence[Sequence[int]] = ((3,), (1,)),
        identity: bool = False,
        width: int | None = None,
    ) -> None:
        super().__init__()
        if identity and c_in != c_out:
            raise ValueError("an identity branch needs c_in == c_out")
        width = width or c_out
        self.kernel_size = kernel_size
        self.identity = identity
        self.pads: list[int] = []
        branches = []
        for sizes in chains:
            field = sum(k - 1 for k in sizes) + 1
            if field > kernel_size or field % 2 == 0:
                raise ValueError(f"chain {tuple(sizes)} has a {field}x{field} field: not mergeable into {kernel_size}x{kernel_size}")
            layers = []
            for i, k in enumerate(sizes):
                cin = c_in if i == 0 else width
                cout = c_out if i == len(sizes) - 1 else width
                layers.append(nn.Conv2d(cin, cout, k))
            branches.append(nn.Sequential(*layers))
            self.pads.append(field // 2)
        self.chains = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.identity else None
        for pad, chain in zip(self.pads, self.chains):
            y = chain(F.pad(x, (pad,) * 4))
            out = y if out is None else out + y
        return out

    def kernel(self) -> Kernel:
        kernels = [compose_chain([conv_kernel(c) for c in chain]) for chain in self.chains]
        if self.identity:
            kernels.append(identity_kernel(kernels[0][0].shape[0], like=kernels[0][0]))
        weight, bias = add(kernels)
        return center_pad(weight, self.kernel_size), bias

    def fused_state_dict(self) -> dict[str, Tensor]:
        return as_eval_conv(self.kernel(), like=next(self.parameters()))


SOBEL_X = ((1.0, 0.0, -1.0), (2.0, 0.0, -2.0), (1.0, 0.0, -1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


class ScaledMask(nn.Module):
    """A fixed depthwise 3x3 mask with a learnable per-channel scale and bias (EDBB's edge filters)."""

    def __init__(self, channels: int, mask: Sequence[Sequence[float]]) -> None:
        super().__init__()
        self.register_buffer("mask", torch.tensor(mask), persistent=False)
        self.scale = nn.Parameter(torch.randn(channels, 1, 1, 1) * 1e-3)
        self.bias = nn.Parameter(torch.randn(channels) * 1e-3)

    def depthwise_weight(self) -> Tensor:
        return self.scale * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.depthwise_weight(), self.bias, groups=x.shape[1])

    def kernel(self) -> Kernel:
        return depthwise_to_dense(self.depthwise_weight().detach().double()), self.bias.detach().double()


class EDBB(Reparameterizable):
    """EFDN's edge-enhanced diverse branch block (the paper's seven branches) and its activation.

    Branches, all summed before the PReLU: 3x3; 1x1; 1x1 -> 3x3; 1x1 -> Sobel-x; 1x1 -> Sobel-y;
    1x1 -> Laplacian; identity. Each 1x1 -> 3x3 pair runs on an input padded once, which equals
    padding the 1x1's output with its own bias, so the merge is exact at the borders.
    """

    def __init__(self, channels: int, width: int | None = None) -> None:
        super().__init__()
        c, w = channels, width or channels
        self.conv3x3 = nn.Conv2d(c, c, 3)
        self.conv1x1 = nn.Conv2d(c, c, 1)
        self.conv1x1_3x3 = nn.Sequential(nn.Conv2d(c, w, 1), nn.Conv2d(w, c, 3))
        self.conv1x1_sbx = nn.Sequential(nn.Conv2d(c, c, 1), ScaledMask(c, SOBEL_X))
        self.conv1x1_sby = nn.Sequential(nn.Conv2d(c, c, 1), ScaledMask(c, SOBEL_Y))
        self.conv1x1_lpl = nn.Sequential(nn.Conv2d(c, c, 1), ScaledMask(c, LAPLACIAN))
        self.act = nn.PReLU(c)

    def _three_by_three(self) -> list[nn.Module]:
        return [self.conv3x3, self.conv1x1_3x3, self.conv1x1_sbx, self.conv1x1_sby, self.conv1x1_lpl]

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (1, 1, 1, 1))
        y = x + self.conv1x1(x)
        for branch in self._three_by_three():
            y = y + branch(padded)
        return self.act(y)

    def kernel(self) -> Kernel:
        def chain_kernel(m: nn.Module) -> Kernel:
            layers = list(m) if isinstance(m, nn.Sequential) else [m]
            return compose_chain([layer.kernel() if isinstance(layer, ScaledMask) else conv_kernel(layer) for layer in layers])

        kernels = [chain_kernel(m) for m in self._three_by_three()]
        kernels.append(conv_kernel(self.conv1x1))
        kernels.append(identity_kernel(self.conv1x1.out_channels, like=self.conv1x1.weight))
        return add(kernels)

    def fused_state_dict(self) -> dict[str, Tensor]:
        weight, bias = self.kernel()
        dtype = self.act.weight.dtype
        return {"rep_conv.weight": weight.to(dtype), "rep_conv.bias": bias.to(dtype), "act.weight": self.act.weight.detach()}


class RepConvAct(nn.Module):
    """Inference form of EDBB: `rep_conv` then `act`, the released EFDN layout."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rep_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.rep_conv(x))
