"""PSNR (Y) on clean and degraded inputs: the tables behind README's "Real-world photos and videos".

Usage: python benchmarks/robustness.py [--shared ../shared] [-m esr-tiny] [-s 4] [--sets Set5 Set14 BSD100] [--json FILE]

Every condition is `esr bench quality --degrade SPEC`'s: LR made from HR by a fixed, seeded degradation,
identical on every run. Columns: MATLAB bicubic, the model, its weights mixed with its robust partner's at
0.25 / 0.5 / 0.75, the partner itself (1), and `--denoise auto`, which measures each degraded LR as it would
a file (a degradation ending in JPEG was a JPEG file: its quality is read from the tables Pillow wrote).
Also reported: for each condition, how far auto is from the best fixed strength.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esrcli.api import Model
from esrcli.bench import MatlabBicubic, evaluate_set

CONDITIONS = ("clean", "jpeg:30", "jpeg:50", "jpeg:70", "jpeg:90", "noise:5", "noise:10", "noise:15", "blur:1.2+noise:5+jpeg:60")
SETS = ("Set5", "Set14", "BSD100")
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0, "auto")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=Path(__file__).resolve().parents[2] / "shared", type=Path)
    parser.add_argument("-m", "--model", default="esr-tiny")
    parser.add_argument("-s", "--scale", type=int, default=4, help="the model's native scale to measure")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()
    scale, sets = args.scale, args.sets
    model = Model(args.model, device="cpu", precision="fp32")
    columns = {"bicubic": None, **{f"denoise {s}": s for s in STRENGTHS}}
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for condition in CONDITIONS:
        degrade = None if condition == "clean" else condition
        scores[condition] = {}
        for column, strength in columns.items():
            if strength is None:
                network, network_for = MatlabBicubic(scale), None
            else:
                pipeline = model.pipeline(scale, tile=0, denoise=strength)
                network = pipeline.upscalers[scale].network
                network_for = (lambda lr, t, p=pipeline: p.for_input(lr, t)[0].upscalers[scale].network) if pipeline.choose else None
            scores[condition][column] = {
                s: round(
                    evaluate_set(
                        network, scale, args.shared / "data" / "benchmark" / s, with_ssim=False, degrade=degrade, network_for=network_for
                    ).psnr,
                    2,
                )
                for s in sets
            }
            print(f"{condition:26} {column:14} " + " / ".join(f"{v:.2f}" for v in scores[condition][column].values()), flush=True)
    print()
    print(f"| x{scale}, Y PSNR (dB), {' / '.join(sets)} | bicubic | {args.model} (0) | 0.25 | 0.5 | 0.75 | {model.partner} (1) | auto |")
    print("|---" * (len(columns) + 1) + "|")
    for condition, row in scores.items():
        fixed = [c for c in columns if c.startswith("denoise") and c != "denoise auto"]
        best = {s: max(row[c][s] for c in fixed) for s in sets}
        cells = []
        for column in columns:
            text = " / ".join(f"{row[column][s]:.2f}" for s in sets)
            cells.append(f"**{text}**" if column != "bicubic" and all(row[column][s] >= best[s] for s in sets) else text)
        gap = max(best[s] - row["denoise auto"][s] for s in sets)
        print(f"| `{condition}` | " + " | ".join(cells) + f" |  auto {gap:+.2f} dB from the best fixed")
    if args.json:
        args.json.write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
