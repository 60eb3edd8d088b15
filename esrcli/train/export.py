"""Runs to plain fused weights: what `esr export` writes and what `-m RUN_DIR` loads."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..archs import SRNet, build, fused_state_dict
from ..weights import save_network
from .config import TrainConfig
from .trainer import CHECKPOINT, TrainingError, build_network, student_depth


def network_from_run(run_dir: str | Path, *, use_ema: bool = True, strength: float = 1.0) -> tuple[SRNet, TrainConfig, int]:
    """The run's network in inference form (EMA weights by default), its config and its step.

    `strength` scales a LoRA run's adapters before they are merged (W + strength * dW)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"{run_dir}: not a training run (no {CHECKPOINT})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(state["config"], str(path))
    network = build_network(cfg)
    network.load_state_dict(state["ema"] if use_ema and state["ema"] is not None else state["model"])
    if strength != 1.0:
        from ..lora import set_strength

        if not set_strength(network, strength):
            raise TrainingError(f"{run_dir}: not a LoRA run, so there is no adapter strength to set")
    sd = fused_state_dict(network)
    config = dict(network.config)
    depth = student_depth(cfg)
    if depth is not None:  # self-distillation: the teacher's extra blocks are shrunk away
        config["n_blocks"] = depth
        sd = {k: v for k, v in sd.items() if not ((m := re.match(r"block_(\d+)\.", k)) and int(m.group(1)) > depth)}
    fused = build(network.arch, form="fused", **config)
    fused.load_state_dict(sd, strict=True)
    return fused.eval(), cfg, state["step"]


def export_run(
    run_dir: str | Path, out: str | Path, *, dtype: torch.dtype = torch.float32, use_ema: bool = True, strength: float = 1.0
) -> Path:
    network, cfg, step = network_from_run(run_dir, use_ema=use_ema, strength=strength)
    extra = {"esr.trained_steps": str(step), "esr.train_config": cfg.to_toml(), "esr.weights": "ema" if use_ema else "raw"}
    if strength != 1.0:
        extra["esr.lora_strength"] = repr(strength)
    return save_network(network, out, dtype=dtype, extra_metadata=extra)
