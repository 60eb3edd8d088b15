"""Runs to plain fused weights: what `esr export` writes (`-m RUN_DIR` loads the same through esrcli.runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..runs import network_from_run
from ..weights import save_network


def export_run(
    run_dir: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float32, use_ema: bool = True, strength: float = 1.0
) -> Path:
    network, cfg, step = network_from_run(run_dir, use_ema=use_ema, strength=strength)
    extra = {"esr.trained_steps": str(step), "esr.train_config": cfg.to_toml(), "esr.weights": "ema" if use_ema else "raw"}
    if strength != 1.0:
        extra["esr.lora_strength"] = repr(strength)
    return save_network(network, out, dtype=dtype, extra_metadata=extra)
