"""Quality and speed measurements, following the papers' evaluation protocol."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .degrade import degrade_benchmark, parse_spec
from .device import memory_format
from .errors import BenchmarkSetError as BenchmarkSetError
from .estimate import IJG_CHROMA, IJG_LUMA, ijg_table
from .imagefile import read_rgb8
from .imresize import bicubic_downscale_uint8, imresize, mod_crop
from .metrics import psnr, ssim, to_uint8
from .paths import find_lr, hr_folder, list_images


@dataclass
class SetScore:
    psnr: float
    ssim: float
    images: int
    per_image: dict[str, float] = field(default_factory=dict)  # PSNR by file stem: a mean hides trade-offs


class MatlabBicubic(nn.Module):
    """The bicubic baseline as a network, so it is scored by exactly the code that scores models."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("dtype_anchor", torch.zeros((), dtype=torch.float64))  # evaluation runs it in float64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x.double(), scale=self.scale)


@torch.inference_mode()
def upscale_array(network: nn.Module, lr: np.ndarray) -> np.ndarray:
    """A whole uint8 HxWx3 image through the network (evaluation images are small: no tiling)."""
    param = next(itertools.chain(network.parameters(), network.buffers()))
    x = torch.from_numpy(lr).permute(2, 0, 1)[None].to(device=param.device, dtype=param.dtype) / 255.0
    x = x.contiguous(memory_format=memory_format(param.device))
    return to_uint8(network(x).float())


def evaluate_set(
    network: nn.Module,
    scale: int,
    set_dir: Path,
    *,
    channel: str = "y",
    crop: int | None = None,
    limit: int | None = None,
    with_ssim: bool = True,
    degrade: str | None = None,
    on_image: Callable[[Path], None] | None = None,
    network_for: Callable[[np.ndarray, dict | None], nn.Module] | None = None,
) -> SetScore:
    """Mean PSNR/SSIM over a set's HR/ images (or a plain folder of images); LR from
    LR_bicubic/X{s}/ or made with MATLAB bicubic, or with `degrade` (a spec such as `jpeg:70`,
    see esrcli.degrade) applied from HR.

    `with_ssim=False` skips SSIM (NaN) where only PSNR is wanted: it costs more than the network.
    `network_for(lr, jpeg_tables)` picks the network per image (--denoise auto measures the LR as it would a
    file: a degradation that ends in JPEG was a JPEG file, whose tables Pillow wrote at that quality).
    """
    if degrade:
        parse_spec(degrade)  # a bad spec fails before any work
    hr_dir = hr_folder(set_dir)
    if not hr_dir.is_dir():
        raise BenchmarkSetError(f"{set_dir}: not a folder (a set holds HR/ and optionally LR_bicubic/X{scale}/, or just images)")
    paths = list_images(hr_dir)[:limit]
    if not paths:
        raise BenchmarkSetError(f"{hr_dir}: no images")
    crop = scale if crop is None else crop
    psnrs, ssims = [], []
    for path in paths:
        hr = mod_crop(read_rgb8(path), scale)
        if min(hr.shape[:2]) < max(scale, 2 * crop + 11):  # SSIM's 11 x 11 window must fit inside the crop
            raise BenchmarkSetError(f"{path}: {hr.shape[1]}x{hr.shape[0]} is too small to score at x{scale} with {crop} px cropped")
        lr_path = None if degrade else find_lr(set_dir, path, scale)
        if degrade:
            lr = degrade_benchmark(hr, scale, degrade, key=path.stem)
        else:
            lr = read_rgb8(lr_path) if lr_path else bicubic_downscale_uint8(hr, scale)
        if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
            raise BenchmarkSetError(
                f"{lr_path}: {lr.shape[1]}x{lr.shape[0]} is not its HR image's {hr.shape[1]}x{hr.shape[0]} / {scale}; "
                f"is LR_bicubic/X{scale}/ for another scale or another crop?"
            )
        sr = upscale_array(network_for(lr, _jpeg_tables(degrade)) if network_for else network, lr)
        psnrs.append(psnr(sr, hr, crop, channel))
        ssims.append(ssim(sr, hr, crop, channel) if with_ssim else float("nan"))
        if on_image:
            on_image(path)
    return SetScore(float(np.mean(psnrs)), float(np.mean(ssims)), len(paths), dict(zip((p.stem for p in paths), psnrs)))


def _jpeg_tables(degrade: str | None) -> dict | None:
    """The quantisation tables of the JPEG file a degradation ends in (Pillow writes libjpeg's, scaled)."""
    steps = parse_spec(degrade) if degrade else []
    if not steps or steps[-1][0] != "jpeg":
        return None
    quality = int(steps[-1][1])
    return {0: ijg_table(IJG_LUMA, quality).astype(int).tolist(), 1: ijg_table(IJG_CHROMA, quality).astype(int).tolist()}


def count_macs(network: nn.Module, shape: tuple[int, int, int, int]) -> int:
    """Multiply-accumulates of every conv for one input of `shape`, counted from real output sizes."""
    total = 0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, nn.Conv2d)]
    try:
        param = next(network.parameters())
        with torch.inference_mode():
            network(torch.zeros(shape, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    return total // shape[0]


@dataclass
class SpeedResult:
    params: int
    macs_g: float
    latency_ms: float
    output_mpix_per_s: float
    input_size: tuple[int, int]
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_calls(
    call: Callable[[], object], sync: Callable[[], None] = lambda: None, *, min_seconds: float, max_runs: int
) -> tuple[float, int]:
    """Median seconds per call after two warm-up calls, and how many calls were timed."""
    for _ in range(2):
        call()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (time.perf_counter() - start < min_seconds or len(times) < 3):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def _speed_result(network: nn.Module, scale: int, width: int, height: int, latency: float, runs: int) -> SpeedResult:
    return SpeedResult(
        params=sum(p.numel() for p in network.parameters()),
        macs_g=count_macs(network, (1, 3, height, width)) / 1e9,
        latency_ms=latency * 1e3,
        output_mpix_per_s=width * height * scale * scale / 1e6 / latency,
        input_size=(width, height),
        runs=runs,
    )


@torch.inference_mode()
def measure_speed(network: nn.Module, scale: int, width: int, height: int, *, min_seconds: float = 2.0, max_runs: int = 100) -> SpeedResult:
    """Median latency of whole-frame forwards after warm-up."""
    param = next(network.parameters())
    x = torch.rand(1, 3, height, width, device=param.device, dtype=param.dtype).contiguous(memory_format=memory_format(param.device))
    latency, runs = time_calls(lambda: network(x), lambda: _sync(param.device), min_seconds=min_seconds, max_runs=max_runs)
    return _speed_result(network, scale, width, height, latency, runs)


def measure_onnx_speed(
    onnx_path: Path,
    network: nn.Module,
    scale: int,
    width: int,
    height: int,
    *,
    fp16: bool,
    providers: list[str],
    min_seconds: float = 2.0,
    max_runs: int = 100,
) -> SpeedResult:
    """The same measurement for an exported model in onnxruntime (`network` is counted for params and MACs).

    Input and output stay on the provider's device (IO binding), as torch's do in `measure_speed`: on
    CUDA a plain `session.run` would also time two copies through the host."""
    import onnxruntime

    from .export import onnx_session

    session = onnx_session(onnx_path, providers)
    x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32).astype(np.float16 if fp16 else np.float32)
    first = providers[0]
    on_cuda = (first[0] if isinstance(first, tuple) else first) == "CUDAExecutionProvider"
    device, device_id = ("cuda", int(first[1].get("device_id", 0)) if isinstance(first, tuple) else 0) if on_cuda else ("cpu", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, onnxruntime.OrtValue.ortvalue_from_numpy(x, device, device_id))
    binding.bind_output(session.get_outputs()[0].name, device, device_id)
    latency, runs = time_calls(
        lambda: session.run_with_iobinding(binding), binding.synchronize_outputs, min_seconds=min_seconds, max_runs=max_runs
    )
    return _speed_result(network, scale, width, height, latency, runs)
