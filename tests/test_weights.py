"""Weight files: every released checkpoint loads strictly; errors name the file and the keys."""

from __future__ import annotations

import os

import pytest
import torch

from esrcli.archs import build
from esrcli.weights import WeightsError, load_network, read_state_dict, save_network

# file, architecture, scale, parameters (REFERENCE.md section 1)
RELEASED = [
    ("span_ch28_x4_ntire24_team38.pth", "span", 4, 150_688),
    ("span_tiny_ch26_x4_ntire24_team39.pth", "span", 4, 130_828),
    ("dsclora_ch26_x4_ntire25_team23.pth", "span", 4, 130_828),
    ("espan_x4_ntire25_team36.pth", "espan", 4, 192_272),
    ("spanf_x4_ntire25_team24.pth", "spanf", 4, 148_288),
    ("span_ch28_slimtail_x4_ntire25_team46.pth", "span", 4, 146_328),
    ("efdn_x4_EFDN_gv.pth", "efdn", 4, 276_192),
    ("efdn_x2_EFDNx2_baseline.pth", "efdn", 2, 260_604),
]


def test_every_shared_file_is_listed_here(shared_weights):
    assert {p.name for p in shared_weights.glob("*.pth")} == {name for name, *_ in RELEASED}


@pytest.mark.parametrize("name,arch,scale,params", RELEASED)
def test_released_checkpoint_loads_strictly(shared_weights, name, arch, scale, params):
    network = load_network(shared_weights / name)
    assert (network.arch, network.scale, network.form) == (arch, scale, "fused")
    assert sum(p.numel() for p in network.parameters()) == params
    assert not network.training
    out = network(torch.rand(1, 3, 20, 24))
    assert out.shape == (1, 3, 20 * scale, 24 * scale)


def _small_span(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build("span", channels=8, scale=2, **kwargs).eval()


def test_missing_unexpected_and_misshapen_keys_are_listed(tmp_path):
    sd = _small_span().state_dict()
    sd.pop("conv_cat.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["upsampler.0.bias"] = torch.zeros(5)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as err:
        load_network(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "missing 1 keys (conv_cat.bias)" in message
    assert "unexpected 1 keys (extra.weight)" in message
    assert "upsampler.0.bias" in message and "wrong shapes" in message


def test_params_ema_is_preferred_and_module_prefix_stripped(tmp_path):
    net = _small_span()
    good = {f"module.{k}": v for k, v in net.state_dict().items()}
    bad = {k: torch.zeros_like(v) for k, v in good.items()}
    path = tmp_path / "wrapped.pth"
    torch.save({"params": bad, "params_ema": good, "iter": 5}, path)
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(load_network(path)(x), net(x))


def test_normalisation_is_read_from_no_norm_buffer(tmp_path):
    net = _small_span(norm=False)
    assert "no_norm" in net.state_dict()
    path = tmp_path / "community.pth"
    torch.save(net.state_dict(), path)
    loaded = load_network(path)
    assert loaded.config["norm"] is False
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(loaded(x), net(x))


def test_safetensors_round_trip_keeps_metadata(tmp_path):
    net = build("espan", channels=8, scale=3, n_blocks=2).eval()
    path = save_network(net, tmp_path / "out" / "espan.safetensors")
    sd, metadata = read_state_dict(path)
    assert metadata["esr.arch"] == "espan" and metadata["esr.scale"] == "3"
    assert set(sd) == set(net.state_dict())
    x = torch.rand(1, 3, 12, 12)
    assert torch.equal(load_network(path)(x), net(x))
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # readable like any file the user writes


def test_fp16_export_halves_the_file(tmp_path):
    net = build("span", channels=16, scale=4).eval()
    full = save_network(net, tmp_path / "a.safetensors")
    half = save_network(net, tmp_path / "b.safetensors", dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    x = torch.rand(1, 3, 8, 8)
    assert (load_network(half)(x) - net(x)).abs().max() < 0.05


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_unreadable_files_give_one_line(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        load_network(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_architecture_is_reported(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="no known architecture"):
        load_network(path)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such weight file"):
        load_network(tmp_path / "nope.pth")


def test_a_pickle_that_runs_code_is_refused_without_torch_advice(tmp_path):
    """A .pth whose pickle asks for os.system: refused, the global named, torch's advice not repeated."""
    import os
    import subprocess
    import sys

    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "hostile.pth"
    torch.save({"params": {"w": Hostile()}}, path)
    proc = subprocess.run(
        [sys.executable, "-m", "esrcli", "bench", "speed", "-m", str(path), "--seconds", "0"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "pwned" not in proc.stdout
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Warning" not in err
    assert "hostile.pth: refused" in err and "tries to run code" in err and "system" in err
    assert "weights_only" not in err and "will likely succeed" not in err


def test_a_plain_pickle_and_garbage_are_not_weight_files(tmp_path):
    import pickle

    pickled = tmp_path / "plain.pth"
    pickled.write_bytes(pickle.dumps({"w": [1, 2, 3]}, protocol=4))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"hello world " * 20)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path, message in ((pickled, "refused"), (garbage, "not a weight file"), (empty, "empty file, not a weight file")):
        with pytest.raises(WeightsError, match=message) as err:
            load_network(path)
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
