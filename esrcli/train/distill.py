"""DSCLoRA's supervision: the frozen teacher's output and its spatial affinities at the taps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lora import affinity_loss, taps
from ..registry import load_model
from .config import LoraConfig
from .losses import trim


class Distillation:
    """Loss hook for the trainer: teacher_weight * L1(SR_s, SR_t) + affinity_weight * sum of affinity losses.

    The student's taps are recorded by hooks during its own forward; the teacher runs in eval
    mode without gradients on the same LR batch. `border` LR pixels at each edge are left out of
    both terms, as the trainer leaves them out of the HR terms.
    """

    def __init__(self, cfg: LoraConfig, student: nn.Module, device: torch.device, border: int = 0) -> None:
        if not cfg.teacher:
            raise ValueError("a LoRA run needs a teacher (lora.teacher)")
        self.cfg, self.border = cfg, border
        self.teacher = load_model(cfg.teacher, device=device, progress=False).network.eval()
        if self.teacher.scale != student.scale:
            raise ValueError(f"the teacher is x{self.teacher.scale} but the student is x{student.scale}")
        self._student_taps = taps(student, cfg.taps)
        self.student_features = self._student_taps.__enter__()  # stays registered for the run

    def __call__(self, lr: Tensor, sr: Tensor, hr: Tensor) -> tuple[Tensor, dict[str, float]]:
        with torch.no_grad(), taps(self.teacher, self.cfg.taps) as teacher_features:
            sr_t = trim(self.teacher(lr).float(), self.border * self.teacher.scale)
        parts: dict[str, Tensor] = {}
        if self.cfg.teacher_weight:
            parts["teacher"] = self.cfg.teacher_weight * F.l1_loss(sr, sr_t)
        if self.cfg.affinity_weight:
            names = sorted(self.student_features)
            if sorted(teacher_features) != names:
                raise ValueError(f"teacher and student taps differ: {sorted(teacher_features)} vs {names}")
            aff = sum(
                affinity_loss(self._trim(self.student_features[n], lr), self._trim(teacher_features[n], lr), self.cfg.affinity_chunk)
                for n in names
            )
            parts["affinity"] = self.cfg.affinity_weight * aff
        total = sum(parts.values()) if parts else sr.new_zeros(())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def _trim(self, feature: Tensor, lr: Tensor) -> Tensor:
        """A tapped feature map without the border, scaled to the map's own resolution."""
        return trim(feature, self.border * feature.shape[-2] // lr.shape[-2])
