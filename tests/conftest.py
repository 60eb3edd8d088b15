"""Shared fixtures: where ../shared is, and skipping cleanly when it is not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/loopback.py

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


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving files from tmp_path/served (see loopback.py)."""
    from loopback import serve

    with serve(tmp_path / "served") as state:
        yield state


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny x2 SPAN file with fixed weights: for tests about files, frames and errors, not picture quality."""
    import torch

    from esrcli.archs import build
    from esrcli.weights import save_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny_x2.safetensors"
    save_network(build("span", channels=4, scale=2, norm=False).eval(), path)
    return str(path)
