"""Reaching any scale factor with models of a few native scales: planning, passes and resampling.

A plan is a chain of model passes (each one a registry variant's native scale) followed, when the
chain's product is not the target, by one exact-size resample. Both `esr upscale` and `esr video`
run plans through `Pipeline`, so images and frames are scaled the same way.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .denoise import snap, strength_for
from .errors import ScaleError as ScaleError
from .estimate import measure
from .tiling import HostCopy, TilePlan, Upscaler

MAX_SCALE = 16
# The final resample may enlarge by at most this much; past it another model pass (then a reduction)
# is used. Measured with esr-tiny on Set5/Set14 (benchmarks/scale_plans.py): at x6, x8, x12 and x16 one
# x4 pass and a Lanczos enlargement scores as well as any chain of two or three passes (within 0.02 dB)
# at a tenth of the time, and chains that start with an x2 pass score 0.5-0.8 dB worse.
MAX_RESAMPLE_UP = 2.0

RESAMPLERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}


def format_scale(scale: float) -> str:
    return f"{scale:g}"


@dataclass(frozen=True)
class ScalePlan:
    """Model passes (native scales, in the order they run), then an exact-size resample to `target`."""

    target: float
    passes: tuple[int, ...]

    @property
    def reached(self) -> int:
        return math.prod(self.passes)

    @property
    def resample(self) -> bool:
        return self.reached != self.target

    @property
    def scales(self) -> list[int]:
        """The distinct model scales the plan needs."""
        return sorted(set(self.passes))

    @property
    def cost(self) -> tuple[float, float]:
        """(network work, output size) per LR pixel: each pass runs over the image its predecessors made."""
        area, work = 1.0, 0.0
        for s in self.passes:
            work += area
            area *= s * s
        return work, area

    def describe(self) -> str:
        steps = " + ".join(f"x{s} model" for s in self.passes)
        if self.resample:
            verb = "down" if self.reached > self.target else "up"
            chain = f" (x{self.reached})" if len(self.passes) > 1 else ""
            steps += f"{chain}, then Lanczos {verb}-resample to x{format_scale(self.target)}"
        return steps


def check_scale(target: float) -> float:
    if isinstance(target, bool) or not isinstance(target, numbers.Real):
        raise ScaleError(f"scale must be a number greater than 1, not {target!r}")
    if not (math.isfinite(target) and target > 1):
        raise ScaleError(f"scale must be a number greater than 1, not {target:g}")
    if target > MAX_SCALE:
        raise ScaleError(f"scale {target:g} is above the supported maximum of {MAX_SCALE}")
    return target


def plan_scale(native: Iterable[int], target: float) -> ScalePlan:
    """The cheapest chain of model passes, largest first, that reaches `target`.

    A chain qualifies when it lands on the target, overshoots it (a reduction follows) or falls
    short by at most MAX_RESAMPLE_UP (an enlargement follows). Among those, the least network work
    wins; then a reduction over an enlargement (x3 from x4 and x2 models: x4 then down, which
    scores 1.2 dB above x2 then up), then the smaller intermediate image. So x8 is one x4 pass and
    a Lanczos x2 (whether or not an x2 variant exists), x12 two x4 passes and a reduction.
    """
    native = sorted(set(native), reverse=True)
    check_scale(target)
    if not native:
        raise ScaleError("no model scales to plan with")
    depth = max(1, math.ceil(math.log(MAX_SCALE) / math.log(native[-1]) + 1e-9))
    best: tuple | None = None
    for length in range(1, depth + 1):
        for passes in itertools.combinations_with_replacement(native, length):  # descending: largest pass first
            plan = ScalePlan(target, passes)
            left = target / plan.reached
            if left > MAX_RESAMPLE_UP:
                continue
            work, area = plan.cost
            key = (round(work, 9), left > 1, area, length)
            if best is None or key < best[0]:
                best = (key, plan)
    assert best is not None  # the largest scale repeated `depth` times always qualifies
    return best[1]


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def resample(pixels: np.ndarray, size: tuple[int, int], method: str = "lanczos") -> np.ndarray:
    """Resize an (H, W, C) uint8/uint16 (or float32 0..1) array, antialiased when shrinking;
    results are clamped to the type's range."""
    if pixels.shape[1::-1] == size:
        return pixels
    kind = RESAMPLERS[method]
    if pixels.dtype.kind == "f":
        planes = [np.asarray(Image.fromarray(pixels[..., c].astype(np.float32), "F").resize(size, kind)) for c in range(pixels.shape[2])]
        return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)
    if pixels.dtype == np.uint8:
        mode = "L" if pixels.shape[2] == 1 else "RGB"
        im = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        out = np.asarray(im.resize(size, kind))
        return out.reshape(size[1], size[0], -1)
    planes = []
    for c in range(pixels.shape[2]):  # 16 bits: one float plane at a time keeps memory bounded
        plane = Image.fromarray(pixels[..., c].astype(np.float32), "F").resize(size, kind)
        planes.append(np.clip(np.rint(np.asarray(plane)), 0, 65535).astype(np.uint16))
    return np.stack(planes, axis=-1)


@dataclass
class Pipeline:
    """A plan and one Upscaler per model scale it uses: what turns LR pixels into output pixels."""

    plan: ScalePlan
    upscalers: Mapping[int, Upscaler]
    strength: float = 0.0  # --denoise: how far its networks are mixed towards the robust partner
    choose: Callable[[float], Pipeline] | None = None  # under --denoise auto: the pipeline of a strength
    tta: bool = False  # --tta: every pass runs the x8 self-ensemble (esrcli.ensemble), in its Upscaler

    def for_input(self, pixels: np.ndarray, jpeg_tables: Mapping[int, Sequence[int]] | None = None) -> tuple[Pipeline, dict | None]:
        """The pipeline for this input, and what decided its --denoise strength (None: no mixing involved):
        itself, or under --denoise auto the one of the strength that what the input shows (esrcli.estimate)
        calls for."""
        if self.choose is None:
            return self, ({"denoise": self.strength} if self.strength else None)
        measured = measure(pixels, jpeg_tables)
        chosen = self.choose(strength_for(measured, self.plan.passes[0]))
        return chosen, {"denoise": chosen.strength, **measured.as_dict()}

    def for_frames(self, frames: Sequence[np.ndarray]) -> Pipeline:
        """One pipeline for a whole video: the median of its sampled frames' strengths."""
        if self.choose is None or not frames:
            return self
        return self.choose(snap(float(np.median([strength_for(measure(f), self.plan.passes[0]) for f in frames]))))

    def run(self, pixels: np.ndarray, on_tile: Callable[[int], None] | None = None) -> np.ndarray:
        """The model passes over an (H, W, C) uint8/uint16 array, then the exact-size resample.

        Between passes the image stays 16-bit (or float), so no precision is lost on the way."""
        size = target_size(pixels.shape[1], pixels.shape[0], self.plan.target)
        return resample(self.passes(pixels, on_tile), size)

    def passes(self, pixels: np.ndarray, on_tile: Callable[[int], None] | None = None) -> np.ndarray:
        out_dtype = pixels.dtype
        between = np.float32 if out_dtype.kind == "f" else np.uint16
        for i, s in enumerate(self.plan.passes):
            last = i == len(self.plan.passes) - 1
            h, w, c = pixels.shape
            out = np.empty((h * s, w * s, c), out_dtype if last else between)
            pixels = self.upscalers[s].upscale(pixels, out, on_tile=on_tile)
        return pixels

    def run_frames(self, frames: list[np.ndarray]) -> list[HostCopy]:
        """Several frames of one size: batched into one forward call where a single pass allows it. The
        results may still be on their way from the device (HostCopy.array() waits for each)."""
        h, w = frames[0].shape[:2]
        size = target_size(w, h, self.plan.target)
        if len(self.plan.passes) == 1:
            ups = self.upscalers[self.plan.passes[0]].upscale_frames(frames, frames[0].dtype)
            s = self.plan.passes[0]
            if size == (w * s, h * s):
                return ups
            return [HostCopy.of(resample(u.array(), size)) for u in ups]
        return [HostCopy.of(resample(self.passes(f), size)) for f in frames]

    @property
    def tiling(self) -> dict[int, TilePlan]:
        """The tile plan of every pass, by model scale: what a worker elsewhere needs to cut tiles the same way."""
        return {s: u.plan for s, u in self.upscalers.items()}

    def frames_per_call(self, height: int, width: int) -> int:
        """Whole frames of this size per forward call (video batches what is ready, up to this)."""
        first = self.upscalers[self.plan.passes[0]]
        if len(self.plan.passes) > 1 or first.count_tiles(height, width) > 1:
            return 1
        return first.plan.per_call(height * width)

    def count_tiles(self, height: int, width: int) -> int:
        total = 0
        for s in self.plan.passes:
            total += self.upscalers[s].count_tiles(height, width)
            height, width = height * s, width * s
        return total

    @property
    def retries(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for upscaler in self.upscalers.values():
            for key, n in upscaler.retries.items():
                totals[key] = totals.get(key, 0) + n
        return totals
