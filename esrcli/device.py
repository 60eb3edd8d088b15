"""Choosing where and in what precision a network runs."""

from __future__ import annotations

import os
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import torch

from .errors import DeviceError as DeviceError
from .errors import EsrWarning

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(spec: str = "auto") -> torch.device:
    """auto: CUDA, then MPS, then CPU. Explicit requests fail clearly when unavailable."""
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device '{spec}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was requested but this torch build or machine has no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"cuda:{device.index} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif device.type == "mps" and not mps_available():
        raise DeviceError("MPS was requested but is not available (needs Apple silicon and a torch build with MPS)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device '{spec}' (use auto, cpu, cuda, cuda:N or mps)")
    return device


# Measured with 2 threads, SPAN at 320x180 a frame: 3977 ms in bf16 against 472 ms in fp32 (48 ch, an AVX2-only
# CPU), and 3487 against 150 ms (28 ch, an AMD EPYC with AVX-512 BF16 but ONEDNN_MAX_CPU_ISA=AVX2).
BF16_EMULATED = (
    "bf16 is emulated on this CPU (no AVX-512 BF16, AMX or Arm BF16 in use) and runs 8-23x slower than fp32 "
    "(SPAN at 320x180, measured on two CPUs); use fp32"
)


# oneDNN's instruction sets below the first with bf16 arithmetic: ONEDNN_MAX_CPU_ISA set to one of these
# keeps convolutions off the bf16 instructions even where the CPU has them.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (x86 AVX-512 BF16 or AMX, Arm BF16) and oneDNN may use
    it; elsewhere bf16 is emulated, many times slower than fp32. Unknown counts as no."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    if sys.platform == "darwin":  # Apple M2 and later (Arm FEAT_BF16)
        import subprocess

        try:
            found = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return found.stdout.strip() == "1"
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs at full speed on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return device.type == "mps"


def warn_if_emulated_bf16(device: torch.device) -> None:
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(BF16_EMULATED, EsrWarning, stacklevel=3)


def use_fixed_shapes(device: torch.device) -> None:
    """Let cuDNN time its algorithms once per input shape: tiles and video frames repeat one shape, so
    the first call's search pays for itself."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last where convolutions gain from it: measured 1.25-1.5x on CPU for the SPAN family
    and EFDN (esr bench speed); standard on CUDA tensor cores; unreliable on MPS."""
    return torch.contiguous_format if device.type == "mps" else torch.channels_last


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: fp16 on CUDA and MPS, fp32 on CPU. fp16 on CPU is refused: it is slow and often unsupported."""
    precision = precision.strip().lower()
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision '{precision}' (use auto, fp32, fp16 or bf16)")
    if precision == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU: use --precision fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError("this CUDA device does not support bf16: use fp16 or fp32")
    if precision == "bf16":
        warn_if_emulated_bf16(device)
    return PRECISIONS[precision]
