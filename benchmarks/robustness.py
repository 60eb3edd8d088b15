"""PSNR (Y) of models on clean and degraded x4 inputs: the table behind README's "Real-world photos".

Usage: python benchmarks/robustness.py [--shared ../shared] [-m esr-tiny -m esr-tiny-real ...] [--json FILE]

Every condition is `esr bench quality --degrade SPEC`'s: LR made from HR by a fixed, seeded
degradation, identical on every run. Bicubic (MATLAB) is scored by the same code as the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esrcli.bench import MatlabBicubic, evaluate_set
from esrcli.loading import load_reference

CONDITIONS = ("clean", "jpeg:70", "jpeg:50", "noise:10", "blur:1.2+noise:5+jpeg:60")
SETS = ("Set5", "Set14", "BSD100")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default="../shared", type=Path)
    parser.add_argument("-m", "--model", action="append", dest="models")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()
    models = args.models or ["bicubic", "esr-tiny", "esr-tiny-real"]
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for name in models:
        network = MatlabBicubic(4) if name == "bicubic" else load_reference(name, scale=4, progress=False).network.eval()
        scores[name] = {}
        for condition in CONDITIONS:
            degrade = None if condition == "clean" else condition
            scores[name][condition] = {
                s: round(evaluate_set(network, 4, args.shared / "data" / "benchmark" / s, with_ssim=False, degrade=degrade).psnr, 2)
                for s in SETS
            }
            print(f"{name:16} {condition:26} " + " / ".join(f"{v:.2f}" for v in scores[name][condition].values()), flush=True)
    print()
    print("| x4, Y PSNR (dB), Set5 / Set14 / BSD100 | " + " | ".join(models) + " |")
    print("|---" * (len(models) + 1) + "|")
    for condition in CONDITIONS:
        cells = [" / ".join(f"{v:.2f}" for v in scores[m][condition].values()) for m in models]
        print(f"| {condition} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
