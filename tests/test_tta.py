"""`--tta`, the x8 self-ensemble: the mean of the 8 flips and turns, in every command and in the API."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import photos, run_cli
from PIL import Image
from torch import nn

import esrcli
from esrcli.ensemble import SelfEnsemble
from esrcli.errors import EnsembleError, EsrError
from esrcli.loading import load_reference
from esrcli.registry import DEFAULT_MODEL
from esrcli.tiling import TilePlan, Upscaler


@pytest.fixture(autouse=True)
def one_thread():
    """CPU convolutions round differently with other thread counts: the references below use this one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network() -> nn.Module:
    """The embedded model's x4 network (no download): the plain network the references are made with."""
    return load_reference(DEFAULT_MODEL, native=4, progress=False).network


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    """A real PNG, not square (so a turn changes its shape)."""
    folder = tmp_path_factory.mktemp("pictures")
    photos(folder, 1, 48)
    path = folder / "p0.png"
    Image.fromarray(np.asarray(Image.open(path))[:, :40]).save(path)  # 40x48
    return path


def reference(network: nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The definition, written independently: torch.rot90 and torch.flip of the input, the plain network,
    the output turned back, the 8 averaged (in float64 here), clamped and rounded to uint8."""
    x = torch.from_numpy(np.array(pixels)).permute(2, 0, 1)[None].float() / 255.0
    total = torch.zeros(1, 3, pixels.shape[0] * 4, pixels.shape[1] * 4, dtype=torch.float64)
    with torch.inference_mode():
        for mirrored in (False, True):
            for turns in range(4):
                view = torch.rot90(x.flip(-1) if mirrored else x, turns, (-2, -1))
                y = torch.rot90(network(view.contiguous(memory_format=torch.channels_last)), -turns, (-2, -1))
                total += (y.flip(-1) if mirrored else y).double()
    return (total / 8).float().clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()


def levels_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype
    return np.abs(a.astype(np.int32) - b.astype(np.int32))


def test_tta_is_the_mean_of_the_eight_flips_and_turns(network, picture):
    pixels = np.asarray(Image.open(picture))
    model = esrcli.load_model(DEFAULT_MODEL, device="cpu", denoise=0)
    out = model.upscale(pixels, tta=True)
    diff = levels_apart(out, reference(network, pixels))
    assert diff.max() <= 1 and (diff == 0).mean() >= 0.999, f"{(diff > 0).sum()} pixels off, at most {diff.max()}"
    plain = model.upscale(pixels)
    assert levels_apart(out, plain).mean() > 0.1  # and it is not the plain output


@pytest.mark.parametrize("size", [(36, 36), (36, 44)], ids=["square: one call of 8", "oblong: two calls of 4"])
def test_batched_views_equal_views_one_at_a_time(network, size):
    """A GPU's batching (8 views of a square tile in one call, else two of 4) and a CPU's one view per call
    give the same floats."""
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    batched, single = SelfEnsemble(network, per_call=8), SelfEnsemble(network, per_call=1)
    assert [len(g) for g in batched.groups(*size)] == ([8] if size[0] == size[1] else [4, 4])
    with torch.inference_mode():
        a, b = batched(x), single(x)
    assert a.dtype == torch.float32 and a.shape == (2, 3, size[0] * 4, size[1] * 4)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_tiles_batches_and_passes_all_run_the_ensemble(picture):
    """Decided once when the pipeline is built: tiled (several tiles per call) equals whole, and every pass
    of a multi-pass plan is wrapped."""
    model = esrcli.load_model(DEFAULT_MODEL, device="cpu", denoise=0, tta=True)
    pixels = np.asarray(Image.open(picture))
    whole = model.upscale(pixels, tile=0)
    pipeline = model.pipeline(4, tile=32, overlap=21, batch=2)
    assert pipeline.tta and pipeline.count_tiles(*pixels.shape[:2]) == 4
    tiled = pipeline.run(pixels)
    assert levels_apart(tiled, whole).max() <= 1
    two_passes = model.pipeline(16)
    assert two_passes.plan.passes == (4, 4) and two_passes.tta
    assert all(isinstance(u.network, SelfEnsemble) for u in two_passes.upscalers.values())
    assert not any(isinstance(u.network, SelfEnsemble) for u in model.pipeline(16, tta=False).upscalers.values())


class OverflowsOnBright(nn.Module):
    """In reduced precision, inf for every sample that holds a bright pixel: an overflow in some tiles only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.scale = inner, inner.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if x.dtype == torch.float32:
            return y
        bright = (x.flatten(1).amax(dim=1) > 0.99)[:, None, None, None]
        return torch.where(bright, float("inf"), y)


def test_a_half_precision_tile_that_overflows_is_redone_in_fp32_with_the_ensemble(network, tmp_path):
    fp32 = copy.deepcopy(network)
    half = OverflowsOnBright(copy.deepcopy(fp32).to(torch.bfloat16))
    photos(tmp_path, 1, 96)
    image = np.asarray(Image.open(tmp_path / "p0.png"))[:48] // 2  # nothing bright...
    image[:, 72:] = 255  # ...but the right quarter
    plan = TilePlan(48, 21, 2)
    upscaler = Upscaler(SelfEnsemble(half, per_call=8), 4, plan, fp32=SelfEnsemble(OverflowsOnBright(fp32), per_call=8))
    out = upscaler.upscale(image, np.empty((48 * 4, 96 * 4, 3), np.uint8))
    assert upscaler.retries["fp32"] == 1  # of two tiles, one saw the bright band
    want = Upscaler(SelfEnsemble(fp32, per_call=1), 4, plan).upscale(image, np.empty_like(out))
    right = np.s_[:, (48 + 21) * 4 :]
    assert levels_apart(out[right], want[right]).max() <= 1  # the fp32 weights' ensemble, not an inf clamped to white


def test_cli_upscale_with_tta_gives_the_api_pixels(picture, tmp_path):
    result = run_cli("upscale", str(picture), "-o", str(tmp_path / "tta.png"), "--tta", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tta"] is True and len(summary["outputs"]) == 1
    cli = np.asarray(Image.open(tmp_path / "tta.png"))
    assert cli.shape == (48 * 4, 40 * 4, 3)
    assert np.array_equal(cli, np.asarray(esrcli.load_model(DEFAULT_MODEL, tta=True).upscale(Image.open(picture))))
    assert np.array_equal(cli, np.asarray(esrcli.upscale(Image.open(picture), tta=True)))
    assert np.array_equal(cli, np.asarray(esrcli.load_model(DEFAULT_MODEL).upscale(Image.open(picture), tta=True)))
    plain = run_cli("upscale", str(picture), "-o", str(tmp_path / "plain.png"), "--json")
    assert json.loads(plain.stdout)["tta"] is False
    assert not np.array_equal(cli, np.asarray(Image.open(tmp_path / "plain.png")))
    verbose = run_cli("upscale", str(picture), "-o", str(tmp_path / "v.png"), "--tta", "-v", "--overwrite")
    assert "self-ensemble" in verbose.output


def test_tensors_and_ray_workers_get_the_ensemble(picture):
    """A float tensor (whole, on the model's device: the network is called directly) and the spec a Ray
    worker opens its model from carry --tta too."""
    from esrcli.jobs import ModelSpec

    model = esrcli.load_model(DEFAULT_MODEL, device="cpu", denoise=0)
    pixels = np.asarray(Image.open(picture))
    arrays = model.upscale(pixels, tta=True)
    tensor = model.upscale(torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255, tta=True)
    as_uint8 = tensor.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert levels_apart(as_uint8, arrays).max() <= 1
    pipeline = model.pipeline(tta=True)
    spec = ModelSpec(DEFAULT_MODEL, "cpu", "auto", None, 0.0).for_workers(pipeline)
    assert spec.tta is True and ModelSpec(DEFAULT_MODEL, "cpu", "auto", None, 0.0).for_workers(model.pipeline()).tta is False
    worker = esrcli.Model(spec.model, scale=spec.scale, device=spec.device, precision=spec.precision, denoise=spec.denoise, tta=spec.tta)
    assert np.array_equal(worker.pipeline(spec.scale, tiling=spec.tiling).run(pixels), arrays)


def test_bench_quality_with_tta_beats_plain_on_set5(benchmark_data):
    scores = {}
    for flags in ([], ["--tta"]):
        result = run_cli("bench", "quality", "-m", DEFAULT_MODEL, "--data", str(benchmark_data / "Set5"), "--json", *flags)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["tta"] is bool(flags) and summary["sets"]["Set5"]["images"] == 5
        scores[bool(flags)] = summary["sets"]["Set5"]["psnr"]
    assert scores[True] > scores[False] + 0.05, scores


def test_video_with_tta_has_the_api_frames(tiny_model, tmp_path):
    from esrcli.video import FFMPEG

    src, out = tmp_path / "in.mkv", tmp_path / "out.mkv"
    ffmpeg = [FFMPEG, "-hide_banner", "-v", "error", "-y"]
    subprocess.run([*ffmpeg, "-f", "lavfi", "-i", "testsrc2=s=40x24:r=10", "-t", "0.5", "-c:v", "ffv1", str(src)], check=True)
    args = ("video", str(src), str(out), "-m", tiny_model, "--codec", "ffv1", "--pix-fmt", "bgr0", "--crf", "-1", "--json")
    result = run_cli(*args, "--tta")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tta"] is True

    def frames(path: Path, width: int, height: int) -> np.ndarray:
        raw = subprocess.run([*ffmpeg, "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
        return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)

    lr, sr = frames(src, 40, 24), frames(out, 80, 48)
    model = esrcli.load_model(tiny_model, device="cpu", tta=True)
    assert len(sr) == len(lr) == 5
    assert all(np.array_equal(model.upscale(f), s) for f, s in zip(lr, sr))


def test_bad_combinations_are_one_line_errors(picture):
    with pytest.raises(EnsembleError, match="tta 'yes'"):
        esrcli.load_model(DEFAULT_MODEL, tta="yes")
    with pytest.raises(EsrError, match="tta 1"):
        esrcli.load_model(DEFAULT_MODEL).upscale(np.zeros((8, 8, 3), np.uint8), tta=1)
    result = run_cli("bench", "quality", "-m", "bicubic", "--tta", "--data", str(picture.parent))
    assert result.exit_code == 1 and "--tta with -m bicubic" in result.output and len(result.output.strip().splitlines()) == 1
