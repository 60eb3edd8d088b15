"""Degradations: each step changes an image the documented way; training samples and benchmark sets are reproducible."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import BENCHMARK, need
from PIL import Image

from esrcli.cli import main
from esrcli.degrade import (
    PRESETS,
    DegradationConfig,
    DegradationError,
    Degrader,
    degrade_benchmark,
    filter2d,
    gaussian_kernel,
    generalized_kernel,
    jpeg,
    parse_spec,
    plateau_kernel,
    sinc_kernel,
)
from esrcli.runconfig import ConfigError, TrainConfig
from esrcli.train.data import PatchDataset, Source


def texture(size: int = 96, seed: int = 0) -> np.ndarray:
    """Detail at every frequency: smooth gradients plus fine random texture (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x / size, y / size, (x + y) / (2 * size)], -1) * 160
    return np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def high_frequency_energy(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    return float(np.mean(np.diff(grey, axis=0) ** 2) + np.mean(np.diff(grey, axis=1) ** 2))


def blockiness(image: np.ndarray) -> float:
    """Mean jump across 8x8 block boundaries over the mean jump inside blocks (1 for no blocks)."""
    grey = image.astype(np.float64).mean(axis=2)
    jumps = np.abs(np.diff(grey, axis=1))
    at_edges = jumps[:, 7::8].mean()
    inside = np.delete(jumps, np.s_[7::8], axis=1).mean()
    return float(at_edges / inside)


def test_kernels_are_normalised_and_shaped_as_named():
    for k in (
        gaussian_kernel(21, 2.0),
        gaussian_kernel(21, 1.0, 3.0, 0.5),
        generalized_kernel(15, 1.5, 1.5, 0.0, 4.0),
        plateau_kernel(15, 1.5, 2.0, 0.3, 1.5),
        sinc_kernel(21, 1.0),
    ):
        assert abs(k.sum() - 1) < 1e-9 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    r = np.arange(21) - 10
    aniso = gaussian_kernel(21, 1.0, 3.0, 0.0)  # sigma 1 across x, 3 across y
    var_x, var_y = (aniso.sum(axis=0) * r**2).sum(), (aniso.sum(axis=1) * r**2).sum()
    assert var_y / var_x == pytest.approx(9, rel=0.05)
    assert (sinc_kernel(21, 1.0) < 0).any()  # a sinc rings: negative lobes
    flat, peaky = generalized_kernel(15, 2.0, 2.0, 0.0, 4.0), generalized_kernel(15, 2.0, 2.0, 0.0, 0.5)
    assert flat[7, 8] / flat[7, 7] > 0.99 > peaky[7, 8] / peaky[7, 7]  # a flat top against a sharp peak


def test_blur_lowers_high_frequency_energy():
    image = texture()
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    for kernel in (gaussian_kernel(15, 2.0), generalized_kernel(15, 2.0, 1.0, 0.7, 2.0), plateau_kernel(15, 1.5, 1.5, 0, 1.5)):
        blurred = (filter2d(x, kernel).clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
        assert high_frequency_energy(blurred) < 0.3 * high_frequency_energy(image)
        assert abs(blurred.mean() - image.mean()) < 2  # brightness kept


def test_noise_of_sigma_s_has_that_standard_deviation():
    flat = np.full((128, 128, 3), 128, np.uint8)
    for sigma in (5.0, 10.0, 20.0):
        noisy = degrade_benchmark(np.repeat(np.repeat(flat, 4, 0), 4, 1), 4, f"noise:{sigma:g}", key="flat")
        measured = (noisy.astype(np.float64) - 128).std()
        assert abs(measured - sigma) < 0.05 * sigma + 0.3, (sigma, measured)


def test_jpeg_makes_8x8_blocks():
    image = texture(128)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    compressed = (jpeg(x, 20) * 255).round().permute(1, 2, 0).numpy()
    assert blockiness(image) < 1.1 and blockiness(compressed) > 1.3
    via_spec = degrade_benchmark(np.repeat(np.repeat(image, 4, 0), 4, 1), 4, "jpeg:20", key="t")
    assert blockiness(via_spec) > 1.3


def test_specs_parse_and_bad_ones_say_why():
    assert parse_spec("blur:1.2+noise:5+jpeg:60") == [("blur", 1.2), ("noise", 5.0), ("jpeg", 60.0)]
    for bad, message in (
        ("jpeg:70.5", "integer"),
        ("jpeg:0", "from 1"),
        ("sharpen:2", "is not one of"),
        ("noise:x", "not a number"),
        ("noise:5+blur:1", "must come first"),
        ("", "is not one of"),
    ):
        with pytest.raises(DegradationError, match=message):
            parse_spec(bad)


def test_benchmark_degradations_are_identical_in_fresh_processes():
    code = (
        "import hashlib, numpy as np; from esrcli.degrade import degrade_benchmark; "
        "rng = np.random.default_rng(5); hr = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8); "
        "print(hashlib.sha256(degrade_benchmark(hr, 4, 'blur:1.2+noise:5+jpeg:60', 'img').tobytes()).hexdigest())"
    )
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(runs) == 1
    hr = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    a, b = degrade_benchmark(hr, 4, "noise:5", "one"), degrade_benchmark(hr, 4, "noise:5", "two")
    assert not np.array_equal(a, b)  # each image its own noise


def test_bench_quality_reports_the_degradation_and_bicubic_is_a_model():
    data = need(BENCHMARK / "Set5", "Set5 is needed")
    runner = CliRunner()
    scores = {}
    for model in ("bicubic", "esr-tiny"):
        for spec in (None, "jpeg:50"):
            args = ["bench", "quality", "-m", model, "--data", str(data), "--json"] + (["--degrade", spec] if spec else [])
            result = runner.invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
            summary = json.loads(result.stdout)
            assert summary["degradation"] == (spec or "none (bicubic)")
            scores[model, spec] = summary["sets"]["Set5"]["psnr"]
    assert scores["bicubic", None] == pytest.approx(28.43, abs=0.01)  # the published bicubic x4 figure
    assert scores["bicubic", "jpeg:50"] < scores["bicubic", None] - 0.5
    assert scores["esr-tiny", None] > scores["bicubic", None]
    bad = runner.invoke(main, ["bench", "quality", "-m", "bicubic", "--data", str(data), "--degrade", "jpeg:500"])
    assert bad.exit_code == 1 and "jpeg takes an integer from 1 to 100" in bad.output


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "none"])
def test_training_samples_are_a_pure_function_of_seed_and_index(preset):
    image = texture(240, seed=3)
    degrader = Degrader(DegradationConfig(preset=preset), 4)
    dataset = PatchDataset([Source(image)], 4, 16, seed=7, degrader=degrader)
    again = PatchDataset([Source(image)], 4, 16, seed=7, degrader=Degrader(DegradationConfig(preset=preset), 4))
    for index in (0, 5, 123):
        lr, hr = dataset[index]
        lr2, hr2 = again[index]
        assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
        assert lr.shape == (3, 16, 16) and hr.shape == (3, 64, 64)
        assert torch.equal((lr * 255).round(), lr * 255)  # 8-bit values, like a stored file
    other = PatchDataset([Source(image)], 4, 16, seed=8, degrader=degrader)
    assert not torch.equal(dataset[0][0], other[0][0])
    clean = PatchDataset([Source(image)], 4, 16, seed=7)
    differs = sum(not torch.equal(dataset[i][0], clean[i][0]) for i in range(20))
    assert differs >= 10  # most samples are degraded


def test_presets_and_overrides_resolve_through_the_config():
    cfg = TrainConfig()
    assert not cfg.degradation.enabled
    cfg.set("degradation.preset", "jpeg")
    cfg.set("degradation.jpeg_range", "[40, 90]")
    values = cfg.degradation.resolved()
    assert values["jpeg_range"] == [40, 90] and values["noise_prob"] == 0.0
    text = cfg.to_toml()
    assert 'preset = "jpeg"' in text and "jpeg_range = [40, 90]" in text and "noise_prob" not in text
    assert TrainConfig.from_dict(__import__("tomllib").loads(text)).degradation.resolved() == values
    with pytest.raises(ConfigError, match="unknown degradation preset"):
        DegradationConfig(preset="heavy").resolved()


def test_contact_sheet_script_writes_a_picture(tmp_path):
    out = tmp_path / "sheet.png"
    script = __import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks" / "degradations.py"
    image = tmp_path / "img.png"
    Image.fromarray(texture(400)).save(image)
    subprocess.run([sys.executable, str(script), "--out", str(out), "--image", str(image), "--crops", "2"], check=True, timeout=300)
    with Image.open(out) as sheet:
        assert sheet.width > 400 and sheet.height > 200
