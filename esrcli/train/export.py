"""A run's weights as plain fused safetensors (`-m RUN_DIR` loads the same through esrcli.runs)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..export import ExportError, open_source

__all__ = ["ExportError", "export_run"]


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    use_ema: bool = True,
    strength: float = 1.0,
    overwrite: bool = False,
) -> Path:
    source = open_source(str(run_dir), use_ema=use_ema, strength=strength)
    result = source.export(out, fmt="safetensors", fp16=dtype == torch.float16, overwrite=overwrite)
    return result.path
