"""Runs to plain fused weights: what `esr export` writes (`-m RUN_DIR` loads the same through esrcli.runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EsrError
from ..runs import network_from_run
from ..weights import save_network
from .config import CHECKPOINT, CONFIG, METRICS


class ExportError(EsrError):
    """An export that would overwrite something or cannot be written."""


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    use_ema: bool = True,
    strength: float = 1.0,
    overwrite: bool = False,
) -> Path:
    out, run_dir = Path(out), Path(run_dir)
    if out.suffix.lower() != ".safetensors":
        raise ExportError(f"{out}: esr export writes safetensors; name the file .safetensors")
    if out.resolve().parent == run_dir.resolve() and out.name in (CHECKPOINT, CONFIG, METRICS):
        raise ExportError(f"{out}: would overwrite the run's own {out.name}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
    network, cfg, step = network_from_run(run_dir, use_ema=use_ema, strength=strength)
    extra = {"esr.trained_steps": str(step), "esr.train_config": cfg.to_toml(), "esr.weights": "ema" if use_ema else "raw"}
    if strength != 1.0:
        extra["esr.lora_strength"] = repr(strength)
    try:
        return save_network(network, out, dtype=dtype, extra_metadata=extra)
    except OSError as exc:
        raise ExportError(f"{out}: cannot write ({exc.strerror or exc})") from None
