"""Tiled inference: seamless, bounded, and robust to out-of-memory and half-precision overflow."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import TRAIN_DATA, WEIGHTS, need
from PIL import Image
from torch import nn

from esrcli.loading import place
from esrcli.tiling import CPU_SPEED_PIXELS, TilePlan, Upscaler, auto_plan, default_overlap, even_spans, ramp, receptive_radius, spans
from esrcli.weights import load_network


def photo(width: int = 1000, height: int = 640) -> np.ndarray:
    folder = need(TRAIN_DATA / "Photos2K", "a real photo is needed for the seam test")
    image = Image.open(sorted(folder.iterdir())[0]).convert("RGB")
    assert image.width >= width and image.height >= height
    return np.asarray(image)[:height, :width].copy()


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def run(upscaler: Upscaler, pixels: np.ndarray, dtype=None) -> np.ndarray:
    h, w, c = pixels.shape
    out = np.empty((h * upscaler.scale, w * upscaler.scale, c), dtype or pixels.dtype)
    return upscaler.upscale(pixels, out)


def binary_blocks(width: int, height: int, block: int, seed: int = 0) -> np.ndarray:
    """Random black-and-white blocks: the hardest case for tiling (every edge at full contrast)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (height // block + 1, width // block + 1, 3)).astype(np.uint8) * 255
    return np.ascontiguousarray(np.kron(cells, np.ones((block, block, 1), np.uint8))[:height, :width])


@pytest.mark.parametrize("weights", ["span_tiny_ch26_x4_ntire24_team39.pth", "espan_x4_ntire25_team36.pth"])
def test_tiled_output_equals_the_whole_image_output(weights):
    """With the default overlap (the receptive radius) every output pixel comes from a tile that saw
    all its context: only float rounding differs, on a photo and on full-contrast blocks alike."""
    network = place(load_network(need(WEIGHTS / weights, "released weights")), "cpu", torch.float32)
    overlap = default_overlap(network)
    for image, tile in ((photo(), 192), (binary_blocks(300, 200, 5), 64)):
        whole = run(Upscaler(network, 4, TilePlan(0, overlap, 1)), image)
        tiled = run(Upscaler(network, 4, TilePlan(tile, overlap, 3)), image)
        diff = np.abs(whole.astype(int) - tiled.astype(int))
        assert diff.max() <= 1, f"max |diff| {diff.max()}/255"
        assert (diff > 0).mean() < 1e-3


@pytest.mark.parametrize("extra", [0, 11])
def test_exact_tiles_are_placed_not_blended(extra):
    """Where the overlap covers the network's reach, each core is exact and is placed as it is: equal to the
    whole image up to float rounding, with a wider overlap too, and with two tiles whose context boxes are the
    same (a 40 px row cut at 20: both see all of it)."""
    network = small_span()
    overlap = receptive_radius(network) + extra
    for image, tile in ((binary_blocks(300, 200, 5), 64), (photo(40, 28), 32)):
        whole = run(Upscaler(network, 4, TilePlan(0, overlap, 1)), image)
        upscaler = Upscaler(network, 4, TilePlan(tile, overlap, 2))
        assert upscaler.count_tiles(*image.shape[:2]) > 1
        assert np.abs(whole.astype(int) - run(upscaler, image).astype(int)).max() <= 1


def test_a_blended_overlap_band_lets_padding_through():
    """Why tile edges get no weight: blending over the whole overlap (as for networks of unknown
    reach) mixes in outputs that saw the tile's zero padding, which full-contrast blocks expose."""
    network = small_span()
    image = binary_blocks(300, 200, 5)
    whole = run(Upscaler(network, 4, TilePlan(0, 21, 1)), image)
    upscaler = Upscaler(network, 4, TilePlan(64, 21, 1))
    upscaler.context = 0  # as if the network's reach were unknown
    assert np.abs(whole.astype(int) - run(upscaler, image).astype(int)).max() > 10


def test_without_overlap_seams_show():
    """The seam test above can fail: with no context the tile borders differ visibly."""
    network = place(load_network(need(WEIGHTS / "span_tiny_ch26_x4_ntire24_team39.pth", "released weights")), "cpu", torch.float32)
    image = photo(400, 300)
    whole = run(Upscaler(network, 4, TilePlan(0, 0, 1)), image)
    tiled = run(Upscaler(network, 4, TilePlan(100, 0, 1)), image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() > 2


def test_spans_cover_exactly_and_ramps_sum_to_one():
    for length, tile in [(1000, 192), (17, 5), (64, 64), (10, 0), (7, 100)]:
        s = spans(length, tile)
        assert s[0][0] == 0 and s[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(s, s[1:]))
        assert len({b - a for a, b in s[:-1]}) <= 1  # equal cores batch together
    r = ramp(40, 16, False, False)
    # Two neighbours overlapping by the ramp length add up to exactly one.
    assert np.allclose(r[-16:] + r[:16], 1.0, atol=1e-6)
    assert ramp(10, 4, True, True).min() == 1.0  # 1 at the image border
    # Dead edges: two neighbours sharing 2 * overlap pixels, `dead` of them unweighted at each edge.
    overlap, dead = 6, 4
    left, right = ramp(30, 2 * (overlap - dead), True, False, dead), ramp(30, 2 * (overlap - dead), False, True, dead)
    shared = left[-2 * overlap :] + right[: 2 * overlap]
    assert np.allclose(shared, 1.0, atol=1e-6) and (left[-dead:] == 0).all() and (right[:dead] == 0).all()
    step_left, step_right = ramp(30, 0, True, False, overlap), ramp(30, 0, False, True, overlap)
    assert np.array_equal(step_left[-2 * overlap :] + step_right[: 2 * overlap], np.ones(2 * overlap))  # a clean cut


class FailsOnce(nn.Module):
    """A network that raises the real out-of-memory type the first time it sees a big enough input."""

    def __init__(self, inner: nn.Module, min_pixels: int) -> None:
        super().__init__()
        self.inner, self.min_pixels, self.failed = inner, min_pixels, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] * x.shape[-1] * x.shape[-2] >= self.min_pixels and self.failed == 0:
            self.failed += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return self.inner(x)


def small_span() -> nn.Module:
    """SPAN-tiny's real weights (x4): random networks are chaotic and exaggerate tile differences."""
    return load_network(need(WEIGHTS / "span_tiny_ch26_x4_ntire24_team39.pth", "released weights"))


def test_out_of_memory_halves_the_tile_and_matches():
    image = photo(120, 90)
    reference = run(Upscaler(small_span(), 4, TilePlan(64, 21, 1)), image)
    flaky = FailsOnce(small_span(), min_pixels=50 * 50)
    upscaler = Upscaler(flaky, 4, TilePlan(64, 21, 1))
    out = run(upscaler, image)
    assert flaky.failed == 1 and upscaler.retries["oom"] == 1
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_out_of_memory_on_a_batch_splits_the_batch():
    image = photo(200, 60)
    reference = run(Upscaler(small_span(), 4, TilePlan(50, 21, 1)), image)
    flaky = FailsOnce(small_span(), min_pixels=2 * 60 * 60)  # only a batch of two or more is too big
    upscaler = Upscaler(flaky, 4, TilePlan(50, 21, 4))
    out = run(upscaler, image)
    assert flaky.failed == 1
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


class OverflowsInHalf(nn.Module):
    """Returns inf in reduced precision, like an fp16 activation overflow."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        return y if x.dtype == torch.float32 else y * float("inf")


def test_non_finite_half_precision_tiles_are_recomputed_in_fp32():
    image = photo(50, 40)
    reference = run(Upscaler(small_span(), 4, TilePlan(0, 21, 1)), image)
    upscaler = Upscaler(OverflowsInHalf(small_span()).to(torch.bfloat16), 4, TilePlan(24, 21, 1))
    out = run(upscaler, image)
    assert upscaler.retries["fp32"] >= 1
    assert np.abs(out.astype(int) - reference.astype(int)).max() <= 1


def test_sixteen_bit_never_passes_through_eight_bits():
    net = small_span()
    rng = np.random.default_rng(3)
    image = (np.asarray(Image.fromarray(photo(40, 30)).convert("RGB")).astype(np.uint16) * 257 + rng.integers(0, 257, (30, 40, 3))).astype(
        np.uint16
    )
    out = run(Upscaler(net, 4, TilePlan(0, 21, 1)), image)
    with torch.no_grad():
        exact = net(torch.from_numpy(image.astype(np.float32) / 65535).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert out.dtype == np.uint16
    err = np.abs(out.astype(np.float64) / 65535 - exact)
    assert err.max() < 4 / 65535  # far below one 8-bit level (257/65535)
    assert len(np.unique(out % 257)) > 200  # values between 8-bit levels are used


def test_grey_runs_replicated_and_averaged():
    net = small_span()
    grey = photo(24, 20)[..., :1].copy()
    out = run(Upscaler(net, 4, TilePlan(0, 21, 1)), grey)
    rgb = run(Upscaler(net, 4, TilePlan(0, 21, 1)), np.repeat(grey, 3, axis=2))
    assert out.shape == (80, 96, 1)
    assert np.abs(out[..., 0].astype(int) - np.rint(rgb.mean(axis=2)).astype(int)).max() <= 1


def test_auto_plan_is_sane_on_this_machine():
    net = small_span()
    plan = auto_plan(net, 4, torch.device("cpu"), torch.float32)
    assert plan.batch == 1 and plan.overlap == default_overlap(net) and 0 < plan.whole <= CPU_SPEED_PIXELS
    assert (math.isqrt(plan.whole) - plan.tile) == 2 * plan.overlap  # a tile with its overlap fills the budget
    up = Upscaler(net, 4, plan)
    assert up.count_tiles(270, 480) == 1  # a small video frame runs whole (tiling it cost 14%: issue 21)


def tile_pixels(plan: TilePlan, height: int, width: int) -> list[int]:
    rows, cols = plan.grid(height, width)
    ov = plan.overlap
    return [(min(height, y1 + ov) - max(0, y0 - ov)) * (min(width, x1 + ov) - max(0, x0 - ov)) for y0, y1 in rows for x0, x1 in cols]


@pytest.mark.parametrize("size", [(270, 480), (540, 960), (1080, 1920), (3000, 4000), (100, 5000), (2000, 40)])
def test_the_planner_takes_the_least_work_grid_within_the_budget(size):
    height, width = size
    plan = TilePlan(400, 21, 1, whole=512 * 512)
    pixels = tile_pixels(plan, height, width)
    assert max(pixels) <= plan.whole or len(pixels) == 1
    if height * width <= plan.whole:
        assert pixels == [height * width]
    best = min(  # every grid of near-equal tiles that fits, by brute force
        sum(tile_pixels(TilePlan(0, 21, 1), 1, 1)) * 0
        + sum(
            (min(height, y1 + 21) - max(0, y0 - 21)) * (min(width, x1 + 21) - max(0, x0 - 21))
            for y0, y1 in even_spans(height, r)
            for x0, x1 in even_spans(width, c)
        )
        for r in range(1, height // 32 + 1)
        for c in range(1, width // 32 + 1)
        if all(
            (min(height, y1 + 21) - max(0, y0 - 21)) * (min(width, x1 + 21) - max(0, x0 - 21)) <= plan.whole
            for y0, y1 in even_spans(height, r)
            for x0, x1 in even_spans(width, c)
        )
    )
    assert sum(pixels) <= best * 1.02  # the planner counts both overlaps per tile: within 2% of the true least


def test_an_explicit_tile_cuts_cores_of_that_size_and_batches_within_the_budget():
    assert TilePlan(100, 8, 4).grid(250, 300) == (spans(250, 100), spans(300, 100))
    assert TilePlan(100, 8, 64, whole=10_000).per_call(2_500) == 4 and TilePlan(100, 8, 3).per_call(2_500) == 3


def host_reference(network: nn.Module, pixels: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The blending maths in numpy on the host (float32 tiles read, blended and rounded there), as esr did
    before pixels stayed integers on the device: the device path must give the same bits in fp32."""
    h, w, c = pixels.shape
    s, ov = 4, plan.overlap
    context = receptive_radius(network)
    dead = context if 0 < context <= ov else 0
    fade = 2 * (ov - dead) * s
    acc = np.zeros((h * s, w * s, c), np.float32)
    wsum = np.zeros((h * s, w * s, 1), np.float32)
    rows, cols = plan.grid(h, w)
    for y0, y1 in rows:
        ey0, ey1 = max(0, y0 - ov), min(h, y1 + ov)
        wy = ramp((ey1 - ey0) * s, fade, ey0 == 0, ey1 == h, dead * s)[:, None, None]
        for x0, x1 in cols:
            ex0, ex1 = max(0, x0 - ov), min(w, x1 + ov)
            x = torch.from_numpy((pixels[ey0:ey1, ex0:ex1].astype(np.float32) / 255)[None]).permute(0, 3, 1, 2)
            with torch.inference_mode():
                y = network(x.contiguous(memory_format=torch.channels_last)).float().clamp(0, 1).permute(0, 2, 3, 1).numpy()[0]
            weight = wy * ramp((ex1 - ex0) * s, fade, ex0 == 0, ex1 == w, dead * s)[None, :, None]
            acc[ey0 * s : ey1 * s, ex0 * s : ex1 * s] += y * weight
            wsum[ey0 * s : ey1 * s, ex0 * s : ex1 * s] += weight
    acc /= np.maximum(wsum, 1e-12)
    return np.rint(acc * 255).astype(np.uint8)


@pytest.mark.parametrize("plan", [TilePlan(48, 21, 2), TilePlan(400, 21, 1, whole=90 * 70), TilePlan(0, 21, 1)])
def test_integers_on_the_device_give_the_host_float_path_bit_for_bit(plan):
    net = small_span()
    image = photo(130, 100)
    assert np.array_equal(run(Upscaler(net, 4, plan), image), host_reference(net, image, plan))


class OverflowsOnBright(nn.Module):
    """In reduced precision, inf for every sample that holds a bright pixel: an overflow in some tiles only."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if x.dtype == torch.float32:
            return y
        bright = (x.flatten(1).amax(dim=1) > 0.99)[:, None, None, None]
        return torch.where(bright, float("inf"), y)


def test_only_the_tiles_that_overflow_are_redone_with_true_fp32_weights():
    fp32 = small_span()
    half = OverflowsOnBright(copy.deepcopy(fp32).to(torch.bfloat16))
    image = (photo(96, 48).astype(np.float32) * 0.5).astype(np.uint8)  # nothing bright...
    image[:, 72:] = 255  # ...but the right quarter
    plan = TilePlan(48, 21, 2)
    upscaler = Upscaler(half, 4, plan, fp32=OverflowsOnBright(fp32))
    out = run(upscaler, image)
    assert upscaler.retries["fp32"] == 1  # of two tiles, one saw the bright band
    reference = run(Upscaler(fp32, 4, plan), image)
    right, left = np.s_[:, (48 + 21) * 4 :], np.s_[:, : (48 - 21) * 4]
    assert np.array_equal(out[right], reference[right])  # redone by the fp32 weights as loaded, from fp32 input
    assert not np.array_equal(out[left], reference[left])  # the rest stayed in bf16
    widened = Upscaler(half, 4, plan)  # without fp32 weights: bf16 weights widened, not the same network
    assert not np.array_equal(run(widened, image)[right], reference[right])


def test_a_half_precision_model_keeps_fp32_weights_from_the_file():
    import esrcli

    model = esrcli.load_model("esr-tiny", device="cpu", precision="bf16")
    upscaler = model.pipeline(tile=0).upscalers[4]
    exact = esrcli.load_model("esr-tiny", device="cpu").network
    assert upscaler.dtype == torch.bfloat16 and upscaler._fp32 is not None
    for a, b in zip(upscaler._fp32.parameters(), exact.parameters()):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_whole_frames_batched_equal_frames_one_by_one():
    net = small_span()
    frames = [photo(48, 32), photo(48, 32)[::-1].copy(), photo(48, 32)[:, ::-1].copy()]
    batched = [f.array() for f in Upscaler(net, 4, TilePlan(0, 21, 3)).upscale_frames(frames, np.dtype(np.uint8))]
    single = [run(Upscaler(net, 4, TilePlan(0, 21, 1)), f) for f in frames]
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(batched, single))


# --- CUDA (../shared/gpu/check.sh runs this file on a GPU machine; here they skip) --------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def embedded_network(device: str) -> nn.Module:
    """esr-tiny's embedded weights: real (not chaotic) and present on any machine, ../shared or not."""
    import esrcli

    return esrcli.load_model("esr-tiny", device=device, precision="fp32").network


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 7.0), np.cos(y / 5.0), np.sin((x + y) / 11.0)], -1) * 100 + 128
    return np.clip(base + np.random.default_rng(seed).normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@cuda
def test_cuda_frames_arrive_on_the_host_from_another_thread_as_the_cpu_makes_them():
    """Frames come back through a copy stream of their own, resolved in another thread (as the video writer
    does) while later batches are already queued: each equals the CPU's fp32 frame within two levels."""
    from concurrent.futures import ThreadPoolExecutor

    frames = [textured(160, 96, seed) for seed in range(6)]
    cpu = Upscaler(embedded_network("cpu"), 4, TilePlan(0, 21, 1))
    expected = [run(cpu, f) for f in frames]
    gpu = Upscaler(embedded_network("cuda"), 4, TilePlan(0, 21, 3))
    pending = gpu.upscale_frames(frames[:3], np.dtype(np.uint8)) + gpu.upscale_frames(frames[3:], np.dtype(np.uint8))
    with ThreadPoolExecutor(1) as writer:
        arrived = writer.submit(lambda: [p.array() for p in pending]).result()
    for got, want in zip(arrived, expected):
        assert got.dtype == np.uint8 and np.abs(got.astype(int) - want.astype(int)).max() <= 2  # cuDNN may use TF32


@cuda
@pytest.mark.parametrize("extra", [0, 8])
def test_cuda_placed_and_blended_tiles_equal_the_cpu(extra):
    image = textured(300, 200)
    network = embedded_network("cpu")
    overlap = receptive_radius(network) + extra
    expected = run(Upscaler(network, 4, TilePlan(0, overlap, 1)), image)
    gpu = Upscaler(embedded_network("cuda"), 4, TilePlan(64, overlap, 4))
    assert np.abs(run(gpu, image).astype(int) - expected.astype(int)).max() <= 2  # cuDNN may use TF32
    gpu.context = 0  # blended, as for a network of unknown reach: still within a level away from tile edges
    assert np.abs(run(gpu, image).astype(int) - expected.astype(int)).mean() < 0.5
