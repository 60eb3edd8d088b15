"""Choosing where and in what precision a network runs."""

from __future__ import annotations

import torch

from .errors import EsrError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class DeviceError(EsrError, ValueError):
    pass


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
    return PRECISIONS[precision]
