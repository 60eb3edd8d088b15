"""`esr export --push-to-hub` against a Hub on 127.0.0.1 (hubserver.py), then `-m` through a registry Hub source.

esr runs as a real subprocess: huggingface_hub reads HF_ENDPOINT at import, so the environment is
the one way a user points it anywhere. Xet is switched off there (HF_HUB_DISABLE_XET=1): the
client picks Xet by itself whenever hf_xet is installed, and this server speaks plain LFS only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BENCHMARK
from hubserver import HubState, serve_hub
from PIL import Image

TOKEN = "hf_test_token"
REPO = "esr-user/esr-tiny-x2"


@pytest.fixture
def hub(tmp_path: Path):
    with serve_hub() as state:
        yield state


def hub_env(hub: HubState, tmp_path: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        ESR_CACHE=str(tmp_path / "esr-cache"),
    )
    if token:
        env["HF_TOKEN"] = token
    return env


def run_esr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esrcli", *args], env=env, capture_output=True, text=True, timeout=300)


def picture(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(40, 220, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def test_push_then_download_through_the_registry(hub, tmp_path):
    env = hub_env(hub, tmp_path)
    data = [str(BENCHMARK / "Set5")] if (BENCHMARK / "Set5").is_dir() else []
    args = ["export", "esr-tiny", "-s", "2", "--push-to-hub", REPO, "--private", "--json"]
    done = run_esr(env, *args, *(a for d in data for a in ("--data", d)))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    commit = report["commit"]
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and report["repo"] == REPO and report["revision"] == "main"

    repo = hub.repos[REPO]
    assert repo.private and repo.branches["main"] == commit
    files = repo.commits[commit].files
    weights, card = files["esr-tiny-x2.safetensors"], files["README.md"].decode()
    assert hashlib.sha256(weights).hexdigest() == report["sha256"] and len(weights) == report["bytes"]
    assert ("PUT", f"/_lfs/{REPO}/{report['sha256']}") in [(s.method, s.path) for s in hub.requests]  # weights via LFS
    assert card.startswith("---\nlicense: mit\nlibrary_name: esr\n")
    for fact in ("| Scale | x2 |", "| Licence | MIT |", report["sha256"], f"hf://{REPO}/esr-tiny-x2.safetensors", "Parameters"):
        assert fact in card, fact
    if data:
        assert re.search(r"\| Set5 \| 5 \| 3\d\.\d\d \| 0\.9\d{3} \|", card), card

    # The printed entry, as a registry: -m downloads that commit through huggingface_hub and checks the pin.
    registry = tmp_path / "models.toml"
    registry.write_text(report["registry_entry"])
    assert f'revision = "{commit}"' in report["registry_entry"]
    source = picture(tmp_path)
    pulled = run_esr({**env, "ESR_MODELS_TOML": str(registry)}, "upscale", str(source), "-m", "esr-tiny", "-o", str(tmp_path / "hub.png"))
    assert pulled.returncode == 0, pulled.stderr
    assert any(s.path == f"/{REPO}/resolve/{commit}/esr-tiny-x2.safetensors" for s in hub.requests)
    # the published file is the model as it is; the local registry's esr-tiny mixes in its robust partner by default
    local = run_esr(env, "upscale", str(source), "-m", "esr-tiny", "-s", "2", "--denoise", "0", "-o", str(tmp_path / "local.png"))
    assert local.returncode == 0, local.stderr
    # The printed entry does not carry clamp_features (its bounds are keyed by the original file's SHA-256), so
    # the pulled model runs unclamped where the local one is clamped: apart on the few pixels the clamp holds
    # (measured on this synthetic, texture-like picture: 2.9 levels on average). A known gap, noted for issue 22.
    hub_pixels, local_pixels = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in ("hub.png", "local.png"))
    assert np.abs(hub_pixels - local_pixels).mean() < 4.0


def test_to_folder_is_exactly_what_is_pushed_to_a_branch(hub, tmp_path):
    env = hub_env(hub, tmp_path)
    folder = tmp_path / "publish"
    done = run_esr(env, "export", "esr-tiny", "--to-folder", str(folder), "--push-to-hub", REPO, "--revision", "v2")
    assert done.returncode == 0, done.stderr
    commit = re.search(r"commit ([0-9a-f]{40})", done.stdout).group(1)
    repo = hub.repos[REPO]
    assert repo.branches["v2"] == commit and repo.branches["main"] != commit and not repo.private
    pushed = {k: v for k, v in repo.commits[commit].files.items() if k != ".gitattributes"}
    written = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert written == pushed and set(written) == {"esr-tiny-x4.safetensors", "README.md"}
    assert f"hf://{REPO}/esr-tiny-x4.safetensors@v2" in written["README.md"].decode()
    assert "to pin it" in done.stdout and f'revision = "{commit}"' in done.stdout

    # --to-folder alone writes the same files without touching the network
    alone = tmp_path / "alone"
    requests = len(hub.requests)
    done = run_esr(env, "export", "esr-tiny", "--to-folder", str(alone))
    assert done.returncode == 0, done.stderr
    assert (alone / "esr-tiny-x4.safetensors").read_bytes() == written["esr-tiny-x4.safetensors"]
    assert len(hub.requests) == requests


def test_push_failures_are_one_line(hub, tmp_path):
    no_token = run_esr(hub_env(hub, tmp_path, token=None), "export", "esr-tiny", "--push-to-hub", REPO)
    assert no_token.returncode == 1 and "Traceback" not in no_token.stderr
    assert len(no_token.stderr.strip().splitlines()) == 1 and f"push to {REPO} failed" in no_token.stderr
    assert REPO not in hub.repos
    env = hub_env(hub, tmp_path)
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    unreachable = run_esr(env, "export", "esr-tiny", "--push-to-hub", REPO)
    assert (
        unreachable.returncode == 1
        and "Traceback" not in unreachable.stderr
        and f"push to {REPO} at http://127.0.0.1:9 failed" in unreachable.stderr
    )
    bad = run_esr(hub_env(hub, tmp_path), "export", "esr-tiny", "--push-to-hub", "no-owner")
    assert bad.returncode == 2 and "OWNER/REPO" in bad.stderr
