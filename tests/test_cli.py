"""The `esr` command line: models and bench commands, and one-line errors with exit code 1."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from esrcli import __version__
from esrcli.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version_and_help():
    assert run("--version").output.strip() == f"esr, version {__version__}"
    result = run("--help")
    assert result.exit_code == 0 and "Examples:" in result.output and "models" in result.output


def test_models_list_table_and_json():
    table = run("models", "list")
    assert table.exit_code == 0
    for name in ("span", "span-ntire24", "span-tiny", "dsclora", "espan", "spanf", "efdn"):
        assert name in table.output
    data = json.loads(run("models", "list", "--json").output)
    assert {e["name"] for e in data} >= {"span", "efdn"}


def test_models_info_json():
    data = json.loads(run("models", "info", "efdn", "--json").output)
    assert data["arch"] == "efdn" and data["licence"] == "Apache-2.0"
    assert [w["scale"] for w in data["weights"]] == [4, 2]
    assert all(w["sources"] and len(w["sha256"]) == 64 and w["cached"] is None for w in data["weights"])


def test_fetch_from_file_then_path_and_list(shared_weights):
    missing = run("models", "path", "span-tiny")
    assert missing.exit_code == 1 and "esr models fetch span-tiny" in missing.stderr
    fetched = run("models", "fetch", "span-tiny", "--file", str(shared_weights / "span_tiny_ch26_x4_ntire24_team39.pth"))
    assert fetched.exit_code == 0, fetched.output
    path = run("models", "path", "span-tiny").output.strip()
    assert path.endswith(".safetensors") and path in fetched.output
    listed = {e["name"]: e for e in json.loads(run("models", "list", "--json").output)}
    assert listed["span-tiny"]["weights"][0]["cached"] == path


def test_fetch_from_file_picks_the_scale_by_hash(shared_weights):
    result = run("models", "fetch", "efdn", "--file", str(shared_weights / "efdn_x2_EFDNx2_baseline.pth"))
    assert result.exit_code == 0 and "efdn x2:" in result.output


def test_fetch_rejects_a_file_that_is_not_the_pinned_one(shared_weights):
    result = run("models", "fetch", "span-tiny", "--file", str(shared_weights / "dsclora_ch26_x4_ntire25_team23.pth"))
    assert result.exit_code == 1 and "not the pinned" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_offline_fetch_says_how_to_provide_the_file(monkeypatch):
    monkeypatch.setenv("ESR_OFFLINE", "1")
    result = run("models", "fetch", "espan")
    assert result.exit_code == 1
    assert "'espan'" in result.stderr and "raw.githubusercontent.com" in result.stderr and "-m " in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (("bench", "speed", "-m", "span-tny"), "did you mean span-tiny"),
        (("bench", "speed", "-m", "nowhere/missing.pth"), "no such weight file"),
        (("bench", "speed", "-m", "x.pth", "--precision", "fp16", "--device", "cpu"), "fp16 is not supported on the CPU"),
        (("bench", "speed", "-m", "span-tiny", "--device", "tpu"), "unknown device"),
    ],
)
def test_user_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_cuda():
    result = run("bench", "speed", "-m", "span-tiny", "--device", "cuda")
    assert result.exit_code == 1 and "CUDA was requested" in result.stderr


def test_bench_speed_on_a_file(shared_weights):
    result = run(
        "bench", "speed", "-m", str(shared_weights / "span_tiny_ch26_x4_ntire24_team39.pth"), "--size", "32x24", "--seconds", "0", "--json"
    )
    data = json.loads(result.output)
    assert data["params"] == 130_828 and data["input_size"] == [32, 24] and data["macs_g"] > 0


def _commands(group, path=()):
    import click

    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_has_examples_and_every_option_says_what_it_does():
    import click

    for path, command in _commands(main):
        result = run(*path, "--help")
        assert result.exit_code == 0, path
        assert "Examples:" in result.output, f"esr {' '.join(path)} --help has no examples"
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                assert param.help, f"esr {' '.join(path)} {param.opts[0]} has no help text"


def test_bench_quality_with_lr_files_of_the_wrong_size_is_one_line(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "set" / "HR").mkdir(parents=True)
    (tmp_path / "set" / "LR_bicubic" / "X4").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "set" / "HR" / "a.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "set" / "LR_bicubic" / "X4" / "a.png")
    result = run("bench", "quality", "-m", "esr-tiny", "--data", str(tmp_path / "set"))
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "a.png: 20x20 is not its HR image's 64x64 / 4" in result.stderr
    (tmp_path / "set" / "HR" / "b.png").write_bytes(b"not a png")
    (tmp_path / "set" / "LR_bicubic" / "X4" / "a.png").unlink()
    result = run("bench", "quality", "-m", "esr-tiny", "--data", str(tmp_path / "set"))
    assert result.exit_code == 1 and "b.png" in result.stderr and len(result.stderr.strip().splitlines()) == 1
