"""The SPAN family: SPAN (any width, slim tail), ESPAN and SPAN-F.

All three share the SPAB block. Every module takes `form`: "fused" builds the
inference layout of the released checkpoints (`*.eval_conv`), "train" builds the
re-parameterisable training layout (Conv3XC, GRep) that `fuse_model` folds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ChannelSet, LoRAGroup, LoRAPlacement, SRNet, count_indexed
from .blocks import Conv3XC, EvalConv, GRep

SPAN_RGB_MEAN = (0.4488, 0.4371, 0.4040)
ESPAN_HEAD_CHAINS: tuple[tuple[int, ...], ...] = ((9,), (1,), (1, 9), (3, 3, 3, 3))


def rep_conv(c_in: int, c_out: int, form: str, kernel_size: int = 3, chains: Sequence[Sequence[int]] | None = None) -> nn.Module:
    """A k x k conv that trains re-parameterised: Conv3XC for 3x3, GRep for other sizes."""
    if form == "fused":
        return EvalConv(c_in, c_out, kernel_size)
    if kernel_size == 3 and chains is None:
        return Conv3XC(c_in, c_out)
    return GRep(c_in, c_out, kernel_size, chains or ((kernel_size,), (1,)))


class SPAB(nn.Module):
    """Swift parameter-free attention block.

    Returns the block output and SiLU(c1_r(x)): SPAN's tail concatenates that activation,
    and the official code applies SiLU in place, so the activation (not h1) is what it sees.
    """

    def __init__(self, c_in: int, c_out: int | None = None, n_convs: int = 3, attention: bool = True, form: str = "fused") -> None:
        super().__init__()
        c_out = c_out or c_in
        if attention and c_in != c_out:
            raise ValueError("SPAB attention adds the input: c_in must equal c_out")
        if n_convs not in (2, 3):
            raise ValueError("SPAB has two or three convs")
        self.n_convs = n_convs
        self.attention = attention
        self.c1_r = rep_conv(c_in, c_out, form)
        self.c2_r = rep_conv(c_out, c_out, form)
        if n_convs == 3:
            self.c3_r = rep_conv(c_out, c_out, form)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first = F.silu(self.c1_r(x))
        h = self.c2_r(first)
        if self.n_convs == 3:
            h = self.c3_r(F.silu(h))
        if not self.attention:
            return h, first
        return (h + x) * (torch.sigmoid(h) - 0.5), first


def _scale_from(out_channels: int, colours: int = 3) -> int:
    scale = math.isqrt(out_channels // colours)
    if scale * scale * colours != out_channels:
        raise ValueError(f"{out_channels} output channels is not {colours} x scale^2")
    return scale


def _conv_weight(sd: Mapping[str, Tensor], prefix: str) -> Tensor | None:
    """The weight that tells a rep conv's shape, in either form."""
    for suffix in ("eval_conv.weight", "sk.weight", "weight"):
        if f"{prefix}.{suffix}" in sd:
            return sd[f"{prefix}.{suffix}"]
    return None


def _form(sd: Mapping[str, Tensor], probe: str) -> str:
    return "train" if any(k.startswith(probe) for k in sd) else "fused"


class SPAN(SRNet):
    """SPAN (Wan et al., NTIRE 2024 ESR winner): six SPABs, a 4C concat tail, pixel shuffle.

    `cat_channels` narrows the concat conv (the slim-tail variant); `norm` subtracts the
    DIV2K mean and multiplies by 255 on the way in (the output is not de-normalised).
    """

    arch = "span"
    title = "SPAN"
    detect_order = 30  # after ESPAN and SPAN-F, whose weights hold SPAN's key names too
    spandrel = True
    # Where the released DSCLoRA training code puts adapters: every block conv r=2/alpha=4, the conv
    # before the pixel shuffle and the pixel-shuffle conv r=8/alpha=16 (conv_1 and conv_cat frozen);
    # its affinity distillation taps the pre-activation convs of blocks 1 to 3.
    lora = LoRAPlacement(
        groups=(
            LoRAGroup("block_*.c?_r.eval_conv", 2, 4.0),
            LoRAGroup("conv_2.eval_conv", 8, 16.0),
            LoRAGroup("upsampler.0", 8, 16.0),
        ),
        taps=("block_1.c?_r", "block_2.c?_r", "block_3.c?_r"),
    )

    def __init__(
        self,
        channels: int = 48,
        scale: int = 4,
        cat_channels: int | None = None,
        norm: bool = True,
        in_channels: int = 3,
        out_channels: int = 3,
        form: str = "fused",
    ) -> None:
        super().__init__(
            scale=scale,
            config=dict(
                channels=channels, scale=scale, cat_channels=cat_channels, norm=norm, in_channels=in_channels, out_channels=out_channels
            ),
            form=form,
        )
        c, cat = channels, cat_channels or channels
        self.norm = norm
        if norm:
            self.register_buffer("mean", torch.tensor(SPAN_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        else:
            self.register_buffer("no_norm", torch.zeros(1))
        self.conv_1 = rep_conv(in_channels, c, form)
        for i in range(1, 7):
            setattr(self, f"block_{i}", SPAB(c, form=form))
        self.conv_cat = nn.Conv2d(4 * c, cat, 1)
        self.conv_2 = rep_conv(c, c, form)
        self.upsampler = nn.Sequential(nn.Conv2d(cat, out_channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def channel_sets(self) -> dict[str, ChannelSet] | None:
        """The trunk (the head's output and every block's residual stream), each block's two inner
        widths, conv_2's output and the concat conv's output; fused form only (plain convs)."""
        if self.form != "fused":
            return None
        c = self.config["channels"]
        conv = {name: f"{name}.eval_conv" for name in ["conv_1", "conv_2"] + [f"block_{i}.c{j}_r" for i in range(1, 7) for j in (1, 2, 3)]}
        sets = {
            "trunk": ChannelSet(
                (conv["conv_1"], *(conv[f"block_{i}.c3_r"] for i in range(1, 7))),
                (*((conv[f"block_{i}.c1_r"], 0) for i in range(1, 7)), (conv["conv_2"], 0), ("conv_cat", 0), ("conv_cat", 2 * c)),
            ),
            "conv_2": ChannelSet((conv["conv_2"],), (("conv_cat", c),)),
            "conv_cat": ChannelSet(("conv_cat",), (("upsampler.0", 0),)),
        }
        for i in range(1, 7):  # block 6's first activation also goes to the concat (SPAN's fourth input)
            sets[f"block_{i}.c1_r"] = ChannelSet(
                (conv[f"block_{i}.c1_r"],), ((conv[f"block_{i}.c2_r"], 0), *((("conv_cat", 3 * c),) if i == 6 else ()))
            )
            sets[f"block_{i}.c2_r"] = ChannelSet((conv[f"block_{i}.c2_r"],), ((conv[f"block_{i}.c3_r"], 0),))
        return sets

    def forward(self, x: Tensor) -> Tensor:
        if self.norm:
            x = (x - self.mean) * 255.0
        f0 = self.conv_1(x)
        b1, _ = self.block_1(f0)
        b, _ = self.block_2(b1)
        b, _ = self.block_3(b)
        b, _ = self.block_4(b)
        b, _ = self.block_5(b)
        b6, act = self.block_6(b)
        b6 = self.conv_2(b6)
        return self.upsampler(self.conv_cat(torch.cat([f0, b6, b1, act], dim=1)))

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        head = _conv_weight(sd, "conv_1")
        if head is None or "conv_cat.weight" not in sd or "upsampler.0.weight" not in sd or _conv_weight(sd, "block_6.c3_r") is None:
            return None
        out_channels = 3
        return dict(
            channels=head.shape[0],
            scale=_scale_from(sd["upsampler.0.weight"].shape[0], out_channels),
            cat_channels=None if sd["conv_cat.weight"].shape[0] == head.shape[0] else sd["conv_cat.weight"].shape[0],
            norm="no_norm" not in sd,
            in_channels=head.shape[1],
            out_channels=out_channels,
            form=_form(sd, "conv_1.sk."),
        )


class ESPAN(SRNet):
    """ESPAN (NTIRE 2025 ESR): a 9x9 head, SPABs, and the self-distillation teacher's tail.

    The released model is the grown-then-shrunk "teacher" path: `teacher_block_seq` is a
    two-conv SPAB and the tail concatenates its output itself (not a SiLU tap).
    """

    arch = "espan"
    title = "ESPAN"
    detect_order = 10

    def __init__(self, channels: int = 32, scale: int = 4, n_blocks: int = 5, head_kernel: int = 9, form: str = "fused") -> None:
        super().__init__(scale=scale, config=dict(channels=channels, scale=scale, n_blocks=n_blocks, head_kernel=head_kernel), form=form)
        c = channels
        self.n_blocks = n_blocks
        self.conv_1 = rep_conv(3, c, form, head_kernel, ESPAN_HEAD_CHAINS if head_kernel == 9 else None)
        for i in range(1, n_blocks + 1):
            setattr(self, f"block_{i}", SPAB(c, form=form))
        self.teacher_block_seq = SPAB(c, n_convs=2, form=form)
        self.tea_conv_2 = rep_conv(c, c, form)
        self.tea_conv_cat = nn.Conv2d(4 * c, c, 1)
        self.tea_upsampler = nn.Sequential(rep_conv(c, 3 * scale * scale, form), nn.PixelShuffle(scale))

    def forward(self, x: Tensor, depths: Sequence[int] | None = None) -> Tensor | tuple[Tensor, ...]:
        """The output; with `depths`, one output per backbone depth, sharing the blocks' work.

        Self-distillation trains the student (fewer blocks) and the deeper teacher through the
        same tail in one pass: `depths=(student, teacher)`.
        """
        f0 = self.conv_1(x)
        b1, _ = self.block_1(f0)
        taps = {1: b1}
        b = b1
        for i in range(2, max(depths or (self.n_blocks,)) + 1):
            b, _ = getattr(self, f"block_{i}")(b)
            taps[i] = b
        if depths is None:
            return self._tail(f0, b1, b)
        return tuple(self._tail(f0, b1, taps[d]) for d in depths)

    def _tail(self, f0: Tensor, b1: Tensor, b: Tensor) -> Tensor:
        b6, _ = self.teacher_block_seq(b)
        out = self.tea_conv_2(b6)
        return self.tea_upsampler(self.tea_conv_cat(torch.cat([f0, out, b1, b6], dim=1)))

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        if "tea_conv_cat.weight" not in sd or _conv_weight(sd, "teacher_block_seq.c1_r") is None:
            return None
        form = _form(sd, "tea_conv_2.sk.")
        if form == "fused":
            head_kernel = sd["conv_1.eval_conv.weight"].shape[-1]
        else:
            chain_ends = [k for k in sd if k.startswith("conv_1.chains.") and k.endswith(".weight")]
            head_kernel = max(
                sum(sd[k].shape[-1] - 1 for k in chain_ends if k.startswith(f"conv_1.chains.{i}.")) + 1
                for i in range(count_indexed(sd, "conv_1.chains"))
            )
        return dict(
            channels=sd["tea_conv_cat.weight"].shape[0],
            scale=_scale_from(_conv_weight(sd, "tea_upsampler.0").shape[0]),
            n_blocks=count_indexed(sd, "block", sep="_"),
            head_kernel=head_kernel,
            form=form,
        )


class SPANF(SRNet):
    """SPAN-F (NTIRE 2025 ESR): a depthwise 'near' branch on the input, no SPAN normalisation.

    block_1 widens 3 -> C with three convs and no attention; block_2..5 are SPABs; the
    tail concatenates the near branch, b5 and b1, and conv_2 produces the pixel-shuffle input.
    """

    arch = "spanf"
    title = "SPAN-F"
    detect_order = 20

    def __init__(self, channels: int = 32, scale: int = 4, n_blocks: int = 5, form: str = "fused") -> None:
        super().__init__(scale=scale, config=dict(channels=channels, scale=scale, n_blocks=n_blocks), form=form)
        c, near = channels, 3 * scale * scale
        self.n_blocks = n_blocks
        self.conv_near = nn.Conv2d(3, near, 3, padding=1, groups=3, bias=False)
        self.block_1 = SPAB(3, c, attention=False, form=form)
        for i in range(2, n_blocks + 1):
            setattr(self, f"block_{i}", SPAB(c, form=form))
        self.conv_cat = nn.Conv2d(near + 2 * c, c, 1)
        self.conv_2 = rep_conv(c, near, form)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        near = self.conv_near(x)
        b1, _ = self.block_1(x)
        b = b1
        for i in range(2, self.n_blocks + 1):
            b, _ = getattr(self, f"block_{i}")(b)
        return self.shuffle(self.conv_2(self.conv_cat(torch.cat([near, b, b1], dim=1))))

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        if "conv_near.weight" not in sd or _conv_weight(sd, "block_1.c1_r") is None:
            return None
        return dict(
            channels=_conv_weight(sd, "block_1.c1_r").shape[0],
            scale=_scale_from(sd["conv_near.weight"].shape[0]),
            n_blocks=count_indexed(sd, "block", sep="_"),
            form=_form(sd, "conv_2.sk."),
        )
