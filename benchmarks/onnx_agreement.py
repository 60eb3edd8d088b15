"""How closely `esr export` ONNX files reproduce esr, per model, on a photo, the test card and white noise.

Usage: python benchmarks/onnx_agreement.py [--shared ../shared] [-m span-tiny -m efdn ...]

For each model: fp32 and fp16 exports run in onnxruntime (CPU) against esr's fp32 output on Set14's
baboon (low resolution) and on esr's test card: max 8-bit levels, PSNR, max |diff|. Then white noise
(64x64, seed 0): torch fp32 and onnxruntime fp32 against a float64 run of the same network, which
tells rounding amplified by an ill-conditioned input from a wrong graph.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from esrcli.export import check_card, check_onnx, onnx_session, write_onnx
from esrcli.imagefile import read_rgb8
from esrcli.loading import load_reference

DEFAULT_MODELS = ["span-tiny", "span-ntire24", "dsclora", "span-slimtail", "espan", "spanf", "efdn", "esr-tiny", "esr-tiny-real"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("-m", "--model", action="append", dest="models")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    pictures = [("card", check_card())]
    baboon = args.shared / "data" / "benchmark" / "Set14" / "LR_bicubic" / "X4" / "baboonx4.png"
    if baboon.is_file():
        pictures.insert(0, ("baboon", read_rgb8(baboon)))
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    print("| model | export | " + " | ".join(name for name, _ in pictures) + " | noise: torch fp32 / onnxruntime vs float64 |")
    print("|---|---|" + "---|" * len(pictures) + "---|")
    for name in args.models or DEFAULT_MODELS:
        network = load_reference(name, progress=False).network
        with tempfile.TemporaryDirectory() as scratch:
            for fp16 in (False, True):
                path = Path(scratch) / f"m{int(fp16)}.onnx"
                write_onnx(network, path, fp16=fp16, metadata={})
                cells = [f"{a.max_levels} L, {a.psnr:.1f} dB, {a.max_abs:.1e}" for a in check_onnx(path, network, pictures, fp16)]
                if fp16:
                    cells.append("")
                else:
                    with torch.no_grad():
                        exact = network.double()(noise.double()).clamp(0, 1)
                        torch32 = network.float()(noise).clamp(0, 1).double()
                    ort = torch.from_numpy(onnx_session(path).run(None, {"input": noise.numpy()})[0]).double()
                    cells.append(f"{(torch32 - exact).abs().max():.1e} / {(ort - exact).abs().max():.1e}")
                print(f"| {name} | {'fp16' if fp16 else 'fp32'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
