"""Training runs as models: a run folder's checkpoint rebuilt into plain fused weights.

The checkpoint records what the training network was (architecture, constructor arguments, form,
LoRA adapters), so loading a run needs neither the trainer nor the weights it started from: a
LoRA run's checkpoint already holds every weight of its student.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from .archs import SRNet, build, detect, fused_state_dict
from .errors import RunError as RunError
from .runconfig import CHECKPOINT, TrainConfig


def student_depth(cfg: TrainConfig) -> int | None:
    """ESPAN self-distillation trains a deeper network; this is the depth that is kept."""
    return cfg.model.args.get("n_blocks", 5) if cfg.recipe.name == "espan-sd" else None


def describe(network: SRNet, cfg: TrainConfig) -> dict[str, Any]:
    """What rebuilding `network` takes, stored in the checkpoint beside its weights."""
    lora = [dict(g) for g in cfg.lora.groups] if cfg.lora.student else None
    return {"arch": network.arch, "config": dict(network.config), "form": network.form, "lora": lora}


def rebuild(description: dict[str, Any]) -> nn.Module:
    """An untrained network of the described shape, adapters included, ready for load_state_dict."""
    network = build(description["arch"], form=description["form"], **description["config"])
    if description.get("lora") is not None:
        from .lora import add_lora, placement

        add_lora(network, placement(network, description["lora"])[0])
    return network


def _legacy_description(cfg: TrainConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints written before the description existed: rebuilt from the config, and a LoRA run's
    student architecture detected from the student weights the checkpoint holds."""
    if cfg.lora.student:
        sd = dict(state["model"])
        for key in [k for k in sd if k.endswith(".lora_A")]:
            prefix = key.removesuffix(".lora_A")
            for name in ("weight", "bias"):
                if f"{prefix}.conv.{name}" in sd:
                    sd[f"{prefix}.{name}"] = sd.pop(f"{prefix}.conv.{name}")
            del sd[key], sd[f"{prefix}.lora_B"]
        arch, config = detect(sd)
        form = config.pop("form")
        return {"arch": arch, "config": config, "form": form, "lora": [dict(g) for g in cfg.lora.groups]}
    args = dict(cfg.model.args)
    if cfg.recipe.name == "espan-sd":
        args["n_blocks"] = args.get("n_blocks", 5) + cfg.recipe.extra_blocks
    return {"arch": cfg.model.arch, "config": {"scale": cfg.model.scale, **args}, "form": cfg.model.form, "lora": None}


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"{run_dir}: not a training run (no {CHECKPOINT})")
    from .weights import WeightsError, safe_torch_load

    try:
        state = safe_torch_load(path)
    except WeightsError as exc:
        raise RunError(str(exc).replace("weight file", "checkpoint")) from None
    except Exception:  # a damaged or foreign file
        raise RunError(f"{path}: not a readable esr checkpoint") from None
    if not isinstance(state, dict) or not {"config", "step", "model"} <= set(state):
        raise RunError(f"{path}: not an esr checkpoint (it lacks the run's config, step or weights)")
    return state


def network_from_run(run_dir: str | Path, *, use_ema: bool = True, strength: float = 1.0) -> tuple[SRNet, TrainConfig, int]:
    """The run's network in inference form (EMA weights by default), its config and its step.

    `strength` scales a LoRA run's adapters before they are merged (W + strength * dW)."""
    state = read_checkpoint(run_dir)
    cfg = TrainConfig.from_dict(state["config"], str(Path(run_dir) / CHECKPOINT))
    network = rebuild(state.get("network") or _legacy_description(cfg, state))
    network.load_state_dict(state["ema"] if use_ema and state["ema"] is not None else state["model"])
    if strength != 1.0:
        from .lora import set_strength

        if not set_strength(network, strength):
            raise RunError(f"{run_dir}: not a LoRA run, so there is no adapter strength to set")
    sd = fused_state_dict(network)
    config = dict(network.config)
    depth = student_depth(cfg)
    if depth is not None:  # self-distillation: the teacher's extra blocks are shrunk away
        config["n_blocks"] = depth
        sd = {k: v for k, v in sd.items() if not ((m := re.match(r"block_(\d+)\.", k)) and int(m.group(1)) > depth)}
    fused = build(network.arch, form="fused", **config)
    fused.load_state_dict(sd, strict=True)
    return fused.eval(), cfg, state["step"]
