"""Loss hooks that supervise a network with another: DSCLoRA's frozen teacher (its output and spatial
affinities at the taps), and ESPAN's self-distillation (a deeper copy of the network teaches it).

A hook is called with the LR batch and the border-trimmed SR and HR and returns (loss, parts); a
hook with a `forward(model, lr, step)` method runs the network's forward itself. The parts stay detached on
the device: the trainer reads them back only when it logs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..imresize import mod_crop
from ..loading import load_reference
from ..lora import affinity_loss, tapped, taps
from ..runconfig import LoraConfig, TrainConfig, TrainingError
from .data import Source, bicubic_lr
from .losses import LossFn, trim


def load_teacher(reference: str, scale: int, device: torch.device, against: str = "run") -> nn.Module:
    """The frozen teacher of a distillation, refused in one line where its scale is not the run's."""
    teacher = load_reference(reference, native=scale, device=device, progress=False).network.eval().requires_grad_(False)
    if teacher.scale != scale:
        raise TrainingError(f"the teacher {reference} is x{teacher.scale} but the {against} is x{scale}: pick models of one scale")
    return teacher


@torch.inference_mode()
def label_with_teacher(sources: list[Source], scale: int, teacher: nn.Module, device: torch.device) -> list[Source]:
    """Each image with its bicubic LR (MATLAB's, as the stored LR files are) and the teacher's output on
    that whole LR, 8-bit. Done once per run: the teacher then costs no time per step, and it sees each
    patch with the context of the whole image rather than the patch's zero padding."""
    labelled = []
    for source in sources:
        hr = mod_crop(source.hr, scale)
        lr = source.lr
        if lr is None:
            big = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).to(torch.float64) / 255
            lr = (bicubic_lr(big, scale) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        x = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)[None].to(device, torch.float32) / 255
        sr = teacher(x).float().clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()
        labelled.append(replace(source, hr=hr, lr=lr, teacher=sr))
    return labelled


class Distillation:
    """Loss hook for the trainer: teacher_weight * L1(SR_s, SR_t) + affinity_weight * sum of affinity losses.

    The student's taps are recorded by hooks during its own forward; the teacher runs in eval
    mode without gradients on the same LR batch. `border` LR pixels at each edge are left out of
    both terms, as the trainer leaves them out of the HR terms.
    """

    def __init__(self, cfg: LoraConfig, student: nn.Module, device: torch.device, border: int = 0) -> None:
        if not cfg.teacher:
            raise TrainingError("a LoRA run needs a teacher (--teacher or lora.teacher)")
        self.cfg, self.border = cfg, border
        self.teacher = load_teacher(cfg.teacher, student.scale, device, against="student")
        if cfg.affinity_weight:
            for network, role in ((student, "student"), (self.teacher, "teacher")):
                if not tapped(network, cfg.taps):
                    raise TrainingError(
                        f"no module of the {role} ({network.arch}) matches lora.taps {list(cfg.taps)}; "
                        "set lora.taps to its layers or lora.affinity_weight = 0"
                    )
        self._student_taps = taps(student, cfg.taps if cfg.affinity_weight else [])
        self.student_features = self._student_taps.__enter__()  # stays registered for the run

    def __call__(self, lr: Tensor, sr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad(), taps(self.teacher, self.cfg.taps) as teacher_features:
            sr_t = trim(self.teacher(lr).float(), self.border * self.teacher.scale)
        parts: dict[str, Tensor] = {}
        if self.cfg.teacher_weight:
            parts["teacher"] = self.cfg.teacher_weight * F.l1_loss(sr, sr_t)
        if self.cfg.affinity_weight:
            names = sorted(self.student_features)
            if sorted(teacher_features) != names:
                raise TrainingError(f"teacher and student taps differ: {sorted(teacher_features)} vs {names}")
            aff = sum(
                affinity_loss(self._trim(self.student_features[n], lr), self._trim(teacher_features[n], lr), self.cfg.affinity_chunk)
                for n in names
            )
            parts["affinity"] = self.cfg.affinity_weight * aff
        total = sum(parts.values()) if parts else sr.new_zeros(())
        return total, {k: v.detach() for k, v in parts.items()}  # read back by the trainer when it logs

    def _trim(self, feature: Tensor, lr: Tensor) -> Tensor:
        """A tapped feature map without the border, scaled to the map's own resolution."""
        return trim(feature, self.border * feature.shape[-2] // lr.shape[-2])


def extra_blocks_at(cfg: TrainConfig, step: int) -> int:
    """ESPAN self-distillation: how many teacher blocks remain at `step` (deeper, then shrink)."""
    r = cfg.recipe
    every = r.shrink_every or max(1, cfg.run.steps // (r.extra_blocks + 1))
    return max(0, r.extra_blocks - step // every)


class SelfDistillation:
    """ESPAN's recipe: the network trains at its own depth and at a deeper one (the teacher, sharing
    the trunk), the teacher's output pulls the student's where it is better by more than a margin,
    and the extra blocks are dropped one by one (progressive shrinking) until only the student remains."""

    def __init__(self, cfg: TrainConfig, loss_fn: LossFn, border: int = 0) -> None:
        self.cfg, self.loss_fn = cfg, loss_fn
        self.depth = cfg.model.args.get("n_blocks", 5)
        self.edge = border * cfg.model.scale
        self.teacher_out: Tensor | None = None

    def forward(self, model: nn.Module, lr: Tensor, step: int) -> Tensor:
        extra = extra_blocks_at(self.cfg, step)
        if extra == 0:
            self.teacher_out = None
            return model(lr, depths=(self.depth,))[0]
        student, self.teacher_out = model(lr, depths=(self.depth, self.depth + extra))
        return student

    def __call__(self, lr: Tensor, sr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.teacher_out is None:
            return sr.new_zeros(()), {}
        teacher = trim(self.teacher_out.float(), self.edge)
        self.teacher_out = None
        l_teacher, _ = self.loss_fn(teacher, hr)
        with torch.no_grad():
            mask = ((sr - hr).abs() - (teacher - hr).abs() > self.cfg.recipe.sd_margin).float()
        l_sd = F.mse_loss((teacher.detach() - sr) * mask, torch.zeros_like(sr))
        weight = self.cfg.recipe.sd_weight
        return l_teacher + weight * l_sd, {"teacher": l_teacher.detach(), "sd": l_sd.detach() * weight}
