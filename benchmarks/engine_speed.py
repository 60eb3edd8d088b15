"""How much esr adds around the model: end to end against ffmpeg alone and the network's forward alone.

Usage: python benchmarks/engine_speed.py [--quick | --core-ms] [--json FILE]
Runs against whichever esrcli is imported (PYTHONPATH=OLD_CHECKOUT measures an older tree), so "before"
and "after" come from the same script, one after the other, on the same inputs. Every ratio is taken
within one run. Run it with nothing else on the machine.

(a) The engine's ceiling: a near-free network (a 4-channel SPAN, built here) through `esr video`,
    480x270 -> x4 and 1920x1080 -> x4, libx264 ultrafast, against ffmpeg alone decoding, resizing x4
    (bicubic) and encoding the same way, plus the network's forward alone on the decoded frames.
    A one-frame run of the same size gives what every run pays once (importing torch, probing, the
    encoder's test frame, muxing, checking the result), so the per-frame ratio is reported too.
(b) Host core-ms per 1920x1080 -> 3840x2160 frame outside the forward: this process's CPU time (every
    thread) for `upscale_video` in-process with the network taken out (it hands back a ready tensor), torch
    on one thread, per frame (a 9-frame run less a 1-frame run); the ffmpeg processes' time apart. On a
    CPU the device is the host, so this also counts the conversions that a GPU would do.
(c) Two 12-megapixel photos (4000x3000, x2 with a 4-channel SPAN, JPEG out): `esr upscale` end to end
    against the forwards alone.
(d) esr-tiny and span-ntire24 on this CPU: `esr video` of 12 frames of 480x270, and `esr upscale` of 12
    PNG files of 256x256, against the forwards alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import esrcli
from esrcli.archs import build
from esrcli.video import FFMPEG, EncodeSettings, VideoJob, upscale_video
from esrcli.weights import save_network

ESR = [sys.executable, "-m", "esrcli"]


def clip(folder: Path, width: int, height: int, frames: int) -> Path:
    path = folder / f"clip_{width}x{height}_{frames}.mp4"
    if not path.exists():
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=s={width}x{height}:r=25",
                "-frames:v",
                str(frames),
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                str(path),
            ],
            check=True,
        )
    return path


def decoded(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True
    )
    return np.frombuffer(raw.stdout, np.uint8).reshape(-1, height, width, 3)


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def forward_seconds(network: torch.nn.Module, images: list[np.ndarray] | np.ndarray) -> tuple[float, float]:
    """Wall and CPU seconds of the network's forward alone on each image, whole (inputs made beforehand)."""
    inputs = [torch.from_numpy(np.array(i)).permute(2, 0, 1)[None].float().div(255) for i in images]
    inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    with torch.inference_mode():
        network(inputs[0])  # warm-up
        cpu, start = time.process_time(), time.perf_counter()
        for x in inputs:
            network(x)
        return time.perf_counter() - start, time.process_time() - cpu


def tiny_model(folder: Path, scale: int) -> Path:
    torch.manual_seed(0)
    path = folder / f"tiny_x{scale}.safetensors"
    save_network(build("span", channels=4, scale=scale, norm=False).eval(), path)
    return path


def video_case(folder: Path, model: str, width: int, height: int, frames: int, report: dict) -> None:
    src = clip(folder, width, height, frames)
    out = folder / "out.mp4"
    network = esrcli.load_model(model, device="cpu").network
    forward, _ = forward_seconds(network, decoded(src, width, height))
    ffmpeg = wall(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-vf",
            f"scale={width * 4}:{height * 4}:flags=bicubic",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(folder / "ffmpeg.mp4"),
        ]
    )
    esr = wall([*ESR, "video", str(src), str(out), "-m", model, "--device", "cpu", "--preset", "ultrafast", "--overwrite", "--quiet"])
    # What every run pays once (importing torch, probing, the encoder's test frame, muxing, the result's check): a
    # one-frame run of the same size, its frame's ffmpeg and forward share taken out, so that the rest is per frame.
    one = wall(
        [
            *ESR,
            "video",
            str(clip(folder, width, height, 1)),
            str(out),
            "-m",
            model,
            "--device",
            "cpu",
            "--preset",
            "ultrafast",
            "--overwrite",
            "--quiet",
        ]
    )
    fixed = max(0.0, one - (ffmpeg + forward) / frames)
    name = f"{Path(model).stem} {width}x{height} x{frames}"
    report[name] = {
        "ffmpeg_s": ffmpeg,
        "forward_s": forward,
        "esr_video_s": esr,
        "fixed_s": fixed,
        "esr_over_ffmpeg_plus_forward": esr / (ffmpeg + forward),
        "per_frame_over_ffmpeg_plus_forward": (esr - fixed) / (ffmpeg + forward),
    }
    print(
        f"{name}: ffmpeg alone {ffmpeg:.2f} s, forward alone {forward:.2f} s, esr video {esr:.2f} s: "
        f"{esr / (ffmpeg + forward):.2f}x of ffmpeg + forward; once per run {fixed:.2f} s, the rest "
        f"{(esr - fixed) / (ffmpeg + forward):.2f}x"
    )


class TakenOut(torch.nn.Module):
    """The network taken out: it hands back one output-sized tensor made on the first call, so that a
    frame costs only what esr does around the network (which may scale that tensor in place)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.output: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.output is None or self.output.shape != (n, c, h * self.scale, w * self.scale):
            self.output = torch.rand(n, c, h * self.scale, w * self.scale).contiguous(memory_format=torch.channels_last)
        return self.output


def host_core_ms(folder: Path, model: str, report: dict) -> None:
    """`model` is x2: 1920x1080 -> 3840x2160, with its network taken out (TakenOut), torch on one thread (so
    that CPU time is work, not OpenMP threads spinning). A 1-frame run and a 9-frame run: their difference
    over 8 is the cost per frame, without what a run pays once. The ffmpeg processes' time is reported apart."""
    width, height = 1920, 1080
    loaded = esrcli.load_model(model, device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipeline = loaded.pipeline(tile=0)
        for upscaler in pipeline.upscalers.values():
            upscaler.network = TakenOut(upscaler.scale)
        spent = {}
        for frames in (1, 9):
            job = VideoJob(
                clip(folder, width, height, frames),
                folder / "core.mp4",
                pipeline,
                EncodeSettings(preset="ultrafast"),
                model_key="bench",
                overwrite=True,
            )
            cpu, children = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
            upscale_video(job)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            spent[frames] = (time.process_time() - cpu, (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime))
    finally:
        torch.set_num_threads(threads)
    host = (spent[9][0] - spent[1][0]) / 8 * 1e3
    ff = (spent[9][1] - spent[1][1]) / 8 * 1e3
    report["host core-ms per 1080p->4K frame"] = {"outside_forward": host, "ffmpeg_processes": ff}
    print(
        f"1920x1080 -> 3840x2160: {host:.0f} core-ms per frame in esr outside the forward (one thread, the network taken out); "
        f"ffmpeg's decoder and encoder {ff:.0f}"
    )


def photos_case(folder: Path, model: str, report: dict) -> None:
    src = folder / "photos12mp"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    images = []
    for i in range(2):
        y, x = np.mgrid[0:3000, 0:4000]
        base = np.stack([np.sin(x / 50.0), np.cos(y / 70.0), np.sin((x + y) / 90.0)], -1) * 90 + 128
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(src / f"p{i}.jpg", quality=92)
        images.append(np.asarray(Image.open(src / f"p{i}.jpg")))
    network = esrcli.load_model(model, device="cpu").network
    forward, _ = forward_seconds(network, images)
    esr = wall([*ESR, "upscale", str(src), "-o", str(folder / "photos_out"), "-m", model, "--device", "cpu", "--overwrite", "--quiet"])
    report["12 MP photos x2"] = {"forward_s": forward, "esr_upscale_s": esr, "ratio": esr / forward}
    print(f"2 photos 4000x3000 x2: forward alone {forward:.2f} s, esr upscale {esr:.2f} s: {esr / forward:.2f}x")


def batch_case(folder: Path, model: str, report: dict) -> None:
    src = folder / "small"
    src.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    images = []
    for i in range(12):
        image = np.clip(rng.normal(128, 40, (256, 256, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(src / f"s{i:02d}.png")
        images.append(image)
    network = esrcli.load_model(model, device="cpu").network
    forward, _ = forward_seconds(network, images)
    esr = wall([*ESR, "upscale", str(src), "-o", str(folder / "small_out"), "-m", model, "--device", "cpu", "--overwrite", "--quiet"])
    one = wall(
        [*ESR, "upscale", str(src / "s00.png"), "-o", str(folder / "one_out"), "-m", model, "--device", "cpu", "--overwrite", "--quiet"]
    )
    fixed = max(0.0, one - forward / len(images))  # what a run pays once: the rest is throughput
    report[f"{Path(model).stem} 12 x 256x256 upscale"] = {
        "forward_s": forward,
        "esr_upscale_s": esr,
        "ratio": esr / forward,
        "fixed_s": fixed,
        "per_file_ratio": (esr - fixed) / forward,
    }
    print(
        f"{Path(model).stem}: 12 PNGs of 256x256, forward alone {forward:.2f} s, esr upscale {esr:.2f} s: {esr / forward:.2f}x; "
        f"once per run {fixed:.2f} s, the rest {(esr - fixed) / forward:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only (a) and (b)")
    parser.add_argument("--core-ms", action="store_true", help="only (b)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared", help="for span-ntire24's weights")
    args = parser.parse_args()
    print(
        f"esrcli from {Path(esrcli.__file__).parent}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="esr-engine-") as scratch:
        folder = Path(scratch)
        tiny4, tiny2 = str(tiny_model(folder, 4)), str(tiny_model(folder, 2))
        if not args.core_ms:
            video_case(folder, tiny4, 480, 270, 48, report)
            video_case(folder, tiny4, 1920, 1080, 12, report)
        host_core_ms(folder, tiny2, report)
        if not args.quick and not args.core_ms:
            photos_case(folder, tiny2, report)
            for model in ("esr-tiny", str(args.shared / "weights" / "span_ch28_x4_ntire24_team38.pth")):
                video_case(folder, model, 480, 270, 12, report)
                batch_case(folder, model, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
