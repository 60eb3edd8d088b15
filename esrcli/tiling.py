"""Tiled inference with overlap blending: seamless output in bounded memory.

The image is cut into a grid of cores; each tile is its core grown by `overlap` LR pixels of
context on every side (clamped at the image border). Near a tile's cut edge the network sees its
own zero padding instead of the image, so for networks whose reach is bounded (the SPAN family:
only convolutions) the outermost receptive-radius of each tile gets no weight: with the default
overlap (that radius) every output pixel then comes from a tile that saw all of its context, and
tiled output equals whole-image output up to float rounding. Otherwise (EFDN's pooled attention,
or an overlap below the radius) outputs are blended with a raised-cosine window over the whole
overlap. Weights stay 1 at the image border and are normalised by their sum, so any grid
geometry blends correctly. Blending runs one
row of tiles at a time: the float accumulator covers one strip of output rows, and finished
rows are handed to `write` (which quantises them into a preallocated uint8/uint16 array), so
no full-size float image ever exists.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .device import memory_format

OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

ReadFn = Callable[[int, int, int, int], np.ndarray]
"""read(y0, y1, x0, x1) -> float32 (h, w, C) in [0, 1]: an LR window of the source."""
WriteFn = Callable[[int, int, np.ndarray], None]
"""write(row0, row1, rows): finished output rows, float32 (rows, W*s, C) in [0, 1]; `rows` is a
view of the strip buffer, valid only during the call (it may be modified in place)."""


@dataclass(frozen=True)
class TilePlan:
    tile: int  # core size in LR pixels; 0 = the whole image in one tile
    overlap: int  # context added on each side, in LR pixels
    batch: int  # tiles per forward call, at most


def receptive_radius(network: nn.Module) -> int:
    """Sum of every conv's radius: an upper bound on how far context reaches in a conv chain."""
    radius = 0
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            radius += (m.kernel_size[0] - 1) // 2 * m.dilation[0] * m.stride[0]
    return radius


def exact_context(network: nn.Module) -> int:
    """The context that makes a tile's output exact, or 0 when no finite context does (or it is unknown)."""
    nets = [m for m in network.modules() if hasattr(type(m), "local") and hasattr(m, "scale")]
    return receptive_radius(network) if nets and all(type(m).local for m in nets) else 0


def default_overlap(network: nn.Module) -> int:
    return int(min(max(receptive_radius(network), 8), 48))


def full_scale(dtype: np.dtype) -> float:
    """The value of white: 255 or 65535 for integer pixels, 1.0 for float ones."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def available_memory(device: torch.device) -> int:
    """Bytes a run may reasonably use on `device` now."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def auto_plan(network: nn.Module, scale: int, device: torch.device, dtype: torch.dtype, overlap: int | None = None) -> TilePlan:
    """Tile and batch sizes from free memory and a per-pixel activation estimate.

    A forward pass keeps a handful of feature maps of the widest layer alive (SPAN's tail
    concatenates four) plus the pixel-shuffle input and the output: about 12 maps of the
    widest width per LR pixel, which over-estimates slightly, on purpose. Images smaller than
    the tile run whole.
    """
    overlap = default_overlap(network) if overlap is None else overlap
    widest = max((m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d)), default=64)
    per_pixel = torch.finfo(dtype).bits // 8 * (12 * widest + 2 * 3 * scale * scale)
    share = 0.25 if device.type == "cpu" else 0.5
    pixels = available_memory(device) * share / per_pixel
    if device.type == "cpu":
        # Measured (benchmarks/upscale.py): tiles of 256-512 run fastest on a CPU and batching
        # slows it down, so take the small end and one tile per call: memory stays small.
        return TilePlan(int(max(64, min(256, math.isqrt(int(pixels)) - 2 * overlap))), overlap, 1)
    tile = int(max(64, min(2048, math.isqrt(int(pixels)) - 2 * overlap)))
    batch = int(max(1, min(16, pixels // (tile + 2 * overlap) ** 2)))
    return TilePlan(tile, overlap, batch)


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Near-equal cores covering [0, length): equal sizes keep tiles batchable."""
    if tile <= 0 or tile >= length:
        return [(0, length)]
    n = math.ceil(length / tile)
    size = math.ceil(length / n)
    return [(i * size, min((i + 1) * size, length)) for i in range(n) if i * size < length]


def ramp(length: int, ramp_len: int, start_at_border: bool, end_at_border: bool, dead: int = 0) -> np.ndarray:
    """1-D blending weights: 0 for `dead` pixels at each inner edge, then a raised cosine over
    `ramp_len` (a step when 0); 1 at image borders."""
    d = np.arange(length, dtype=np.float32) - dead
    w = np.ones(length, dtype=np.float32)
    if ramp_len > 0:
        rise = np.sin(np.clip((d + 0.5) / ramp_len, 0.0, 1.0) * (np.pi / 2)) ** 2
    else:
        rise = (d >= 0).astype(np.float32)
    if not start_at_border:
        w *= rise
    if not end_at_border:
        w *= rise[::-1]
    return w


def blend_tiles(
    read: ReadFn,
    write: WriteFn,
    infer: Callable[[torch.Tensor], torch.Tensor],
    *,
    height: int,
    width: int,
    channels: int,
    scale: int,
    plan: TilePlan,
    context: int = 0,
    on_tile: Callable[[int], None] | None = None,
) -> None:
    """Run `infer` over the tiles of an LR image and stream blended output rows to `write`.

    `infer` maps a float (B, C, h, w) batch to (B, C, h*s, w*s) on the CPU. `context` is the
    network's exact reach (exact_context); when the overlap covers it, tile edges get no weight.
    """
    ov, s = plan.overlap, scale
    dead = context if 0 < context <= ov else 0
    fade = 2 * (ov - dead) * s  # the ramp between two tiles' exact outputs
    rows, cols = spans(height, plan.tile), spans(width, plan.tile)
    out_w = width * s
    # One strip buffer for the whole run: the tallest tile row plus the band it shares with the last.
    strip = max(min(height, y1 + ov) - max(0, y0 - ov) for y0, y1 in rows) * s
    acc = np.zeros((strip, out_w, channels), np.float32)
    wsum = np.zeros((strip, out_w, 1), np.float32)
    top = 0  # output row held in acc[0]
    filled = 0  # rows of acc in use
    for r, (y0, y1) in enumerate(rows):
        ey0, ey1 = max(0, y0 - ov), min(height, y1 + ov)
        need = ey1 * s - top
        acc[filled:need] = 0.0
        wsum[filled:need] = 0.0
        filled = need
        wy = ramp((ey1 - ey0) * s, fade, ey0 == 0, ey1 == height, dead * s)[:, None, None]
        offset = ey0 * s - top
        boxes = [(ey0, ey1, max(0, x0 - ov), min(width, x1 + ov)) for x0, x1 in cols]
        for group in _batches(boxes, plan.batch):
            x = torch.from_numpy(np.stack([read(*b) for b in group])).permute(0, 3, 1, 2)
            y = infer(x).permute(0, 2, 3, 1).numpy()
            for (_, _, bx0, bx1), tile_out in zip(group, y):
                weight = wy * ramp((bx1 - bx0) * s, fade, bx0 == 0, bx1 == width, dead * s)[None, :, None]
                region = np.s_[offset : offset + tile_out.shape[0], bx0 * s : bx1 * s]
                acc[region] += tile_out * weight
                wsum[region] += weight
            if on_tile:
                on_tile(len(group))
        # Rows above the next tile row's reach are final: normalise them in place and hand them on.
        done = max((rows[r + 1][0] - ov) * s if r + 1 < len(rows) else height * s, top)
        n = done - top
        for c0 in range(0, n, 64):  # in chunks, so no strip-sized temporaries
            c1 = min(n, c0 + 64)
            acc[c0:c1] /= np.maximum(wsum[c0:c1], 1e-12)
            write(top + c0, top + c1, acc[c0:c1])
        acc[: filled - n] = acc[n:filled]
        wsum[: filled - n] = wsum[n:filled]
        filled -= n
        top = done


def _batches(boxes: list[tuple[int, int, int, int]], limit: int) -> list[list[tuple[int, int, int, int]]]:
    """Consecutive tiles of equal shape, at most `limit` per forward call."""
    groups: list[list[tuple[int, int, int, int]]] = []
    for box in boxes:
        shape = (box[1] - box[0], box[3] - box[2])
        last = groups[-1] if groups else None
        if last and len(last) < limit and (last[0][1] - last[0][0], last[0][3] - last[0][2]) == shape:
            last.append(box)
        else:
            groups.append([box])
    return groups


class Upscaler:
    """A network plus the policies around each forward: precision fallback and memory retries.

    A tile that runs out of memory is split (batch first, then the tile itself, recursively
    tiled at half the size); a half-precision tile that comes back with NaN or inf is
    recomputed in fp32. The retried result always replaces the failed one: nothing stale is
    ever blended.
    """

    def __init__(self, network: nn.Module, scale: int, plan: TilePlan) -> None:
        self.network = network
        self.scale = scale
        self.plan = plan
        self.context = exact_context(network)
        param = next(network.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._fp32: nn.Module | None = None
        self.retries = {"oom": 0, "fp32": 0}

    def _fp32_network(self) -> nn.Module:
        if self._fp32 is None:
            self._fp32 = copy.deepcopy(self.network).float()
        return self._fp32

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float CPU, C in {1, 3} -> (B, C, h*s, w*s) float32 CPU."""
        grey = x.shape[1] == 1
        batch = x.expand(-1, 3, -1, -1) if grey else x
        batch = batch.to(self.device, self.dtype).contiguous(memory_format=memory_format(self.device))
        y = self.network(batch)
        if self.dtype != torch.float32 and not torch.isfinite(y).all():
            self.retries["fp32"] += 1
            y = self._fp32_network()(batch.float())
        y = y.float().clamp_(0.0, 1.0)
        if grey:
            y = y.mean(dim=1, keepdim=True)
        return y.cpu()

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self._forward(x)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
        self.retries["oom"] += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if x.shape[0] > 1:
            half = x.shape[0] // 2
            return torch.cat([self.infer(x[:half]), self.infer(x[half:])])
        h, w = x.shape[-2:]
        tile = max(h, w) // 2
        if tile < max(16, self.plan.overlap):
            raise MemoryError(f"out of memory even for a {w}x{h} tile")
        return self._retile(x[0], TilePlan(tile, self.plan.overlap, 1))[None]

    def _retile(self, image: torch.Tensor, plan: TilePlan) -> torch.Tensor:
        """Upscale one (C, h, w) tile by tiling it again, smaller."""
        c, h, w = image.shape
        hwc = image.permute(1, 2, 0).numpy()
        out = np.empty((h * self.scale, w * self.scale, c), np.float32)

        def write(r0: int, r1: int, rows: np.ndarray) -> None:
            out[r0:r1] = rows

        blend_tiles(lambda y0, y1, x0, x1: hwc[y0:y1, x0:x1], write, self.infer, height=h, width=w, channels=c, scale=self.scale,
                    plan=plan, context=self.context)  # fmt: skip
        return torch.from_numpy(out).permute(2, 0, 1)

    def upscale_frames(self, frames: list[np.ndarray], out_dtype: np.dtype) -> list[np.ndarray]:
        """Several whole frames in one forward call when each fits in a single tile (small video
        frames on a GPU); otherwise each frame is tiled on its own."""
        h, w, c = frames[0].shape
        if self.count_tiles(h, w) > 1:
            return [self.upscale(f, np.empty((h * self.scale, w * self.scale, c), out_dtype)) for f in frames]
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / full_scale(frames[0].dtype)
        y = self.infer(x).permute(0, 2, 3, 1).numpy()
        if np.dtype(out_dtype).kind == "f":
            return list(y.astype(out_dtype, copy=False))
        y *= full_scale(out_dtype)
        return list(np.rint(y, out=y).astype(out_dtype))

    def count_tiles(self, height: int, width: int) -> int:
        return len(spans(height, self.plan.tile)) * len(spans(width, self.plan.tile))

    def upscale(self, pixels: np.ndarray, out: np.ndarray, on_tile: Callable[[int], None] | None = None) -> np.ndarray:
        """Upscale an (H, W, C) uint8/uint16 (or float32 in 0..1) array into the preallocated
        (H*s, W*s, C) `out` of any of those types.

        Inputs are normalised per tile and outputs quantised per strip, so 16-bit data never
        passes through 8 bits and no full-size float array is made for integer outputs.
        """
        h, w, c = pixels.shape
        in_max, out_max = full_scale(pixels.dtype), full_scale(out.dtype)
        rounds = out.dtype.kind != "f"
        if out.shape != (h * self.scale, w * self.scale, c):
            raise ValueError(f"output array {out.shape} does not fit {pixels.shape} x{self.scale}")
        if self.count_tiles(h, w) == 1:  # one tile: nothing to blend
            out[...] = self.upscale_frames([pixels], out.dtype)[0]
            if on_tile:
                on_tile(1)
            return out

        def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            return pixels[y0:y1, x0:x1].astype(np.float32) / in_max

        def write(r0: int, r1: int, rows: np.ndarray) -> None:
            if rounds:
                rows *= out_max  # the strip buffer is the caller's to reuse: scale in place
                np.rint(rows, out=rows)
            out[r0:r1] = rows

        blend_tiles(read, write, self.infer, height=h, width=w, channels=c, scale=self.scale, plan=self.plan, context=self.context,
                    on_tile=on_tile)  # fmt: skip
        return out
