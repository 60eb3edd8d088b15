"""Shared fixtures and helpers: where ../shared is (skipping cleanly when it is not), esr run in this
process or as its own, and test pictures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # tests/loopback.py

SHARED = Path(os.environ.get("ESR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
WEIGHTS = SHARED / "weights"
BENCHMARK = SHARED / "data" / "benchmark"
TRAIN_DATA = SHARED / "data" / "train"


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """esr in this process (click's runner): fast, and an exception surfaces as itself."""
    from esrcli.cli import main

    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def run_process(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """esr as a user runs it: its own process, with this environment and `env` on top."""
    return subprocess.run(
        [sys.executable, "-m", "esrcli", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout
    )


def photos(folder: Path, count: int, size: int) -> None:
    """`count` PNG pictures of `size` x `size` in `folder`: smooth gradients with noise, a function of `size`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size)
    for i in range(count):
        y, x = np.mgrid[0:size, 0:size]
        base = np.stack([x, y, x + y], -1) * 255 / (2 * size)
        Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Four smooth-but-detailed pictures (rings and gradients, 112x96): real structure to train on."""
    folder = tmp_path_factory.mktemp("train-images")
    y, x = np.mgrid[0:96, 0:112].astype(np.float64)
    for i in range(4):
        r = np.hypot(y - 20 * i, x - 30)
        img = np.stack([np.sin(r / (3 + i)) * 0.5 + 0.5, x / 112, np.cos((x + y) / (5 + i)) * 0.5 + 0.5], -1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


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
