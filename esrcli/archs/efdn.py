"""EFDN (Wang, NTIRE 2022 ESR): edge-enhanced feature distillation with EDBB convs and ESA."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SRNet, count_indexed
from .blocks import EDBB, RepConvAct


class ESA(nn.Module):
    """Enhanced spatial attention: a strided, pooled low-resolution branch gates the features."""

    def __init__(self, channels: int, reduced: int = 12) -> None:
        super().__init__()
        f = reduced
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv_max = nn.Conv2d(f, f, 3, padding=1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv3_ = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        c1_ = self.conv1(x)
        # Inputs under 17 px are too small for the strided, pooled branch (the original crashes): pad the
        # features to 17 first. sym_max keeps the pad symbolic, so an ONNX export stays right at every size.
        h, w = x.shape[-2:]
        c1 = self.conv2(F.pad(c1_, (0, torch.sym_max(0, 17 - w), 0, torch.sym_max(0, 17 - h)), mode="replicate"))
        v = F.max_pool2d(c1, kernel_size=7, stride=3)
        v = F.relu(self.conv_max(v))
        c3 = F.relu(self.conv3(v))
        c3 = self.conv3_(c3)
        c3 = F.interpolate(c3, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class Conv1x1Act(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1x1 = nn.Conv2d(channels, channels, 1)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv1x1(x))


class Cell(nn.Module):
    """1x1 + two EDBBs in sequence, every stage distilled through a 1x1 branch, then ESA and a skip."""

    def __init__(self, channels: int, form: str) -> None:
        super().__init__()
        c = channels
        self.conv1 = Conv1x1Act(c)
        self.conv2 = EDBB(c) if form == "train" else RepConvAct(c)
        self.conv3 = EDBB(c) if form == "train" else RepConvAct(c)
        self.fuse = nn.Conv2d(2 * c, c, 1)
        self.branch = nn.ModuleList(nn.Conv2d(c, c // 2, 1) for _ in range(4))
        self.att = ESA(c)

    def forward(self, x: Tensor) -> Tensor:
        t1 = self.conv1(x)
        t2 = self.conv2(t1)
        t3 = self.conv3(t2)
        distilled = torch.cat([b(t) for b, t in zip(self.branch, (x, t1, t2, t3))], dim=1)
        return self.att(self.fuse(distilled)) + x


class EFDN(SRNet):
    """EFDN: four cells with local fusion (the third fuses o2 with o4), a global skip, clamped output."""

    arch = "efdn"
    title = "EFDN"
    detect_order = 40
    local = False  # the attention branch pools and resamples: its reach depends on the tile's size

    def __init__(self, channels: int = 48, scale: int = 4, form: str = "fused") -> None:
        super().__init__(scale=scale, config=dict(channels=channels, scale=scale), form=form)
        c = channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.cells = nn.ModuleList(Cell(c, form) for _ in range(4))
        self.local_fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for _ in range(3))
        self.tail = nn.Sequential(nn.Conv2d(c, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: Tensor) -> Tensor:
        o0 = self.head(x)
        o1 = self.cells[0](o0)
        o2 = self.cells[1](o1)
        o2f = self.local_fuse[0](torch.cat([o1, o2], dim=1))
        o3 = self.cells[2](o2f)
        o3f = self.local_fuse[1](torch.cat([o2, o3], dim=1))
        o4 = self.cells[3](o3f)
        o4f = self.local_fuse[2](torch.cat([o2, o4], dim=1))
        return self.tail(o4f + o0).clamp(0.0, 1.0)

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        if "head.weight" not in sd or "local_fuse.0.weight" not in sd or "cells.0.att.conv1.weight" not in sd:
            return None
        if count_indexed(sd, "cells") != 4:
            return None
        return dict(
            channels=sd["head.weight"].shape[0],
            scale=math.isqrt(sd["tail.0.weight"].shape[0] // 3),
            form="train" if "cells.0.conv2.conv3x3.weight" in sd else "fused",
        )
