"""End-to-end `esr video` throughput against the model alone, on this machine.

Usage: python benchmarks/video.py [--model span-tiny|FILE] [--seconds 10] [--size 320x180]
Model-only: the same frames, already decoded in memory, through the same Upscaler.
End-to-end: decode + upscale + encode (libx264, CRF 18) + final mux, as `esr video` runs it.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from esrcli.loading import load_reference
from esrcli.scaling import Pipeline, plan_scale
from esrcli.tiling import Upscaler, auto_plan
from esrcli.video import FFMPEG, EncodeSettings, VideoJob, upscale_video


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="../shared/weights/span_tiny_ch26_x4_ntire24_team39.pth")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--ffmpeg-arg", action="append", default=[], help="extra encoder arguments, as esr video --ffmpeg-arg")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="esr-video-bench-"))
    clip = work / "in.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s={w}x{h}:r=24000/1001",
            "-f",
            "lavfi",
            "-i",
            "sine=r=48000",
            "-t",
            str(args.seconds),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(clip),
        ],
        check=True,
    )
    loaded = load_reference(args.model, device="cpu", dtype=torch.float32, progress=False)
    upscaler = Upscaler(loaded.network, loaded.scale, auto_plan(loaded.network, loaded.scale, torch.device("cpu"), torch.float32))
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True
    ).stdout
    frames = list(np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3))
    upscaler.upscale_frames(frames[:2], np.dtype(np.uint8))  # warm-up
    start = time.perf_counter()
    for frame in frames:
        upscaler.upscale_frames([frame], np.dtype(np.uint8))
    model_fps = len(frames) / (time.perf_counter() - start)

    job = VideoJob(
        clip,
        work / "out.mp4",
        Pipeline(plan_scale([loaded.scale], loaded.scale), {loaded.scale: upscaler}),
        EncodeSettings(extra=args.ffmpeg_arg),
        model_key="bench",
        overwrite=True,
    )
    start = time.perf_counter()
    result = upscale_video(job)
    e2e_fps = result.frames / (time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{w}x{h} -> {w * loaded.scale}x{h * loaded.scale}, {len(frames)} frames, {loaded.name}, CPU fp32, {torch.get_num_threads()} threads, encoder args {args.ffmpeg_arg}"
    )
    print(f"model only {model_fps:.2f} fps, end to end {e2e_fps:.2f} fps, ratio {e2e_fps / model_fps:.2f}, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
