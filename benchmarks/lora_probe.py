"""How far apart two models are where DSCLoRA looks: output L1 and the spatial-affinity distance per tap.

Usage: python benchmarks/lora_probe.py STUDENT MODEL [MODEL ...] [--data DIR] [--lr-patch 32] [--count 8]
Models are anything `-m` takes. Prints, for each MODEL, L1 to HR, L1 to the student, and the affinity distance
at each default tap (raw pre-activation features, and mean-centred per channel).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from esrcli.loading import load_reference
from esrcli.lora import affinity_loss, taps
from esrcli.runconfig import LoraConfig
from esrcli.train.data import PatchDataset, load_sources


def centred(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=(2, 3), keepdim=True)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("student")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="../shared/data/train/Photos2K")
    parser.add_argument("--lr-patch", type=int, default=32)
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args()
    student = load_reference(args.student).network
    dataset = PatchDataset(load_sources([args.data], student.scale), student.scale, args.lr_patch)
    pairs = [dataset[i] for i in range(args.count)]
    lr, hr = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    patterns = LoraConfig().taps
    with taps(student, patterns) as student_features:
        sr_s = student(lr)
    print(f"student {args.student}: L1 to HR {F.l1_loss(sr_s, hr).item():.5f}")
    for ref in args.models:
        model = load_reference(ref).network
        with taps(model, patterns) as features:
            sr = model(lr)
        names = sorted(student_features)
        raw = [affinity_loss(student_features[n], features[n]).item() for n in names]
        mean_free = [affinity_loss(centred(student_features[n]), centred(features[n])).item() for n in names]
        print(f"{ref}: L1 to HR {F.l1_loss(sr, hr).item():.5f}, to the student {F.l1_loss(sr, sr_s).item():.5f}")
        print(f"  affinity per tap, raw:     {' '.join(f'{v:.3f}' for v in raw)} (sum {sum(raw):.3f})")
        print(f"  affinity per tap, centred: {' '.join(f'{v:.3f}' for v in mean_free)} (sum {sum(mean_free):.3f})")


if __name__ == "__main__":
    main()
