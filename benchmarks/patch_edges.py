"""How much of a small training patch is patch edge, and what a finetune learned there.

Usage: python benchmarks/patch_edges.py STUDENT [MODEL ...] [--data DIR] [--patch 32] [--count 32]

1. For STUDENT: the mean |difference| between its output on a PATCH-pixel LR patch and its output on the
   same pixels cut from a patch with 32 LR pixels of real context, by distance (LR pixels) from the patch
   edge. Where it is large, the output depends on where the patch was cut, which no whole image has.
2. For each MODEL (e.g. finetunes of STUDENT): the change in L1 to HR against STUDENT on those pixels,
   computed in context (as in a whole image) and as a lone patch (as in training without loss.border).
Models are anything `-m` takes.
"""

from __future__ import annotations

import argparse

import torch

from esrcli.loading import load_reference
from esrcli.train.data import PatchDataset, load_sources

CONTEXT = 32  # LR pixels around the patch: past SPAN's receptive field


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("student")
    parser.add_argument("models", nargs="*")
    parser.add_argument("--data", default="../shared/data/train/Photos2K")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--count", type=int, default=32)
    args = parser.parse_args()
    student = load_reference(args.student).network.eval()
    s, p, c = student.scale, args.patch, CONTEXT
    dataset = PatchDataset(load_sources([args.data], s), s, p + 2 * c, seed=123)
    names = [args.student, *args.models]
    networks = [student] + [load_reference(m).network.eval() for m in args.models]
    rings = torch.zeros(p // 2)
    l1_context, l1_patch = torch.zeros(len(networks)), torch.zeros(len(networks))
    for i in range(args.count):
        lr, hr = (t[None] for t in dataset[i])
        target = hr[..., c * s : (c + p) * s, c * s : (c + p) * s]
        for k, network in enumerate(networks):
            in_context = network(lr)[..., c * s : (c + p) * s, c * s : (c + p) * s]
            alone = network(lr[..., c : c + p, c : c + p])
            l1_context[k] += (in_context - target).abs().mean() / args.count
            l1_patch[k] += (alone - target).abs().mean() / args.count
            if k == 0:
                diff = (in_context - alone).abs().mean(dim=(0, 1))
                for d in range(p // 2):  # the ring of LR pixels at distance d from the nearest edge
                    inner = diff[d * s : (p - d) * s, d * s : (p - d) * s]
                    core = diff[(d + 1) * s : (p - d - 1) * s, (d + 1) * s : (p - d - 1) * s]
                    rings[d] += (inner.sum() - core.sum()) / (inner.numel() - core.numel()) / args.count
    print(f"{args.student}: mean |patch - in context| by LR distance from the patch edge ({args.count} patches of {p} px, {args.data})")
    print("  " + "  ".join(f"{d}:{v:.1e}" for d, v in enumerate(rings.tolist())))
    for border in (4, 8, 12):
        if 2 * border < p:
            print(f"  {1 - (p - 2 * border) ** 2 / p**2:.0%} of a {p} px patch lies within {border} px of an edge")
    print("\nL1 to HR (change against the student): in context | as a lone patch")
    for k, name in enumerate(names):
        dc, dp = l1_context[k] - l1_context[0], l1_patch[k] - l1_patch[0]
        print(f"  {name}: {l1_context[k]:.6f} ({dc:+.2e}) | {l1_patch[k]:.6f} ({dp:+.2e})")


if __name__ == "__main__":
    main()
