"""Synthetic real-world degradations: random ones for training, fixed ones for benchmarks.

Training (`Degrader`): the high-order model of Real-ESRGAN (Wang et al., ICCVW 2021). On an HR crop:
blur (isotropic or anisotropic Gaussian, generalised Gaussian or plateau kernels, or a sinc
filter that rings), a random resize (up, down or keep; area, bilinear or bicubic), Gaussian or
Poisson noise (colour or grey), a real JPEG round trip (Pillow, in memory); optionally that chain
once more (second order); then the resize to HR/scale with an optional final sinc, before or
after a last JPEG. Each step has its own probability and range (`DegradationConfig`, presets in
PRESETS). Every random choice comes from the generator it is given, so a sample stays a pure
function of the seed that made the generator.

Benchmarks (`parse_spec`, `degrade_benchmark`): a fixed chain written as text, e.g.
`blur:1.2+noise:5+jpeg:60`. `blur:S` is a Gaussian of sigma S HR pixels applied to HR before
the MATLAB-bicubic reduction; `noise:S` adds Gaussian noise of sigma S (0..255 scale, each
channel) to the LR; `jpeg:Q` stores the LR as a JPEG of quality Q (4:2:0) and decodes it.
Noise comes from a generator seeded by the spec and the image's name, and every step is
computed in float64 and rounded to 8 bits, so the LR images are identical run after run.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .degrade_config import PRESETS, DegradationConfig
from .errors import DegradationError as DegradationError
from .imresize import bicubic_downscale_uint8, imresize

# --- kernels ---------------------------------------------------------------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(r, r, indexing="xy")


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """d^T Sigma^-1 d over the kernel grid, for a Gaussian with these axes rotated by theta."""
    x, y = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> np.ndarray:
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = np.exp(-0.5 * q)
    return k / k.sum()


def generalized_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """exp(-(d^T S^-1 d)^beta / 2): flatter (beta > 1) or peakier (beta < 1) than a Gaussian."""
    k = np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """1 / (1 + (d^T S^-1 d)^beta): a flat top with heavy tails."""
    k = 1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta) ** beta)
    return k / k.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """An ideal circular low-pass of `cutoff` (radians per pixel, up to pi), cut to size x size: it rings."""
    n = 64
    f = np.fft.fftfreq(n) * 2 * math.pi
    fx, fy = np.meshgrid(f, f, indexing="xy")
    response = (np.hypot(fx, fy) <= cutoff).astype(np.float64)
    spatial = np.fft.fftshift(np.real(np.fft.ifft2(response)))
    c, r = n // 2, size // 2
    k = spatial[c - r : c + r + 1, c - r : c + r + 1]
    return k / k.sum()


def filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Convolve (C, H, W) with one odd-sized kernel, reflecting at the borders. Through the FFT:
    a 21 x 21 kernel costs a fifth of a direct convolution's time."""
    r = kernel.shape[0] // 2
    padded = F.pad(x[None], (r, r, r, r), mode="reflect" if r < min(x.shape[-2:]) else "replicate")[0]
    size = tuple(padded.shape[-2:])
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(torch.from_numpy(kernel).to(x.dtype), s=size)
    return torch.fft.irfft2(spectrum, s=size)[..., 2 * r :, 2 * r :].contiguous()


# --- the training pipeline ----------------------------------------------------------------


def _range(v: Any) -> tuple[float, float]:
    return float(v[0]), float(v[1])


__all__ = ["PRESETS", "DegradationConfig", "Degrader", "DegradationError", "degrade_benchmark", "parse_spec"]


def _choose(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    low, high = _range(bounds)
    return float(rng.uniform(low, high))


def random_kernel(rng: np.random.Generator, v: Mapping[str, Any], sigma: Sequence[float]) -> np.ndarray:
    low, high = (int(k) for k in v["kernel_size"])
    size = int(rng.choice(np.arange(low | 1, high + 1, 2)))
    kind = _choose(rng, v["kernels"])
    if kind == "sinc":
        return sinc_kernel(size, float(rng.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi)))
    sx = _uniform(rng, sigma)
    sy, theta = (_uniform(rng, sigma), float(rng.uniform(-math.pi, math.pi))) if kind.endswith("aniso") else (sx, 0.0)
    if kind.startswith("generalized"):
        return generalized_kernel(size, sx, sy, theta, _uniform(rng, v["beta_generalized"]))
    if kind.startswith("plateau"):
        return plateau_kernel(size, sx, sy, theta, _uniform(rng, v["beta_plateau"]))
    return gaussian_kernel(size, sx, sy, theta)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "matlab":
        return imresize(x, size=size)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode == "area" and (size[0] > x.shape[-2] or size[1] > x.shape[-1]):
        mode = "bilinear"  # area averaging only shrinks
        kwargs = {"align_corners": False}
    return F.interpolate(x[None], size=size, mode=mode, **kwargs)[0]


def _noise(
    x: torch.Tensor, rng: np.random.Generator, v: Mapping[str, Any], sigma: Sequence[float], poisson: Sequence[float]
) -> torch.Tensor:
    """Gaussian noise of a drawn sigma (0..255 scale), or Poisson (shot) noise scaled as in Real-ESRGAN;
    one plane for all channels with gray_noise_prob."""
    grey = rng.random() < v["gray_noise_prob"]
    shape = (1, *x.shape[1:]) if grey else tuple(x.shape)
    if rng.random() < v["gaussian_noise_prob"]:
        n = rng.standard_normal(shape, dtype=np.float32) * np.float32(_uniform(rng, sigma) / 255.0)
    else:
        base = (x.mean(dim=0, keepdim=True) if grey else x).clamp(0, 1).numpy()
        n = (rng.poisson(base * 256) / 256 - base) * _uniform(rng, poisson)
    return (x + torch.from_numpy(np.ascontiguousarray(n)).to(x.dtype)).clamp(0, 1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A real JPEG round trip of a (3, H, W) image in [0, 1] (Pillow, 4:2:0 as cameras store it)."""
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, "JPEG", quality=int(quality), subsampling=2)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(x.dtype) / 255.0


@dataclass
class Degrader:
    """Random degradations of HR crops into LR (float (3, H, W) tensors in [0, 1])."""

    config: DegradationConfig
    scale: int
    values: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.values = self.config.resolved()
        for name in ("kernels", "resize_modes", "final_modes"):
            if self.values.get(name):
                unknown = set(self.values[name]) - {
                    "iso",
                    "aniso",
                    "generalized_iso",
                    "generalized_aniso",
                    "plateau_iso",
                    "plateau_aniso",
                    "sinc",
                    "area",
                    "bilinear",
                    "bicubic",
                    "matlab",
                }
                if unknown:
                    raise DegradationError(f"degradation.{name}: unknown {', '.join(sorted(unknown))}")

    def __call__(self, hr: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One LR sample of `hr` (float (3, H, W), H and W multiples of the scale), 8-bit values like a file's."""
        v = self.values
        out = (hr.shape[-2] // self.scale, hr.shape[-1] // self.scale)
        x = self._blur(hr.float(), rng, v["blur_prob"], v["sigma"])
        x = self._random_resize(x, rng, v["resize_probs"], v["resize_range"], tuple(x.shape[-2:]))
        if rng.random() < v["second_order_prob"]:
            # Real-ESRGAN: noise and JPEG end the first order; the second blurs, resizes (around the
            # final size) and adds noise again; then the final resize (and sinc) and a last JPEG, in
            # either order.
            x = self._noise(x, rng, v["noise_sigma"], v["poisson_scale"])
            x = self._jpeg(x, rng, v["jpeg_range"])
            x = self._blur(x, rng, v["blur_prob2"], v["sigma2"])
            x = self._random_resize(x, rng, v["resize_probs2"], v["resize_range2"], out)
            x = self._noise(x, rng, v["noise_sigma2"], v["poisson_scale2"])
            if rng.random() < 0.5:
                x = self._jpeg(self._final_resize(x, rng, out), rng, v["jpeg_range2"], always=True)
            else:
                x = self._final_resize(self._jpeg(x, rng, v["jpeg_range2"], always=True), rng, out)
        else:
            # One order, as a camera or a saved file: blur on the scene, the reduction, then noise and JPEG.
            x = self._final_resize(x, rng, out)
            x = self._noise(x, rng, v["noise_sigma"], v["poisson_scale"])
            x = self._jpeg(x, rng, v["jpeg_range"])
        return (x.clamp(0, 1) * 255).round().float() / 255.0

    def _blur(self, x: torch.Tensor, rng: np.random.Generator, prob: float, sigma: Sequence[float]) -> torch.Tensor:
        return filter2d(x, random_kernel(rng, self.values, sigma)) if rng.random() < prob else x

    def _random_resize(self, x, rng, probs: Sequence[float], bounds: Sequence[float], base: tuple[int, int]) -> torch.Tensor:
        direction = _choose(rng, dict(zip(("up", "down", "keep"), probs)))
        if direction == "keep":
            return x
        low, high = _range(bounds)
        factor = float(rng.uniform(1, high)) if direction == "up" else float(rng.uniform(low, 1))
        size = (max(4, round(base[0] * factor)), max(4, round(base[1] * factor)))
        return _resize(x, size, _choose(rng, self.values["resize_modes"]))

    def _noise(self, x, rng, sigma: Sequence[float], poisson: Sequence[float]) -> torch.Tensor:
        return _noise(x, rng, self.values, sigma, poisson) if rng.random() < self.values["noise_prob"] else x

    def _jpeg(self, x, rng, bounds: Sequence[float], always: bool = False) -> torch.Tensor:
        if always or rng.random() < self.values["jpeg_prob"]:
            return jpeg(x, int(round(_uniform(rng, bounds))))
        return x

    def _final_resize(self, x: torch.Tensor, rng: np.random.Generator, out: tuple[int, int]) -> torch.Tensor:
        mode = _choose(rng, self.values["final_modes"])
        x = _resize(x, out, mode) if tuple(x.shape[-2:]) != out else x
        if rng.random() < self.values["final_sinc_prob"]:
            x = filter2d(x, sinc_kernel(21, float(rng.uniform(math.pi / 3, math.pi))))
        return x


# --- fixed degradations for benchmarks ----------------------------------------------------

SPEC_OPS = {"blur": (0.0, 10.0), "noise": (0.0, 100.0), "jpeg": (1.0, 100.0)}


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """`blur:1.2+noise:5+jpeg:60` -> [("blur", 1.2), ("noise", 5.0), ("jpeg", 60.0)]."""
    steps = []
    for part in spec.replace(" ", "").split("+"):
        op, _, value = part.partition(":")
        if op not in SPEC_OPS or not value:
            raise DegradationError(f"'{spec}': '{part}' is not one of blur:SIGMA, noise:SIGMA, jpeg:QUALITY (joined with +)")
        try:
            number = float(value)
        except ValueError:
            raise DegradationError(f"'{spec}': '{value}' in '{part}' is not a number") from None
        low, high = SPEC_OPS[op]
        if not (low <= number <= high) or (op == "jpeg" and not number.is_integer()):
            kind = "an integer" if op == "jpeg" else "a number"
            raise DegradationError(f"'{spec}': {op} takes {kind} from {low:g} to {high:g}, not {value}")
        steps.append((op, number))
    if any(op == "blur" for op, _ in steps[1:]):
        raise DegradationError(f"'{spec}': blur acts on HR before the reduction, so it must come first")
    return steps


def _gaussian_blur_uint8(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur in float64 with symmetric borders, rounded to 8 bits."""
    if sigma <= 0:
        return image
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = image.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(x.ndim)], mode="symmetric")
        n = x.shape[axis]
        x = sum(t * np.take(padded, np.arange(i, i + n), axis=axis) for i, t in enumerate(taps))
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def _seed(spec: str, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{spec}|{key}".encode()).digest()[:8], "little")


def degrade_benchmark(hr: np.ndarray, scale: int, spec: str, key: str) -> np.ndarray:
    """The LR image of `hr` (uint8 HxWx3, already cropped to a multiple of `scale`) under `spec`.

    `key` (the image's name) seeds the noise, so every image gets its own, identical on every run."""
    steps = parse_spec(spec)
    rng = np.random.default_rng(_seed(spec, key))
    if steps and steps[0][0] == "blur":
        hr = _gaussian_blur_uint8(hr, steps[0][1])
        steps = steps[1:]
    lr = bicubic_downscale_uint8(hr, scale)
    for op, value in steps:
        if op == "noise":
            noisy = lr.astype(np.float64) + rng.standard_normal(lr.shape) * value
            lr = np.clip(np.floor(noisy + 0.5), 0, 255).astype(np.uint8)
        else:
            buffer = io.BytesIO()
            Image.fromarray(lr).save(buffer, "JPEG", quality=int(value), subsampling=2)
            lr = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy()
    return lr
