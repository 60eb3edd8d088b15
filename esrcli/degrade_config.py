"""How training LR is made from HR, as a config section and named presets (no numpy, no torch).

esrcli.degrade turns these settings into pixels; esrcli.runconfig reads them from a run's TOML.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError


@dataclass
class DegradationConfig:
    """How training LR is made from HR. preset "none" turns it off (plain MATLAB bicubic).

    Fields left unset (None) take the preset's value; see PRESETS. Ranges are [low, high] and
    drawn uniformly; `*_kernels` and `*_modes` are {name: weight}."""

    preset: str = "none"  # none | jpeg | light | realesrgan
    # first order
    blur_prob: float | None = None
    kernel_size: list[int] | None = None  # odd sizes, [smallest, largest]
    kernels: dict[str, float] | None = None  # iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso, sinc
    sigma: list[float] | None = None
    beta_generalized: list[float] | None = None
    beta_plateau: list[float] | None = None
    resize_probs: list[float] | None = None  # up, down, keep
    resize_range: list[float] | None = None
    resize_modes: dict[str, float] | None = None  # area, bilinear, bicubic
    noise_prob: float | None = None
    gaussian_noise_prob: float | None = None  # else Poisson
    noise_sigma: list[float] | None = None  # Gaussian, 0..255 scale
    poisson_scale: list[float] | None = None
    gray_noise_prob: float | None = None
    jpeg_prob: float | None = None
    jpeg_range: list[float] | None = None
    # second order
    second_order_prob: float | None = None
    blur_prob2: float | None = None
    sigma2: list[float] | None = None
    resize_probs2: list[float] | None = None
    resize_range2: list[float] | None = None
    noise_sigma2: list[float] | None = None
    poisson_scale2: list[float] | None = None
    jpeg_range2: list[float] | None = None
    # the last resize to HR / scale
    final_modes: dict[str, float] | None = None  # area, bilinear, bicubic, matlab (MATLAB's antialiased bicubic)
    final_sinc_prob: float | None = None

    @property
    def enabled(self) -> bool:
        return self.preset != "none"

    def resolved(self) -> dict[str, Any]:
        """Every field's value: the explicit ones over the preset's."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown degradation preset '{self.preset}' (known: {', '.join(PRESETS)})")
        values = dict(PRESETS[self.preset])
        values.update({f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None})
        return values


_REALESRGAN: dict[str, Any] = {
    # The ranges of the Real-ESRGAN paper (first and second order).
    "blur_prob": 1.0,
    "kernel_size": [7, 21],
    "kernels": {
        "iso": 0.45,
        "aniso": 0.25,
        "generalized_iso": 0.12,
        "generalized_aniso": 0.03,
        "plateau_iso": 0.12,
        "plateau_aniso": 0.03,
        "sinc": 0.1,
    },
    "sigma": [0.2, 3.0],
    "beta_generalized": [0.5, 4.0],
    "beta_plateau": [1.0, 2.0],
    "resize_probs": [0.2, 0.7, 0.1],
    "resize_range": [0.15, 1.5],
    "resize_modes": {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0},
    "noise_prob": 1.0,
    "gaussian_noise_prob": 0.5,
    "noise_sigma": [1.0, 30.0],
    "poisson_scale": [0.05, 3.0],
    "gray_noise_prob": 0.4,
    "jpeg_prob": 1.0,
    "jpeg_range": [30.0, 95.0],
    "second_order_prob": 1.0,
    "blur_prob2": 0.8,
    "sigma2": [0.2, 1.5],
    "resize_probs2": [0.3, 0.4, 0.3],
    "resize_range2": [0.3, 1.2],
    "noise_sigma2": [1.0, 25.0],
    "poisson_scale2": [0.05, 2.5],
    "jpeg_range2": [30.0, 95.0],
    "final_modes": {"area": 1.0, "bilinear": 1.0, "bicubic": 1.0},
    "final_sinc_prob": 0.8,
}

PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # JPEG alone: MATLAB bicubic, then quality 30-95 (85% of samples); the rest stay clean.
    "jpeg": {
        **_REALESRGAN,
        "blur_prob": 0.0,
        "resize_probs": [0.0, 0.0, 1.0],
        "noise_prob": 0.0,
        "jpeg_prob": 0.85,
        "second_order_prob": 0.0,
        "final_modes": {"matlab": 1.0},
        "final_sinc_prob": 0.0,
    },
    # What photos and video frames carry, at strengths that keep clean inputs sharp: mild blur (40%),
    # noise (40%), JPEG (70%), no second order; a fifth of samples stay clean bicubic.
    "light": {
        **_REALESRGAN,
        "blur_prob": 0.4,
        "kernel_size": [7, 15],
        "kernels": {"iso": 0.6, "aniso": 0.3, "generalized_iso": 0.05, "plateau_iso": 0.05},
        "sigma": [0.2, 1.6],
        "resize_probs": [0.0, 0.0, 1.0],
        "noise_prob": 0.4,
        "gaussian_noise_prob": 0.8,
        "noise_sigma": [1.0, 12.0],
        "poisson_scale": [0.05, 1.0],
        "jpeg_prob": 0.7,
        "jpeg_range": [35.0, 95.0],
        "second_order_prob": 0.0,
        "final_modes": {"matlab": 0.6, "area": 0.2, "bicubic": 0.2},
        "final_sinc_prob": 0.05,
    },
    "realesrgan": _REALESRGAN,
}
