"""Architectures describe themselves: one defined here, outside esr, registered with one call, works
with every command (upscale, bench, export to safetensors and ONNX, train), and what it declares it
cannot do is refused in one line."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import photos, run_cli
from PIL import Image
from torch import Tensor, nn

from esrcli import archs
from esrcli.archs.base import SRNet
from esrcli.errors import UnknownArchitecture
from esrcli.weights import load_network


class Sketch(SRNet):
    """Two convs and a pixel shuffle over a nearest-neighbour skip: the smallest network that learns."""

    arch = "sketch"
    title = "Sketch"
    detect_order = 50

    def __init__(self, channels: int = 8, scale: int = 2, form: str = "fused") -> None:
        super().__init__(scale=scale, config=dict(channels=channels, scale=scale), form=form)
        self.sketch_head = nn.Conv2d(3, channels, 3, padding=1)
        self.sketch_tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        detail = self.shuffle(self.sketch_tail(F.relu(self.sketch_head(x))))
        return F.interpolate(x, scale_factor=self.scale, mode="nearest") + detail

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        if "sketch_head.weight" not in sd or "sketch_tail.weight" not in sd:
            return None
        return dict(channels=sd["sketch_head.weight"].shape[0], scale=math.isqrt(sd["sketch_tail.weight"].shape[0] // 3), form="fused")


@pytest.fixture
def sketch() -> Iterator[type[Sketch]]:
    archs.register(Sketch)  # the one call
    try:
        yield Sketch
    finally:
        archs.unregister(Sketch.arch)


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def test_an_architecture_from_outside_works_with_every_command_after_one_register_call(sketch, tmp_path):
    photos(tmp_path / "train", 4, 48)
    photos(tmp_path / "hr", 2, 40)
    picture = tmp_path / "hr" / "p0.png"
    run, weights = tmp_path / "run", tmp_path / "sketch.safetensors"

    assert "sketch" in archs.names() and archs.get("sketch") is Sketch
    common = ["--channels", "8", "--scale", "2", "--steps", "3", "--batch", "2", "--lr-patch", "16", "--device", "cpu"]
    ok(
        run_cli(
            "train", "--arch", "sketch", *common, "--data", str(tmp_path / "train"), "--out", str(run), "--quiet", "--set", "data.workers=0"
        )
    )
    ok(run_cli("export", str(run), "--out", str(weights)))
    network = load_network(weights)
    assert isinstance(network, Sketch) and network.config == {"channels": 8, "scale": 2}

    # upscale: the pixels of the network itself, from esr's file and from a bare state dict (detection)
    plain = tmp_path / "bare.pth"
    torch.save(network.state_dict(), plain)
    lr = np.array(Image.open(picture).convert("RGB"))
    with torch.no_grad():
        direct = network(torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255)[0]
    expected = (direct.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    for model in (weights, plain):
        out = tmp_path / f"up-{model.suffix[1:]}.png"
        ok(run_cli("upscale", str(picture), "-m", str(model), "-o", str(out), "--quiet", "--device", "cpu"))
        got = np.asarray(Image.open(out))
        assert got.shape == (80, 80, 3) and np.abs(got.astype(int) - expected).max() <= 1

    report = json.loads(ok(run_cli("bench", "quality", "-m", str(weights), "--data", str(tmp_path / "hr"), "--json", "--device", "cpu")))
    assert report["scale"] == 2 and report["sets"]["hr"]["images"] == 2 and 10 < report["sets"]["hr"]["psnr"] < 60

    onnx = tmp_path / "sketch.onnx"
    result = json.loads(ok(run_cli("export", str(weights), "--out", str(onnx), "--json")))  # checked in onnxruntime
    assert onnx.is_file() and result["checks"] and all(c["max_levels"] <= 2 for c in result["checks"]) and not result["unchecked"]

    # what it does not declare: spandrel has no such architecture; one line, nothing written
    refused = run_cli("export", str(weights), "--out", str(tmp_path / "sketch.pth"))
    assert refused.exit_code != 0 and "spandrel has no Sketch architecture" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "sketch.pth").exists()


def test_registration_refuses_what_is_not_an_architecture_and_taken_ids(sketch):
    class Impostor(Sketch):
        arch = "span"

    with pytest.raises(UnknownArchitecture, match="taken by esrcli.archs.span.SPAN"):
        archs.register(Impostor)
    with pytest.raises(UnknownArchitecture, match="SRNet subclass"):
        archs.register(nn.Conv2d)  # type: ignore[arg-type]
    archs.register(Sketch)  # the same class again: no error
    assert archs.names().count("sketch") == 1


def test_detection_follows_the_declared_order_not_the_registration_order():
    order = [cls.arch for cls in archs.in_detection_order()]
    assert order.index("espan") < order.index("span") and order.index("spanf") < order.index("span")
    for cls in archs.in_detection_order():  # each built-in declares what it is
        assert cls.title and cls.forms and isinstance(cls.local, bool) and isinstance(cls.half, bool)


def test_the_names_come_without_torch():
    import subprocess

    code = "import sys, esrcli.archs as a; print(a.names(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "['span', 'espan', 'spanf', 'efdn'] False"


def test_a_training_config_names_the_registered_architectures(sketch, tmp_path):
    refused = run_cli("train", "--arch", "nope", "--data", str(Path(tmp_path)), "--out", str(tmp_path / "r"), "--steps", "1")
    assert refused.exit_code != 0 and "span, espan, spanf, efdn or sketch" in refused.output


class FullPrecisionSketch(Sketch):
    """The same network, declared unable to run in half precision."""

    arch = "sketch-fp32"
    title = "Sketch (fp32)"
    half = False

    @classmethod
    def detect(cls, sd: Mapping[str, Tensor]) -> dict[str, Any] | None:
        return None  # loaded from esr's own files only (their metadata names the architecture)


def test_an_architecture_that_declares_no_half_precision_runs_in_fp32(tmp_path):
    import warnings

    from esrcli import load_model
    from esrcli.weights import save_network

    archs.register(FullPrecisionSketch)
    try:
        for cls in (Sketch, FullPrecisionSketch):
            archs.register(cls)
            path = save_network(cls(channels=4, scale=2).eval(), tmp_path / f"{cls.arch}.safetensors")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # bf16 may be emulated on this CPU
                model = load_model(str(path), device="cpu", precision="bf16")
            assert model.dtype == (torch.bfloat16 if cls.half else torch.float32), cls.arch
            assert model.upscale(np.zeros((8, 8, 3), np.uint8)).shape == (16, 16, 3)
    finally:
        archs.unregister(FullPrecisionSketch.arch)
        archs.unregister(Sketch.arch)
