"""models.toml, model references, the fused cache, and downloads through the registry on loopback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import run_process as esr

from esrcli.archs import build
from esrcli.archs.blocks import Conv3XC
from esrcli.download import ChecksumMismatch, OfflineError, sha256_file
from esrcli.loading import clamped_blocks, import_model_file, load_reference, remove_clamp
from esrcli.registry import Registry, RegistryError, default_registry, fused_cache_path
from esrcli.sources import HubSource, PackageSource, UrlSource

# registry name -> the file in ../shared/weights with the same pinned bytes
SHARED_FILES = {
    "span-ntire24": "span_ch28_x4_ntire24_team38.pth",
    "span-tiny": "span_tiny_ch26_x4_ntire24_team39.pth",
    "dsclora": "dsclora_ch26_x4_ntire25_team23.pth",
    "espan": "espan_x4_ntire25_team36.pth",
    "spanf": "spanf_x4_ntire25_team24.pth",
    "span-slimtail": "span_ch28_slimtail_x4_ntire25_team46.pth",
    "efdn": "efdn_x4_EFDN_gv.pth",
}


def test_every_entry_is_pinned():
    registry = default_registry()
    names = set(registry.entries)
    assert {"span", "span-ntire24", "span-tiny", "dsclora", "espan", "spanf", "efdn"} <= names
    assert set(default_registry().get("span").scales) == {2, 4} and set(registry.get("efdn").scales) == {2, 4}
    for entry in registry:
        assert entry.licence and entry.paper and entry.title
        for weights in entry.weights:
            assert re.fullmatch(r"[0-9a-f]{64}", weights.sha256) and weights.size > 0
            for source in weights.sources:
                if isinstance(source, UrlSource):
                    assert re.search(r"/[0-9a-f]{40}/|/releases/download/", source.url), source.url
                elif isinstance(source, PackageSource):
                    assert source.file.is_file() and sha256_file(source.file) == weights.sha256 == source.sha256
                    assert source.file.stat().st_size == weights.size < 1_000_000
                else:
                    assert isinstance(source, HubSource) and re.fullmatch(r"[0-9a-f]{40}", source.revision)


def test_pins_match_the_released_files(shared_weights):
    sums = dict(reversed(line.split()) for line in (shared_weights / "SHA256SUMS").read_text().splitlines() if line.strip())
    registry = default_registry()
    for name, filename in SHARED_FILES.items():
        weights = registry.get(name).variant(4)
        assert weights.sha256 == sums[filename], name
        assert weights.size == (shared_weights / filename).stat().st_size
    assert registry.get("efdn").variant(2).sha256 == sums["efdn_x2_EFDNx2_baseline.pth"]


def test_unknown_name_suggests_close_ones():
    with pytest.raises(RegistryError, match="did you mean span-tiny"):
        default_registry().get("span-tiy")
    with pytest.raises(RegistryError, match="no x3 weights"):
        default_registry().get("span-tiny").variant(3)


@pytest.mark.parametrize("name", sorted(SHARED_FILES))
def test_import_then_load_offline(shared_weights, monkeypatch, name):
    entry = default_registry().get(name)
    path = import_model_file(entry, entry.variant(4), shared_weights / SHARED_FILES[name])
    assert path == fused_cache_path(entry, entry.variant(4))
    monkeypatch.setenv("ESR_OFFLINE", "1")
    loaded = load_reference(name)
    direct = load_reference(str(shared_weights / SHARED_FILES[name]))
    assert loaded.params == direct.params and loaded.scale == 4
    x = torch.rand(1, 3, 16, 16)
    if entry.clamp_features:  # the calibrated feature clamp, by name and from the release file; underneath, the same network
        assert clamped_blocks(loaded.network) == clamped_blocks(direct.network) > 0
        remove_clamp(loaded.network)
        remove_clamp(direct.network)
    assert torch.equal(loaded.network(x), direct.network(x))


def test_import_rejects_a_different_file(shared_weights):
    entry = default_registry().get("span-tiny")
    with pytest.raises(Exception, match="not the pinned"):
        import_model_file(entry, entry.variant(4), shared_weights / SHARED_FILES["dsclora"])


def official_training_form_file(path: Path) -> torch.nn.Module:
    """A training-form SPAN saved the way the official files are: branches plus a stale eval_conv."""
    torch.manual_seed(3)
    train = build("span", form="train", channels=8, scale=4).eval()
    with torch.no_grad():
        for p in train.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sd = dict(train.state_dict())
    for name, module in train.named_modules():
        if isinstance(module, Conv3XC):
            sd[f"{name}.eval_conv.weight"] = torch.randn(module.sk.out_channels, module.sk.in_channels, 3, 3)
            sd[f"{name}.eval_conv.bias"] = torch.randn(module.sk.out_channels)
    torch.save({"params_ema": sd}, path)
    return train


def write_registry(tmp_path: Path, url: str, sha: str, size: int) -> Registry:
    toml = tmp_path / "models.toml"
    toml.write_text(
        f"""
[tiny]
title = "test model"
arch = "span"
args = {{ norm = true }}
licence = "MIT"
paper = "none"
[[tiny.weights]]
scale = 4
file = "tiny.pth"
sha256 = "{sha}"
size = {size}
sources = [{{ url = "{url}" }}]
"""
    )
    return Registry.from_file(toml)


def test_training_form_download_fuses_once_and_matches_its_graph(server, tmp_path, monkeypatch):
    original = server.root / "tiny.pth"
    train = official_training_form_file(original)
    registry = write_registry(tmp_path, server.url("tiny.pth"), sha256_file(original), original.stat().st_size)

    loaded = load_reference("tiny", registry=registry, progress=False)
    x = torch.rand(1, 3, 17, 13)
    with torch.no_grad():
        expected = train(x)
    assert loaded.network.form == "fused"
    assert (loaded.network(x) - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert fused_cache_path(registry.get("tiny"), registry.get("tiny").variant()).is_file()
    requests = server.count
    assert requests >= 1

    again = load_reference("tiny", registry=registry, progress=False)  # from the fused cache
    assert server.count == requests
    assert torch.equal(again.network(x), loaded.network(x))

    monkeypatch.setenv("ESR_OFFLINE", "1")
    assert torch.equal(load_reference("tiny", registry=registry).network(x), loaded.network(x))


def test_offline_with_nothing_cached_names_model_and_source(server, tmp_path, monkeypatch):
    registry = write_registry(tmp_path, server.url("tiny.pth"), "0" * 64, 10)
    monkeypatch.setenv("ESR_OFFLINE", "1")
    with pytest.raises(OfflineError) as err:
        load_reference("tiny", registry=registry)
    assert "'tiny'" in str(err.value) and server.url("tiny.pth") in str(err.value)
    assert server.count == 0


def test_checksum_mismatch_through_the_registry(server, tmp_path):
    served = server.add("tiny.pth", b"x" * 100)
    registry = write_registry(tmp_path, server.url("tiny.pth"), "1" * 64, served.stat().st_size)
    with pytest.raises(ChecksumMismatch):
        load_reference("tiny", registry=registry, progress=False)
    assert not fused_cache_path(registry.get("tiny"), registry.get("tiny").variant()).exists()


def test_hf_reference_through_hf_endpoint(server, tmp_path):
    """`-m hf://owner/repo/file` downloads through huggingface_hub from HF_ENDPOINT (a loopback server)."""
    net = build("span", channels=8, scale=2).eval()
    from esrcli.weights import save_network

    save_network(net, server.root / "_hub" / "someone" / "tiny-span" / "x2" / "model.safetensors")
    env = {"HF_ENDPOINT": server.base, "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1"}
    run = esr("bench", "speed", "-m", "hf://someone/tiny-span/x2/model.safetensors", "--size", "16x12", "--seconds", "0", "--json", env=env)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["scale"] == 2 and data["params"] == sum(p.numel() for p in net.parameters())
    assert any("/someone/tiny-span/resolve/main/x2/model.safetensors" in r.path for r in server.requests)
    assert list((tmp_path / "hf").rglob("model.safetensors"))  # it went through the HF cache


def test_the_embedded_default_model_works_offline(monkeypatch, tmp_path):
    from esrcli.registry import DEFAULT_MODEL

    monkeypatch.setenv("ESR_OFFLINE", "1")
    entry = default_registry().get(DEFAULT_MODEL)
    for weights in entry.weights:
        loaded = load_reference(DEFAULT_MODEL, native=weights.scale)
        assert loaded.scale == weights.scale and loaded.network.form == "fused"
        assert loaded.params < 200_000  # SPAN-tiny-sized or smaller
    from PIL import Image

    Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 64).convert("RGB").save(tmp_path / "demo.png")
    run = esr("upscale", str(tmp_path / "demo.png"), "--quiet")
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "demo_x4.png").size == (256, 192)


def test_a_damaged_embedded_file_is_refused(tmp_path):
    from esrcli.download import fetch

    fake = PackageSource(path="weights/esr-tiny-x4.toml", sha256="0" * 64)
    with pytest.raises(ChecksumMismatch, match="reinstall"):
        fetch(fake, name="esr-tiny")


def test_a_run_folder_is_a_model_reference(tmp_path):
    from esrcli.runconfig import TrainConfig
    from esrcli.train.trainer import Trainer

    cfg = TrainConfig()
    cfg.model.args = {"channels": 8}
    cfg.set("model.scale", 2)
    cfg.set("run.device", "cpu")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.save()
    loaded = load_reference(str(tmp_path / "run"))
    assert loaded.scale == 2 and loaded.network.form == "fused"


@pytest.mark.parametrize("ref", ["hf://owner", "hf://owner/repo", "hf://o/r/", "hf://o/r/model.safetensors@", "hf://o/r/../x.pth"])
def test_a_malformed_hf_reference_is_one_line_with_the_expected_form(ref, tmp_path):
    from click.testing import CliRunner

    from esrcli.cli import main

    result = CliRunner().invoke(main, ["bench", "speed", "-m", ref, "--seconds", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert ref in result.output and "expected hf://owner/repo/path/to/file[@revision]" in result.output


@pytest.fixture
def no_dns(monkeypatch):
    """This machine's resolver knows no host but loopback, as on a machine without a network."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_without_a_network_a_download_says_what_to_do_instead(no_dns, tmp_path, monkeypatch):
    import time

    from click.testing import CliRunner

    from esrcli.cli import main

    url = "https://weights.example.org/tiny.pth"
    write_registry(tmp_path, url, "1" * 64, 10)
    monkeypatch.setenv("ESR_MODELS_TOML", str(tmp_path / "models.toml"))
    default_registry.cache_clear()
    try:
        result = CliRunner().invoke(main, ["models", "fetch", "tiny"])
    finally:
        monkeypatch.delenv("ESR_MODELS_TOML")
        default_registry.cache_clear()
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    message = result.output
    assert "cannot resolve weights.example.org (no network?)" in message and "Errno" not in message
    assert url in message and "-m /path/to/file" in message and "esr models fetch tiny --file FILE" in message

    started = time.monotonic()
    hub = CliRunner().invoke(main, ["bench", "speed", "-m", "hf://someone/repo/model.safetensors", "--seconds", "0"])
    assert time.monotonic() - started < 5  # no retries against a host that does not resolve
    assert hub.exit_code == 1 and len(hub.output.strip().splitlines()) == 1
    assert "cannot resolve" in hub.output and "/someone/repo/resolve/main/model.safetensors" in hub.output
    assert "-m /path/to/file" in hub.output


def test_the_embedded_model_is_available_on_a_fresh_cache():
    from click.testing import CliRunner

    from esrcli.cli import main
    from esrcli.registry import DEFAULT_MODEL

    entry = default_registry().get(DEFAULT_MODEL)
    for weights in entry.weights:
        result = CliRunner().invoke(main, ["models", "path", DEFAULT_MODEL, "-s", str(weights.scale)])
        assert result.exit_code == 0, result.output
        path = Path(result.output.strip())
        assert path.is_file() and sha256_file(path) == weights.sha256
    listed = {e["name"]: e for e in json.loads(CliRunner().invoke(main, ["models", "list", "--json"]).output)}
    assert all(w["cached"] for w in listed[DEFAULT_MODEL]["weights"])
    table = CliRunner().invoke(main, ["models", "list"]).output
    row = next(line for line in table.splitlines() if line.strip("│ ").startswith(DEFAULT_MODEL))
    assert "embedded" in row
