"""MATLAB-parity tests for esrcli.imresize.

The benchmark tests compare against LR files made by MATLAB itself; the
unit tests pin down properties (constants, linear ramps, batching) and an
independent loop-based port of MATLAB's algorithm that need no data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BENCHMARK, need
from PIL import Image

from esrcli.imresize import bicubic_downscale_uint8, imresize, mod_crop


def _bench_dir() -> Path:
    return need(BENCHMARK, "the benchmark sets are needed")


def _pairs(dataset: str, scale: int, limit: int | None = None) -> list[tuple[Path, Path]]:
    root = _bench_dir() / dataset
    hrs = sorted((root / "HR").glob("*.png"))
    if limit is not None:
        hrs = hrs[:limit]
    if not hrs:
        pytest.skip(f"no HR images in {root / 'HR'}")
    pairs = []
    for hr in hrs:
        lr = root / "LR_bicubic" / f"X{scale}" / f"{hr.stem}x{scale}{hr.suffix}"
        assert lr.is_file(), f"missing LR file {lr}"
        pairs.append((hr, lr))
    return pairs


def _compare(dataset: str, scale: int, limit: int | None = None) -> list[tuple[str, int, float]]:
    """Per image: (name, max abs diff, fraction of identical values)."""
    out = []
    for hr_path, lr_path in _pairs(dataset, scale, limit):
        hr = np.asarray(Image.open(hr_path))
        lr = np.asarray(Image.open(lr_path))
        got = bicubic_downscale_uint8(hr, scale)
        assert got.dtype == np.uint8
        assert got.shape == lr.shape, f"{hr_path.name}: {got.shape} != {lr.shape}"
        diff = np.abs(got.astype(np.int16) - lr.astype(np.int16))
        out.append((hr_path.name, int(diff.max()), float((diff == 0).mean())))
    return out


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
def test_matches_matlab_benchmark_lr(dataset: str, scale: int) -> None:
    results = _compare(dataset, scale)
    bad = [r for r in results if r[1] > 1 or r[2] < 0.999]
    assert not bad, f"{dataset} X{scale}: outside tolerance: {bad}"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_bsd100_subset(scale: int) -> None:
    results = _compare("BSD100", scale, limit=4)
    bad = [r for r in results if r[1] > 1 or r[2] < 0.999]
    assert not bad, f"BSD100 X{scale}: outside tolerance: {bad}"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_set5_bit_exact(scale: int) -> None:
    # Regression guard: the implementation is currently bit-exact with MATLAB.
    results = _compare("Set5", scale)
    assert all(r[1] == 0 for r in results), results


# --------------------------------------------------------------------------
# Independent reference: a literal loop port of MATLAB's imresize contributions.


def _ref_cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_resize_1d(v: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    n = len(v)
    width = 4.0 / scale if scale < 1 else 4.0
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        taps = [left + k for k in range(math.ceil(width) + 2)]
        if scale < 1:
            ws = [scale * _ref_cubic(scale * (u - j)) for j in taps]
        else:
            ws = [_ref_cubic(u - j) for j in taps]
        total = sum(ws)
        acc = 0.0
        for j, w in zip(taps, ws):
            # Mirror 1-based index j into 1..n (MATLAB 'symmetric' padding).
            m = (j - 1) % (2 * n)
            i = m if m < n else 2 * n - 1 - m
            acc += (w / total) * v[i]
        out[x - 1] = acc
    return out


def _ref_imresize(img: np.ndarray, scale: float, out_hw: tuple[int, int]) -> np.ndarray:
    tmp = np.stack([_ref_resize_1d(img[:, c], out_hw[0], scale) for c in range(img.shape[1])], 1)
    return np.stack([_ref_resize_1d(tmp[r], out_hw[1], scale) for r in range(tmp.shape[0])], 0)


@pytest.mark.parametrize(
    ("hw", "scale"),
    [((17, 13), 0.5), ((12, 18), 1 / 3), ((16, 9), 0.25), ((7, 5), 2.0), ((6, 8), 3.0), ((11, 10), 0.7), ((5, 6), 1.6)],
)
def test_matches_loop_reference(hw: tuple[int, int], scale: float) -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=hw)
    got = imresize(torch.from_numpy(img), scale)
    out_hw = (math.ceil(hw[0] * scale - 1e-9), math.ceil(hw[1] * scale - 1e-9))
    assert tuple(got.shape) == out_hw
    ref = _ref_imresize(img, scale, out_hw)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-9)


def test_matches_loop_reference_with_size() -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 1, size=(10, 14))
    got = imresize(torch.from_numpy(img), size=(5, 21))
    # Different per-axis scales: 0.5 on rows, 1.5 on columns.
    rows = np.stack([_ref_resize_1d(img[:, c], 5, 0.5) for c in range(14)], 1)
    ref = np.stack([_ref_resize_1d(rows[r], 21, 1.5) for r in range(5)], 0)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# Properties.


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.5, 0.8, 1.5, 2.0, 4.0])
def test_constant_stays_constant(scale: float) -> None:
    x = torch.full((3, 23, 31), 0.37, dtype=torch.float64)
    y = imresize(x, scale)
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("hw", "scale", "expected"),
    [
        ((64, 48), 0.5, (32, 24)),
        ((65, 49), 0.5, (33, 25)),
        ((255, 99), 1 / 3, (85, 33)),
        ((500, 500), 1 / 3, (167, 167)),
        ((10, 7), 2.0, (20, 14)),
        ((10, 7), 3.0, (30, 21)),
    ],
)
def test_output_sizes(hw: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    y = imresize(torch.zeros(2, *hw), scale)
    assert tuple(y.shape) == (2, *expected)


def test_size_argument() -> None:
    y = imresize(torch.rand(1, 3, 40, 30), size=(13, 77))
    assert tuple(y.shape) == (1, 3, 13, 77)


@pytest.mark.parametrize("scale", [2.0, 3.0, 4.0, 0.5, 1 / 3, 0.25])
def test_linear_ramp_interior_preserved(scale: float) -> None:
    # Cubic convolution reproduces linear functions; for upscaling and integer
    # downscaling the taps are symmetric around u so the antialiased kernel does too.
    h, w = 48, 60
    i = torch.arange(1, h + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, w + 1, dtype=torch.float64)[None, :]
    img = 0.7 * i - 1.3 * j + 5.0
    y = imresize(img, scale)
    oh, ow = y.shape
    ui = torch.arange(1, oh + 1, dtype=torch.float64)[:, None] / scale + 0.5 * (1 - 1 / scale)
    uj = torch.arange(1, ow + 1, dtype=torch.float64)[None, :] / scale + 0.5 * (1 - 1 / scale)
    expected = 0.7 * ui - 1.3 * uj + 5.0
    m = int(math.ceil(3 * max(scale, 1 / scale)))  # stay clear of mirrored borders
    torch.testing.assert_close(y[m:-m, m:-m], expected[m:-m, m:-m], rtol=0, atol=1e-10)
    # Sanity: the border really is different (mirroring bends the ramp).
    assert not torch.allclose(y[0], expected[0], atol=1e-6)


def test_upscale_ramp_is_smooth_and_monotone() -> None:
    x = torch.linspace(0, 1, 32, dtype=torch.float64).repeat(8, 1)  # ramp along W
    y = imresize(x, 2.0)
    steps = torch.diff(y[4], dim=-1)
    assert bool((steps > 0).all())
    interior = steps[6:-6]
    torch.testing.assert_close(interior, torch.full_like(interior, interior.mean().item()), rtol=0, atol=1e-12)


def test_batched_equals_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 37, 29, generator=g, dtype=torch.float64)
    for scale in (0.5, 1 / 3, 2.0):
        batched = imresize(x, scale)
        single = torch.stack([torch.stack([imresize(x[b, c], scale) for c in range(2)]) for b in range(3)])
        torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_float32_and_float64_agree() -> None:
    g = torch.Generator().manual_seed(1)
    x64 = torch.rand(3, 41, 35, generator=g, dtype=torch.float64)
    for scale in (0.25, 0.5, 3.0):
        y32 = imresize(x64.float(), scale)
        y64 = imresize(x64, scale)
        assert y32.dtype == torch.float32 and y64.dtype == torch.float64
        torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5)


def test_no_clamping_overshoot_kept() -> None:
    x = torch.zeros(16, 16, dtype=torch.float64)
    x[:, 8:] = 1.0
    y = imresize(x, 2.0)
    assert y.max() > 1.0 and y.min() < 0.0  # bicubic ringing must not be clipped


def test_rejects_integer_tensor_and_missing_args() -> None:
    with pytest.raises(TypeError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError):
        imresize(torch.zeros(4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu() -> None:
    x = torch.rand(2, 3, 40, 36, dtype=torch.float64)
    torch.testing.assert_close(imresize(x.cuda(), 0.5).cpu(), imresize(x, 0.5), rtol=0, atol=1e-10)


# --------------------------------------------------------------------------
# uint8 path and mod_crop.


def test_mod_crop_numpy_and_tensor() -> None:
    a = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    c = mod_crop(a, 3)
    assert c.shape == (6, 9, 3)
    np.testing.assert_array_equal(c, a[:6, :9])
    t = torch.arange(2 * 7 * 10).reshape(2, 7, 10)
    assert tuple(mod_crop(t, 4).shape) == (2, 4, 8)
    assert mod_crop(np.zeros((8, 8)), 4).shape == (8, 8)


def test_bicubic_downscale_uint8_shapes_and_rounding() -> None:
    rng = np.random.default_rng(2)
    hr = rng.integers(0, 256, size=(37, 50, 3), dtype=np.uint8)
    lr = bicubic_downscale_uint8(hr, 4)
    assert lr.dtype == np.uint8 and lr.shape == (9, 12, 3)
    grey = bicubic_downscale_uint8(hr[..., 0], 3)
    assert grey.shape == (12, 16)
    flat = np.full((12, 12), 200, dtype=np.uint8)
    np.testing.assert_array_equal(bicubic_downscale_uint8(flat, 2), np.full((6, 6), 200, np.uint8))
    # A hard 0/255 edge overshoots in float; the result must saturate, not wrap.
    edge = np.zeros((16, 16), dtype=np.uint8)
    edge[:, 8:] = 255
    out = bicubic_downscale_uint8(edge, 2)
    assert out.min() == 0 and out.max() == 255


def test_bicubic_downscale_uint8_close_to_float_imresize() -> None:
    rng = np.random.default_rng(3)
    base = rng.uniform(60, 190, size=(4, 5, 3))
    hr = np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 3, (32, 40, 3)), 0, 255).astype(np.uint8)
    lr = bicubic_downscale_uint8(hr, 2).astype(np.float64)
    ref = imresize(torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1), 0.5).permute(1, 2, 0).numpy()
    # Only the rounding of the intermediate pass separates the two (<= 1 level away from clipping).
    assert np.abs(lr - ref).max() <= 1.0
