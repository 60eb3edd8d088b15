"""`esr export`: ONNX that onnxruntime runs like esr, spandrel files that spandrel loads, refusals that keep files safe."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import BENCHMARK, WEIGHTS, need
from conftest import run_cli as esr
from PIL import Image

from esrcli.export import check_card
from esrcli.imagefile import read_rgb8

ONNX_MODELS = {
    "span-tiny": "span_tiny_ch26_x4_ntire24_team39.pth",
    "span-ntire24": "span_ch28_x4_ntire24_team38.pth",
    "espan": "espan_x4_ntire25_team36.pth",
    "spanf": "spanf_x4_ntire25_team24.pth",
    "efdn": "efdn_x4_EFDN_gv.pth",
}
onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime: pip install 'esrcli[onnx]'")


def weights(name: str) -> Path:
    return need(WEIGHTS / ONNX_MODELS[name], "the released checkpoints are needed")


def real_picture(tmp_path: Path, width: int, height: int) -> Path:
    """An odd-sized crop of a real photograph (Set14 baboon, low resolution), saved as PNG."""
    source = need(BENCHMARK / "Set14" / "LR_bicubic" / "X4" / "baboonx4.png", "the benchmark sets are needed")
    path = tmp_path / f"comic_{width}x{height}.png"
    Image.fromarray(read_rgb8(source)[7 : 7 + height, 5 : 5 + width]).save(path)
    return path


def esr_upscale(model: Path | str, picture: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"{picture.stem}_{Path(model).stem}_esr.png"
    result = esr("upscale", str(picture), "-m", str(model), "--tile", "0", "--device", "cpu", "-o", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    return read_rgb8(out)


def onnx_upscale(onnx_file: Path, picture: Path, dtype=np.float32) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = (read_rgb8(picture).astype(np.float32) / 255).transpose(2, 0, 1)[None].astype(dtype)
    y = session.run(None, {"input": x})[0][0].astype(np.float64)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def levels_and_psnr(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float((diff**2).mean())
    return int(np.abs(diff).max()), math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("name", list(ONNX_MODELS))
def test_onnx_export_runs_in_onnxruntime_like_esr_upscale(name, tmp_path):
    import onnx

    model = weights(name)
    out = tmp_path / f"{name}.onnx"
    result = esr("export", str(model), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "matches esr on test card" in result.output and "(13x11 crop)" in result.output and "13x11" in result.output
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["esr.scale"] == "4" and props["esr.arch"] == {"efdn": "efdn", "espan": "espan", "spanf": "spanf"}.get(name, "span")
    assert props["esr.opset"] == "18" and props["esr.precision"] == "fp32"
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and [d.dim_param for d in (dims[0], dims[2], dims[3])] == ["batch", "height", "width"]
    # Sizes the export never saw: odd, and under 17 px (EFDN pads its attention branch there).
    for width, height in ((61, 47), (13, 9)):
        picture = real_picture(tmp_path, width, height)
        ours, theirs = esr_upscale(model, picture, tmp_path), onnx_upscale(out, picture)
        assert theirs.shape == ours.shape == (4 * height, 4 * width, 3)
        levels, psnr = levels_and_psnr(theirs, ours)
        assert levels <= 2 and psnr >= 50, f"{name} {width}x{height}: {levels} levels, {psnr:.1f} dB"


def test_fp16_onnx_is_half_the_size_and_close_to_fp32(tmp_path):
    model = weights("span-tiny")
    full, half = tmp_path / "fp32.onnx", tmp_path / "fp16.onnx"
    assert esr("export", str(model), "--out", str(full)).exit_code == 0
    result = esr("export", str(model), "--out", str(half), "--fp16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "onnx" and all(c["psnr"] >= 50 for c in report["checks"])
    assert half.stat().st_size < 0.7 * full.stat().st_size
    session = onnxruntime.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    picture = real_picture(tmp_path, 61, 47)
    levels, psnr = levels_and_psnr(onnx_upscale(half, picture, np.float16), esr_upscale(model, picture, tmp_path))
    assert levels <= 4 and psnr >= 55, (levels, psnr)  # README: fp16 ONNX is 1-4 levels, ~61 dB from esr fp32


def test_the_embedded_model_exports_with_a_real_check_image_and_runs_batches(tmp_path):
    picture = real_picture(tmp_path, 40, 30)
    out = tmp_path / "t.onnx"
    result = esr("export", "esr-tiny", "-s", "2", "--out", str(out), "--check-image", str(picture))
    assert result.exit_code == 0, result.output
    assert f"matches esr on {picture.name} 40x30" in result.output
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pixels = read_rgb8(picture).astype(np.float32).transpose(2, 0, 1) / 255
    batch = np.stack([pixels, pixels[:, ::-1, ::-1].copy(), np.full_like(pixels, 0.5)])
    together = session.run(None, {"input": batch})[0]
    alone = np.concatenate([session.run(None, {"input": frame[None]})[0] for frame in batch])
    assert together.shape == (3, 3, 60, 80) and np.abs(together - alone).max() < 1e-5


def test_white_noise_is_ill_conditioned_not_a_wrong_graph(tmp_path):
    """Why a first try saw span-tiny's ONNX output 2e-2 away from torch: on white noise SPAN-tiny's
    activations reach the hundreds and fp32 rounding (torch's as much as onnxruntime's) is amplified;
    against float64, onnxruntime is as close as torch is, and on a photograph both agree to ~1e-6."""
    import torch

    from esrcli.export import as_input, onnx_session, write_onnx
    from esrcli.weights import load_network

    network = load_network(weights("span-tiny"))
    write_onnx(network, tmp_path / "m.onnx", fp16=False, metadata={})
    session = onnx_session(tmp_path / "m.onnx")
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    photo = as_input(read_rgb8(real_picture(tmp_path, 64, 64)))
    errors = {}
    for name, x in (("noise", noise), ("photo", photo)):
        with torch.no_grad():
            exact = network.double()(x.double()).clamp(0, 1)
            torch32 = network.float()(x).clamp(0, 1).double()
        ort = torch.from_numpy(session.run(None, {"input": x.numpy()})[0]).double()
        errors[name] = (float((torch32 - exact).abs().max()), float((ort - exact).abs().max()))
    assert errors["noise"][0] > 1e-4 and errors["noise"][1] > 1e-4  # both fp32 runs are visibly off on noise
    assert errors["noise"][1] < 3 * errors["noise"][0]  # onnxruntime no worse than torch itself
    assert max(errors["photo"]) < 2e-5


def test_test_card_is_deterministic_and_photo_like():
    a, b = check_card(), check_card()
    assert a.shape == (75, 101, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 30 <= a.min() and a.max() <= 240  # no clipped channels (see README on saturated edges)


# --- spandrel ------------------------------------------------------------------------------------

# spandrel declares torchvision, which here would pull a multi-GB CUDA torch; it imports it only for
# LaMa and RestoreFormer. The test installs spandrel with --no-deps (plus einops) and gives the child
# process a stand-in for those two imports; nothing of torchvision is ever called.
SPANDREL_CHILD = textwrap.dedent(
    """
    import sys, types
    import numpy as np, torch

    def absent(*args, **kwargs):
        raise RuntimeError("torchvision stand-in: not available in esr's tests")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode, functional.rotate, functional.normalize = type("InterpolationMode", (), {}), absent, absent
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional})

    import spandrel

    path, x_file, out_file = sys.argv[1:4]
    descriptor = spandrel.ModelLoader().load_from_file(path)
    x = torch.from_numpy(np.load(x_file))
    model = descriptor.model
    convs = [m for m in model.modules() if hasattr(m, "update_params")]
    exported = [(m.eval_conv.weight.clone(), m.eval_conv.bias.clone()) for m in convs]  # esr's fused kernels, as loaded
    with torch.no_grad():
        trained = model.train()(x)  # the Conv3XC branches themselves
        model.eval()
        fused = model(x)  # spandrel re-fuses the branches into eval_conv first
    kernels = max(max(float((m.weight_concat - w).abs().max()), float((m.bias_concat - b).abs().max())) for m, (w, b) in zip(convs, exported))
    np.savez(out_file, trained=trained.numpy(), fused=fused.numpy())
    print(descriptor.architecture.id, descriptor.scale, kernels)
    """
)


def spandrel_run(model_file: Path, x, tmp_path: Path) -> tuple[str, dict]:
    if importlib.util.find_spec("spandrel") is None:
        pytest.skip("spandrel is not installed (pip install --no-deps spandrel einops: it declares torchvision)")
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "spandrel_child.py"
    script.write_text(SPANDREL_CHILD)
    done = subprocess.run(
        [sys.executable, str(script), str(model_file), str(tmp_path / "x.npy"), str(tmp_path / "y.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip(), dict(np.load(tmp_path / "y.npz"))


@pytest.mark.parametrize("model", ["span-tiny", "esr-tiny"])
def test_spandrel_export_loads_in_spandrel_with_esr_output(model, tmp_path):
    """span-tiny: an NTIRE release; esr-tiny: the SPAN esr trained itself (embedded)."""
    import torch

    from esrcli.export import as_input
    from esrcli.loading import load_reference

    ref = str(weights("span-tiny")) if model == "span-tiny" else "esr-tiny"
    out = tmp_path / f"{model}.pth"
    result = esr("export", ref, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "spandrel" in result.output
    network = load_reference(ref, progress=False).network
    x = as_input(read_rgb8(real_picture(tmp_path, 37, 29)))
    with torch.no_grad():
        expected = network(x).numpy()
    summary, outputs = spandrel_run(out, x, tmp_path)
    arch, scale, kernel_error = summary.split()
    assert (arch, scale) == ("SPAN", "4")
    assert float(kernel_error) == 0.0  # re-fusing the branches gives back esr's kernels exactly
    for form in ("trained", "fused"):
        assert np.abs(outputs[form] - expected).max() <= 1e-4, form
    # esr reads its own spandrel file back (training-form detection, fused on load) to the same output
    again = esr_upscale(out, real_picture(tmp_path, 37, 29), tmp_path)
    levels, _ = levels_and_psnr(again, esr_upscale(ref, real_picture(tmp_path, 37, 29), tmp_path))
    assert levels <= 1


def test_spandrel_export_as_safetensors(tmp_path):
    from safetensors import safe_open

    out = tmp_path / "span.safetensors"
    result = esr("export", "esr-tiny", "--format", "spandrel", "--out", str(out))
    assert result.exit_code == 0, result.output
    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
        assert "esr.arch" not in (f.metadata() or {})  # esr would read it as its fused layout
    assert {"conv_1.sk.weight", "block_1.c1_r.eval_conv.weight", "block_6.c3_r.conv.1.weight", "upsampler.0.weight"} <= keys


@pytest.mark.parametrize(
    ("file", "phrase"),
    [
        ("efdn_x4_EFDN_gv.pth", "spandrel has no EFDN architecture"),
        ("espan_x4_ntire25_team36.pth", "spandrel has no ESPAN architecture"),
        ("spanf_x4_ntire25_team24.pth", "spandrel has no SPAN-F architecture"),
        ("span_ch28_slimtail_x4_ntire25_team46.pth", "no narrowed concat tail"),
    ],
)
def test_spandrel_refuses_what_it_cannot_load_in_one_line(file, phrase, tmp_path):
    out = tmp_path / "x.pth"
    result = esr("export", str(need(WEIGHTS / file, "the released checkpoints are needed")), "--out", str(out))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and "--format onnx" in lines[0], result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- refusals and safety ---------------------------------------------------------------------------


def test_export_never_replaces_an_input_or_an_existing_file(tiny_model, tmp_path):
    src = Path(tiny_model)
    before = src.read_bytes()
    result = esr("export", str(src), "--out", str(src), "--overwrite")
    assert result.exit_code == 1 and "never overwrites an input" in result.output
    assert src.read_bytes() == before
    keep = tmp_path / "keep.onnx"
    keep.write_bytes(b"mine")
    result = esr("export", str(src), "--out", str(keep))
    assert result.exit_code == 1 and "already exists" in result.output and keep.read_bytes() == b"mine"
    result = esr("export", str(src), "--out", str(tmp_path / "model.bin"))
    assert result.exit_code == 1 and "name the file .safetensors" in result.output
    result = esr("export", str(src), "--format", "onnx", "--out", str(tmp_path / "model.pth"))
    assert result.exit_code == 1 and "written as .onnx" in result.output
    result = esr("export", str(src), "--out", str(tmp_path / "a.onnx"), "--check-image", str(tmp_path / "missing.png"))
    assert result.exit_code == 1 and "missing.png" in result.output
    result = esr("export", str(src))
    assert result.exit_code == 2 and "--out FILE" in result.output
    result = esr("export", str(src), "--out", str(tmp_path / "a.onnx"), "--raw")
    assert result.exit_code == 1 and "not a run folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]  # no partial files anywhere


def test_safetensors_export_of_a_file_keeps_its_provenance(tiny_model, tmp_path):
    from esrcli.weights import read_state_dict

    out = tmp_path / "copy.safetensors"
    result = esr("export", tiny_model, "--out", str(out), "--fp16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["format"] == "safetensors" and report["checks"][0]["psnr"] >= 50
    sd, metadata = read_state_dict(out)
    assert metadata["esr.arch"] == "span" and all(v.dtype.itemsize == 2 for v in sd.values() if v.is_floating_point())


def test_bench_speed_onnxruntime_backend(tiny_model):
    result = esr("bench", "speed", "-m", tiny_model, "--backend", "onnxruntime", "--size", "48x32", "--seconds", "0.2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["backend"] == "onnxruntime" and report["device"] == "cpu" and report["precision"] == "float32"
    assert report["latency_ms"] > 0 and report["runs"] >= 3 and report["input_size"] == [48, 32]
    refused = esr("bench", "speed", "-m", tiny_model, "--backend", "onnxruntime", "--device", "mps")
    assert refused.exit_code == 1 and "cpu or cuda" in refused.output


def test_python_api_export(tiny_model, tmp_path):
    import esrcli

    model = esrcli.load_model(tiny_model, device="cpu")
    result = model.export(tmp_path / "tiny.onnx", check_image=check_card(33, 21))
    assert result.format == "onnx" and [c.size for c in result.checks] == [(33, 21), (13, 11)]
    assert all(c.max_levels <= 1 for c in result.checks)
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((1, 3, 5, 7), np.float32)})[0].shape == (1, 3, 10, 14)
    with pytest.raises(esrcli.EsrError, match="already exists"):
        model.export(tmp_path / "tiny.onnx")


def test_to_folder_writes_weights_and_a_model_card_offline(tiny_model, tmp_path):
    from esrcli.weights import read_state_dict

    folder = tmp_path / "card"
    result = esr("export", tiny_model, "--to-folder", str(folder), "--licence", "Apache-2.0")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "tiny_x2-x2.safetensors"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "| Licence | Apache-2.0 |" in card and "| Scale | x2 |" in card
    assert read_state_dict(folder / "tiny_x2-x2.safetensors")[1]["esr.licence"] == "Apache-2.0"
    again = esr("export", tiny_model, "--to-folder", str(folder))
    assert again.exit_code == 1 and "already exists" in again.output
    assert esr("export", tiny_model, "--out", str(tmp_path / "x.onnx"), "--licence", "MIT").exit_code == 2


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_exports_are_byte_reproducible(tiny_model, tmp_path, suffix):
    """safetensors writes its metadata in a random order and torch.save names its archive after the
    file: esr sorts the one and names the other, so a pin can be checked by exporting again."""
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    for out in (first, second):
        assert esr("export", tiny_model, "--out", str(out)).exit_code == 0
    assert first.read_bytes() == second.read_bytes()
