"""Tests for esrcli.metrics: analytic PSNR values and SSIM against a loop reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from esrcli.imagefile import read_rgb8
from esrcli.metrics import psnr, rgb_to_y, ssim, to_uint8


def _rand_img(h: int = 48, w: int = 56, seed: int = 0, lo: int = 0, hi: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=(h, w, 3), dtype=np.uint8)


def _smooth_img(h: int, w: int, seed: int) -> np.ndarray:
    """Structured image (not white noise) so SSIM values are in a realistic range."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 128 + 60 * np.sin(xx / 5.0 + rng.uniform(0, 6)) * np.cos(yy / 7.0)
    img = base[..., None] + rng.normal(0, 8, size=(h, w, 3)) + np.array([0, 20, -20])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- Y


def test_rgb_to_y_white_black_and_primaries() -> None:
    px = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb_to_y(px)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], rtol=0, atol=1e-12)


def test_rgb_to_y_not_rounded() -> None:
    y = rgb_to_y(np.array([[[10, 20, 30]]], dtype=np.uint8))
    expected = 16 + (65.481 * 10 + 128.553 * 20 + 24.966 * 30) / 255
    assert y[0, 0] == pytest.approx(expected, abs=1e-12)
    assert y[0, 0] != round(y[0, 0])


# --------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("channel", ["y", "rgb"])
def test_psnr_identical_is_inf(channel: str) -> None:
    img = _rand_img()
    assert psnr(img, img.copy(), crop=4, channel=channel) == float("inf")


def test_psnr_constant_offset_rgb() -> None:
    hr = _rand_img(hi=255)
    sr = hr + 1
    assert psnr(sr, hr, crop=0, channel="rgb") == pytest.approx(20 * math.log10(255.0), abs=1e-9)
    hr2 = _rand_img(hi=253)
    assert psnr(hr2 + 3, hr2, 2, "rgb") == pytest.approx(20 * math.log10(255.0 / 3), abs=1e-9)


def test_psnr_constant_offset_y() -> None:
    hr = _rand_img(hi=255)
    sr = hr + 1
    dy = (65.481 + 128.553 + 24.966) / 255  # = 219/255
    assert psnr(sr, hr, crop=0) == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)


def test_psnr_single_channel_offset_rgb_mse() -> None:
    hr = _rand_img(hi=250)
    sr = hr.copy()
    sr[..., 1] += 4  # MSE over all three channels: 16 / 3
    assert psnr(sr, hr, 0, "rgb") == pytest.approx(10 * math.log10(255.0**2 / (16 / 3)), abs=1e-9)


def test_psnr_crop_ignores_border() -> None:
    hr = _smooth_img(48, 56, seed=0)
    sr = hr.copy()
    sr[:3] = 255 - sr[:3]
    sr[:, -3:] = 0
    sr[-1] = 7
    sr[:, 0] = 9
    assert math.isfinite(psnr(sr, hr, crop=2))
    assert psnr(sr, hr, crop=3) == float("inf")
    assert ssim(sr, hr, crop=3) == pytest.approx(1.0, abs=1e-12)
    assert ssim(sr, hr, crop=0) < 0.97  # border windows do see the damage


def test_psnr_grey_is_expanded() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    b = np.clip(a.astype(np.int16) + rng.integers(-5, 6, a.shape), 0, 255).astype(np.uint8)
    a3, b3 = np.repeat(a[..., None], 3, 2), np.repeat(b[..., None], 3, 2)
    for ch in ("y", "rgb"):
        assert psnr(a, b, 2, ch) == pytest.approx(psnr(a3, b3, 2, ch), abs=1e-12)
        assert ssim(a, b, 2, ch) == pytest.approx(ssim(a3, b3, 2, ch), abs=1e-12)
    # Y of grey g is 16 + 219/255 g, so the error shrinks by 219/255 against raw grey.
    mse = np.mean((a[2:-2, 2:-2].astype(float) - b[2:-2, 2:-2]) ** 2)
    expected = 10 * math.log10(255.0**2 / (mse * (219 / 255) ** 2))
    assert psnr(a, b, 2) == pytest.approx(expected, abs=1e-9)


def test_psnr_validation() -> None:
    img = _rand_img()
    with pytest.raises(ValueError):
        psnr(img, img[:-1], 0)
    with pytest.raises(ValueError):
        psnr(img, img, 0, channel="ycbcr")
    with pytest.raises(ValueError):
        psnr(img, img, 100)


# --------------------------------------------------------------------------- SSIM


def _ref_gaussian_window() -> np.ndarray:
    # MATLAB fspecial('gaussian', 11, 1.5), built directly in 2-D.
    win = np.zeros((11, 11))
    for i in range(11):
        for j in range(11):
            win[i, j] = math.exp(-((i - 5) ** 2 + (j - 5) ** 2) / (2 * 1.5**2))
    return win / win.sum()


def _ref_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Straight loop over every full 11x11 window, Wang et al. formula."""
    win = _ref_gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = a.shape
    vals = []
    for i in range(h - 10):
        for j in range(w - 10):
            pa = a[i : i + 11, j : j + 11]
            pb = b[i : i + 11, j : j + 11]
            mu_a = np.sum(win * pa)
            mu_b = np.sum(win * pb)
            var_a = np.sum(win * pa * pa) - mu_a**2
            var_b = np.sum(win * pb * pb) - mu_b**2
            cov = np.sum(win * pa * pb) - mu_a * mu_b
            vals.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(vals))


@pytest.mark.parametrize("crop", [0, 3])
def test_ssim_matches_loop_reference(crop: int) -> None:
    hr = _smooth_img(40, 44, seed=1)
    rng = np.random.default_rng(2)
    sr = np.clip(hr.astype(np.float64) + rng.normal(0, 12, hr.shape), 0, 255).astype(np.uint8)
    sl = (slice(crop, hr.shape[0] - crop), slice(crop, hr.shape[1] - crop))

    ref_y = _ref_ssim_channel(rgb_to_y(sr)[sl], rgb_to_y(hr)[sl])
    assert ssim(sr, hr, crop) == pytest.approx(ref_y, abs=1e-10)

    ref_rgb = np.mean([_ref_ssim_channel(sr[sl][..., c].astype(float), hr[sl][..., c].astype(float)) for c in range(3)])
    assert ssim(sr, hr, crop, "rgb") == pytest.approx(ref_rgb, abs=1e-10)
    assert 0.2 < ref_y < 0.99  # the test image is neither trivial nor pure noise


def test_ssim_identical_is_one() -> None:
    img = _smooth_img(64, 64, seed=3)
    assert ssim(img, img.copy(), 4) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img, img.copy(), 4, "rgb") == pytest.approx(1.0, abs=1e-12)


def test_ssim_decreases_with_noise() -> None:
    hr = _smooth_img(80, 90, seed=4)
    rng = np.random.default_rng(5)
    scores = []
    for sigma in (2, 5, 10, 20, 40):
        sr = np.clip(hr.astype(np.float64) + rng.normal(0, sigma, hr.shape), 0, 255).astype(np.uint8)
        scores.append(ssim(sr, hr, 2))
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1.0


def test_ssim_symmetric_and_too_small() -> None:
    a = _smooth_img(30, 30, seed=6)
    b = _smooth_img(30, 30, seed=7)
    assert ssim(a, b, 0) == pytest.approx(ssim(b, a, 0), abs=1e-12)
    with pytest.raises(ValueError):
        ssim(a, b, 10)  # 10x10 left: smaller than the 11x11 window


def test_ssim_fast_enough_for_500px() -> None:
    import time

    a = _rand_img(500, 500, seed=8)
    b = _rand_img(500, 500, seed=9)
    t0 = time.perf_counter()
    ssim(a, b, 4, "rgb")
    assert time.perf_counter() - t0 < 2.0


# --------------------------------------------------------------------------- conversions


def test_to_uint8_rounds_clamps_and_layout() -> None:
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    x = levels.view(1, 1, 256).expand(3, 2, 256).clone()
    x[0, 0, 0] = -0.3
    x[1, 0, 0] = 1.7
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (2, 256, 3)
    np.testing.assert_array_equal(out[1, :, 2], np.arange(256))
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 255
    batched = to_uint8(x.unsqueeze(0).double())
    np.testing.assert_array_equal(batched, out)
    # Channel order preserved: a red image stays red.
    red = torch.zeros(3, 2, 2)
    red[0] = 1.0
    assert to_uint8(red)[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(2, 3, 4, 4))


def test_to_uint8_rounding_nearest() -> None:
    x = torch.full((3, 1, 3), 0.0)
    x[:, 0, 0] = 10.4 / 255
    x[:, 0, 1] = 10.6 / 255
    x[:, 0, 2] = 254.7 / 255
    assert to_uint8(x)[0, :, 0].tolist() == [10, 11, 255]


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "RGB", "I;16", "CMYK"])
def test_read_rgb8_modes(tmp_path: Path, mode: str) -> None:
    rgb = _rand_img(12, 9, seed=10)
    grey = rgb[..., 0]
    path = tmp_path / ("img.jpg" if mode == "CMYK" else "img.png")
    if mode == "L":
        Image.fromarray(grey).save(path)
        expect = np.repeat(grey[..., None], 3, 2)
    elif mode == "LA":
        Image.fromarray(np.stack([grey, grey], -1), "LA").save(path)
        expect = np.repeat(grey[..., None], 3, 2)
    elif mode == "P":
        Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
        expect = np.asarray(Image.open(path).convert("RGB"))
    elif mode == "RGBA":
        Image.fromarray(np.dstack([rgb, np.full(grey.shape, 128, np.uint8)]), "RGBA").save(path)
        expect = rgb
    elif mode == "RGB":
        Image.fromarray(rgb).save(path)
        expect = rgb
    elif mode == "I;16":
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)
        expect = np.repeat(grey[..., None], 3, 2)
    else:
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
        expect = None
    out = read_rgb8(path)
    assert out.dtype == np.uint8 and out.shape == (12, 9, 3)
    if expect is not None:
        np.testing.assert_array_equal(out, expect)
