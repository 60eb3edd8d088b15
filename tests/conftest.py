"""Shared fixtures: where ../shared is, and skipping cleanly when it is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ESR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "weights"
BENCHMARK = SHARED / "data" / "benchmark"
TRAIN_DATA = SHARED / "data" / "train"


def need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: {what} (../shared is provided to developers and CI)")
    return path


@pytest.fixture
def shared_weights() -> Path:
    return need(WEIGHTS, "the released checkpoints are needed")


@pytest.fixture
def benchmark_data() -> Path:
    return need(BENCHMARK, "the benchmark sets are needed")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own esr cache and never reaches a network hub."""
    monkeypatch.setenv("ESR_CACHE", str(tmp_path_factory.mktemp("esr-cache")))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("ESR_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
