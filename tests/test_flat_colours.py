"""Saturated colour edges: the NTIRE SPAN releases speckle them as released, and esr's feature clamp stops it.

The weights themselves do it (a plain torch forward of the release file): on a pure blue field with yellow
text a block's output overshoots its photographic range by up to 400 times that range. esr holds every block
and every conv in one to its calibrated photographic range (models.toml clamp_features), whether the model is
named or its release file given; benchmarks/flat_colours.py measures more pictures and every affected model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import BENCHMARK, WEIGHTS, need
from PIL import Image, ImageDraw, ImageFont

import esrcli
from esrcli.cli import main
from esrcli.imagefile import read_rgb8
from esrcli.loading import clamped_blocks, feature_bounds, import_model_file
from esrcli.registry import default_registry
from esrcli.weights import load_network

SPAN_TINY = "span_tiny_ch26_x4_ntire24_team39.pth"
BLUE, YELLOW = (0, 0, 255), (255, 255, 0)
FLAT_DISTANCE = 3  # LR pixels from the strokes and from the picture border


@pytest.fixture
def span_tiny_file() -> str:
    return str(need(WEIGHTS / SPAN_TINY, "the released checkpoints are needed"))


@pytest.fixture
def span_tiny(span_tiny_file) -> str:
    """The registry name, its cache filled from ../shared as `esr models fetch span-tiny --file` does."""
    entry = default_registry().get("span-tiny")
    import_model_file(entry, entry.variant(4), span_tiny_file)
    return "span-tiny"


def blue_with_yellow_text() -> np.ndarray:
    """A lossless screenshot: pure blue, aliased yellow text, a thin diagonal and a 2 px stroke."""
    image = Image.new("RGB", (72, 56), BLUE)
    draw = ImageDraw.Draw(image)
    font = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    draw.text((6, 6), "Save 42%", fill=YELLOW, font=font)
    draw.line((6, 34, 30, 44), fill=YELLOW, width=1)
    draw.line((40, 30, 66, 30), fill=YELLOW, width=2)
    return np.array(image)


def as_released(weight_file: str, lr: np.ndarray) -> np.ndarray:
    """A plain torch forward of the release file, as its authors' test code runs it: no clamp."""
    with torch.inference_mode():
        y = load_network(weight_file)(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)
    return (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def flat_deviation(lr: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """Per output pixel of the flat blue (FLAT_DISTANCE LR pixels from anything else), its largest channel's distance from blue."""
    other = torch.from_numpy((lr != np.array(BLUE, np.uint8)).any(axis=2)).float()[None, None]
    near = F.max_pool2d(F.pad(other, (FLAT_DISTANCE,) * 4, value=1.0), 2 * FLAT_DISTANCE + 1, stride=1)[0, 0] > 0
    flat = (~near).numpy().repeat(4, 0).repeat(4, 1)
    assert flat.sum() > 2000, "the picture needs flat area to measure"
    return np.abs(sr.astype(int) - np.array(BLUE)).max(axis=2)[flat]


def test_every_clamped_model_has_calibrated_bounds():
    """A clamp_features entry without bounds would fail at load; every scale of every such model has them."""
    clamped = [e for e in default_registry() if e.clamp_features]
    assert {e.name for e in clamped} >= {"span-tiny", "span-ntire24", "dsclora", "span-slimtail", "espan", "spanf"}
    for entry in clamped:
        for weights in entry.weights:
            bounds = feature_bounds(weights.sha256)
            assert bounds, f"{entry.name} x{weights.scale}"
            assert all(bool((low < high).all()) for low, high in bounds.values())
    assert default_registry().get("esr-tiny").clamp_features  # version 3 starts from span-ntire24 and inherits its speckle


def test_the_default_model_keeps_a_blue_field_blue():
    """esr-tiny is embedded, so this runs without ../shared: its weights speckle the field, its clamp holds it."""
    lr = blue_with_yellow_text()
    model = esrcli.load_model("esr-tiny", device="cpu")
    assert clamped_blocks(model.network) == 6
    assert flat_deviation(lr, model.upscale(lr, tile=0)).max() <= 4
    raw = flat_deviation(lr, as_released(str(Path(esrcli.__file__).parent / "weights" / "esr-tiny-x4.safetensors"), lr))
    assert raw.max() > 100, raw.max()  # measured: 255 levels, 106 pixels


def test_span_tiny_keeps_a_blue_field_blue_where_the_release_speckles_it(span_tiny, span_tiny_file):
    lr = blue_with_yellow_text()
    model = esrcli.load_model(span_tiny, device="cpu")
    assert clamped_blocks(model.network) == 6
    fixed = flat_deviation(lr, model.upscale(lr, tile=0))
    raw = flat_deviation(lr, as_released(span_tiny_file, lr))
    assert raw.max() > 100 and (raw > 8).sum() > 1000, (raw.max(), (raw > 8).sum())  # measured: 255 levels, 6412 pixels
    assert fixed.max() <= 4, (fixed.max(), (fixed > 4).sum())  # measured: 2 levels at most (esr-tiny: 8)
    # the release file given as -m is the same model: clamped too
    assert np.array_equal(esrcli.load_model(span_tiny_file, device="cpu").upscale(lr, tile=0), model.upscale(lr, tile=0))
    # tiled as the CLI tiles large pictures: the bounds are constants, not per tile
    assert np.array_equal(model.upscale(lr, tile=32), model.upscale(lr, tile=0))


def test_the_clamp_leaves_photographs_and_flat_colours_as_they_were(span_tiny, span_tiny_file):
    lr = read_rgb8(need(BENCHMARK / "Set5" / "LR_bicubic" / "X4" / "babyx4.png", "the benchmark sets are needed"))
    model = esrcli.load_model(span_tiny, device="cpu")
    assert np.abs(model.upscale(lr, tile=0).astype(int) - as_released(span_tiny_file, lr)).max() <= 1
    for colour in np.random.default_rng(0).integers(0, 256, (12, 3)):
        # a flat field of any colour: inside, as the release has it; at the border (where both see the network's
        # zero padding, and the release rings by up to 25 levels) never farther from the colour than the release
        flat = np.full((16, 16, 3), colour, np.uint8)
        clamped, released = model.upscale(flat, tile=0).astype(int), as_released(span_tiny_file, flat).astype(int)
        assert np.abs(clamped - released)[12:-12, 12:-12].max() <= 2, colour  # measured: 2 levels at most
        assert np.abs(clamped - colour).max() <= np.abs(released - colour).max(), colour


def test_spandrel_export_of_a_clamped_model_warns_in_one_line_and_holds_the_release(span_tiny, tmp_path):
    out = tmp_path / "span-tiny.pth"
    result = CliRunner().invoke(main, ["export", span_tiny, "--out", str(out)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "feature clamp" in warnings[0] and "--format onnx" in warnings[0], result.output
    assert clamped_blocks(esrcli.load_model(str(out), device="cpu").network) == 0  # what spandrel runs: the weights as released


def test_an_esr_safetensors_export_keeps_the_clamp(span_tiny, span_tiny_file, tmp_path):
    """The file holds the plain weights; its metadata names the registry model and release, so esr clamps it again."""
    for ref in (span_tiny, span_tiny_file):
        out = tmp_path / f"{Path(ref).stem}.safetensors"
        result = CliRunner().invoke(main, ["export", ref, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert clamped_blocks(esrcli.load_model(str(out), device="cpu").network) == 6


def test_an_onnx_export_carries_the_clamp(span_tiny, tmp_path):
    """ONNX holds the clamp as Max/Min nodes: onnxruntime keeps the blue field blue too."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extra")
    out = tmp_path / "span-tiny.onnx"
    result = CliRunner().invoke(main, ["export", span_tiny, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lr = blue_with_yellow_text()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {session.get_inputs()[0].name: lr.transpose(2, 0, 1)[None].astype(np.float32) / 255})
    sr = (np.clip(y[0], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
    assert flat_deviation(lr, sr).max() <= 4
