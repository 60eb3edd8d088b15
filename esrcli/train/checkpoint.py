"""checkpoint.pt, what a run resumes from: its step, model, EMA, optimizer, scheduler, scaler and RNG
state, with its config and how to rebuild its network; written atomically. On resume, metrics.jsonl
is cut back to the checkpoint's step, since the run logs the steps after it again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_write
from ..runconfig import METRICS, TrainConfig, TrainingError
from ..runs import describe


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save through a temporary file renamed over `path`: a crash mid-write leaves the last checkpoint whole."""
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def checkpoint_state(
    step: int,
    cfg: TrainConfig,
    network: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> dict[str, Any]:
    """What checkpoint.pt holds for a run at `step`."""
    return {
        "step": step,
        "model": network.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "torch_rng": torch.get_rng_state(),
        "config": cfg.to_dict(),
        "network": describe(network, cfg),  # what loading the run rebuilds, without this trainer
    }


def restore(
    state: dict[str, Any],
    path: Path,
    network: nn.Module,
    ema: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
) -> int:
    """Load checkpoint_state's `state` (read from `path`) into the run's objects and torch's RNG; the step
    it was saved at. A checkpoint that does not fit them is a TrainingError naming `path`."""
    try:
        network.load_state_dict(state["model"])
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        return int(state["step"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise TrainingError(f"{path}: not a checkpoint of this run ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records logged after the checkpoint: the resumed run logs those steps again."""
    path = run_dir / METRICS
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(f"{line}\n" for line in kept))
