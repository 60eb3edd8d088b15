"""--denoise: esr-tiny mixed with its robust partner, by hand or from what the input shows (esrcli.estimate)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TRAIN_DATA, need
from PIL import Image

import esrcli
from esrcli.cli import main
from esrcli.denoise import DenoiseError, strength_for
from esrcli.estimate import IJG_LUMA, ijg_table, jpeg_quality, measure, noise_sigma
from esrcli.imagefile import read_rgb8
from esrcli.imresize import bicubic_downscale_uint8, mod_crop
from esrcli.loading import load_reference
from esrcli.video import FFMPEG


def photo_lr(index: int = 0, reduction: int = 4) -> np.ndarray:
    """A training photo at an ordinary level of detail (Photos2K reduced x4: no trace of a JPEG grid), 240x180 px."""
    folder = need(TRAIN_DATA / "Photos2K", "training photos are needed")
    hr = read_rgb8(sorted(p for p in folder.iterdir() if p.suffix == ".png")[index])
    small = bicubic_downscale_uint8(mod_crop(hr, reduction), reduction)
    return np.ascontiguousarray(small[:180, :240])


def jpeg_bytes(pixels: np.ndarray, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def test_jpeg_quality_from_the_tables_is_exact_for_libjpeg_tables_and_monotone_for_others():
    pixels = photo_lr()
    qualities = list(range(30, 96, 5))
    estimates = [jpeg_quality(jpeg_bytes(pixels, q).quantization) for q in qualities]
    assert estimates == [float(q) for q in qualities]  # Pillow writes libjpeg's scaled standard tables
    for q in qualities:  # libjpeg's own formula, as any libjpeg-based encoder writes it
        assert jpeg_quality({0: ijg_table(IJG_LUMA, q).astype(int).tolist()}) == q
    # tables of another encoder (Pillow's presets: Photoshop-like) still order by quality
    presets = ["web_low", "web_medium", "web_high", "web_very_high", "web_maximum"]
    found = []
    for preset in presets:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=preset)
        buffer.seek(0)
        found.append(jpeg_quality(Image.open(buffer).quantization))
    assert found == sorted(found) and found[0] < found[-1], found
    assert jpeg_quality(None) is None


@pytest.mark.parametrize("sigma", [3, 5, 10, 15, 20])
def test_the_noise_estimate_is_within_a_quarter_of_the_true_sigma(sigma):
    for index in (0, 1, 2):
        clean = photo_lr(index)
        noisy = np.clip(np.floor(clean + np.random.default_rng(sigma).standard_normal(clean.shape) * sigma + 0.5), 0, 255).astype(np.uint8)
        estimate = noise_sigma(noisy)
        assert abs(estimate - sigma) <= 0.25 * sigma, (index, sigma, estimate)


def test_a_clean_png_gets_strength_zero_and_esr_tiny_bit_for_bit(tmp_path):
    clean = photo_lr()
    assert strength_for(measure(clean)) == 0.0
    Image.fromarray(clean).save(tmp_path / "clean.png")
    result = CliRunner().invoke(main, ["upscale", str(tmp_path / "clean.png"), "-o", str(tmp_path / "auto.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"][0]["denoise"] == 0.0
    plain = esrcli.load_model("esr-tiny", device="cpu", denoise=0).upscale(clean)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "auto.png")), plain)


def test_a_jpeg_file_gets_the_strength_of_its_quality_and_says_so(tmp_path):
    clean = photo_lr()
    Image.fromarray(clean).save(tmp_path / "q40.jpg", quality=40)
    Image.fromarray(np.asarray(Image.open(tmp_path / "q40.jpg"))).save(tmp_path / "q40.png")  # re-saved: no tables left
    result = CliRunner().invoke(
        main, ["upscale", str(tmp_path / "q40.jpg"), str(tmp_path / "q40.png"), "-o", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    jpg, png = json.loads(result.output)["outputs"]
    assert jpg["jpeg_quality"] == 40 and jpg["denoise"] == 1.0
    assert png["jpeg_quality"] is None and png["blockiness"] > 0.15 and png["denoise"] >= 0.9
    verbose = CliRunner().invoke(main, ["upscale", str(tmp_path / "q40.jpg"), "-o", str(tmp_path / "v.png"), "-v"])
    assert "denoise 1 (auto: JPEG quality 40" in verbose.output


def test_a_mixed_model_is_the_weighted_mean_of_the_two():
    base = load_reference("esr-tiny", native=4, progress=False).network.state_dict()
    partner = load_reference("esr-tiny-real", native=4, progress=False).network.state_dict()
    mixed = esrcli.load_model("esr-tiny", device="cpu", denoise=0.3)
    network = mixed.pipeline(tile=0).upscalers[4].network
    for key, value in network.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.7 * base[key] + 0.3 * partner[key], atol=1e-6), key
    assert mixed.pipeline(tile=0).strength == 0.3


def test_the_exported_mix_gives_the_cli_pixels(tmp_path):
    pixels = photo_lr()
    Image.fromarray(pixels).save(tmp_path / "in.png")
    out = tmp_path / "mix.safetensors"
    result = CliRunner().invoke(main, ["export", "esr-tiny", "--denoise", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for model, name in (("esr-tiny", "cli.png"), (str(out), "file.png")):
        extra = ["--denoise", "0.5"] if model == "esr-tiny" else []
        result = CliRunner().invoke(main, ["upscale", str(tmp_path / "in.png"), "-m", model, "-o", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), np.asarray(Image.open(tmp_path / "file.png")))
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "cli.png")), esrcli.load_model("esr-tiny", denoise=0).upscale(pixels))


def esr_run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esrcli", *args], capture_output=True, text=True, env=env)


def test_refusals_are_one_line(tmp_path):
    Image.fromarray(photo_lr()).save(tmp_path / "in.png")
    for args, words in (
        (["--denoise", "1.5"], "a number from 0 to 1, or auto"),
        (["--denoise", "x"], "a number from 0 to 1, or auto"),
        (["-m", "span-tiny", "--denoise", "0.5"], "robust partner"),
    ):
        result = esr_run("upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"), *args)
        assert result.returncode != 0 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    with pytest.raises(DenoiseError):
        esrcli.load_model("esr-tiny", denoise=-0.1)


def test_a_scale_the_partner_lacks_refuses_a_strength_and_runs_unmixed_under_auto(tmp_path):
    """A registry whose partner has x4 weights only (as esr-tiny-real had at first)."""
    from esrcli.registry import default_registry

    def block(name: str, scales: tuple[int, ...], extra: str = "") -> str:
        entry = default_registry().get(name)
        text = f'[{name}]\ntitle = "{name}"\narch = "span"\nargs = {{ norm = true }}\nlicence = "MIT"\n{extra}\n'
        for w in entry.weights:
            if w.scale in scales:
                text += (
                    f'[[{name}.weights]]\nscale = {w.scale}\nfile = "{w.filename}"\nsha256 = "{w.sha256}"\nsize = {w.size}\n'
                    f'sources = [{{ package = "weights/{w.filename}" }}]\n\n'
                )
        return text

    registry = tmp_path / "models.toml"
    registry.write_text(block("esr-tiny", (4, 2), 'robust = "esr-tiny-real"') + block("esr-tiny-real", (4,)))
    env = {**os.environ, "ESR_MODELS_TOML": str(registry)}
    Image.fromarray(photo_lr()).save(tmp_path / "in.jpg", quality=30)
    refused = esr_run("upscale", str(tmp_path / "in.jpg"), "-s", "2", "--denoise", "0.5", "-o", str(tmp_path / "o.png"), env=env)
    assert refused.returncode != 0 and "no x2 weights" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    auto = esr_run("upscale", str(tmp_path / "in.jpg"), "-s", "2", "-o", str(tmp_path / "x2.png"), "--json", env=env)
    assert auto.returncode == 0 and json.loads(auto.stdout)["outputs"][0]["denoise"] == 0.0, auto.stderr


def test_a_video_gets_one_strength_from_a_sample_of_its_frames(tmp_path):
    src, out = tmp_path / "noisy.mp4", tmp_path / "out.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=96x64:r=10",
            "-t",
            "1.2",
            "-vf",
            "noise=alls=40:allf=t",
            "-c:v",
            "libx264",
            "-crf",
            "10",
            "-pix_fmt",
            "yuv444p",
            str(src),
        ],
        check=True,
    )
    result = CliRunner().invoke(main, ["video", str(src), str(out), "--json", "--segment", "0.5"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert isinstance(summary["denoise"], float) and summary["denoise"] > 0, summary
    quiet = CliRunner().invoke(main, ["video", str(src), str(tmp_path / "fixed.mp4"), "--json", "--denoise", "0"])
    assert json.loads(quiet.output)["denoise"] == 0.0
    assert Path(out).stat().st_size > 0
