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
import numbers
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .device import memory_format
from .errors import TilingError as TilingError

OutOfMemory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

ReadFn = Callable[[int, int, int, int], torch.Tensor]
"""read(y0, y1, x0, x1) -> float32 (h, w, C) in [0, 1] on the device: an LR window of the source."""
WriteFn = Callable[[int, int, torch.Tensor], None]
"""write(row0, row1, rows): finished output rows, float32 (rows, W*s, C) in [0, 1] on the device; `rows`
is a view of the strip buffer, valid only during the call (it may be modified in place)."""


@dataclass(frozen=True)
class TilePlan:
    tile: int  # core size in LR pixels; 0 = the whole image in one tile
    overlap: int  # context added on each side, in LR pixels
    batch: int  # tiles (or whole frames) per forward call, at most
    whole: int = 0  # an image of at most this many LR pixels runs whole, whatever its sides (planned, not --tile)

    def grid(self, height: int, width: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The row and column spans of an image's tile cores: a planned budget takes the grid that does
        the least work (overlap included) with every tile within it; --tile cuts cores of that size."""
        if height * width <= self.whole:
            return [(0, height)], [(0, width)]
        if self.whole:
            rows, cols = least_work_grid(height, width, self.overlap, self.whole)
            return even_spans(height, rows), even_spans(width, cols)
        return spans(height, self.tile), spans(width, self.tile)

    def per_call(self, pixels: int) -> int:
        """Tiles or whole images of this many LR pixels per forward call: the batch, within the pixel
        budget when the plan has one."""
        return max(1, min(self.batch, self.whole // max(1, pixels))) if self.whole else self.batch


# Below this core size (or the overlap, if larger) the context computed around each tile dominates:
# a tile of t pixels with overlap o costs ((t + 2o) / t)^2 times its share, 9x at t = o.
MIN_TILE = 32


def check_tiling(tile: int | None, overlap: int | None, batch: int | None) -> None:
    """Refuse settings before any work; `overlap` is the one that will be used (None: not known yet)."""
    for name, value, least in (("tile", tile, 0), ("overlap", overlap, 0), ("batch", batch, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least):
            raise TilingError(
                f"{name} {value!r}: must be a whole number of at least {least}" + (" (0 = the whole image)" if name == "tile" else "")
            )
    smallest = max(MIN_TILE, overlap or 0)
    if tile and overlap is not None and tile < smallest:
        cost = ((tile + 2 * overlap) / tile) ** 2
        raise TilingError(
            f"tile {tile}: below the smallest useful tile, {smallest} px; each tile also computes {overlap} px of overlap "
            f"on every side, so a tile this small does {cost:.0f}x the work; use {smallest} or more, or 0 for the whole image"
        )


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


# On a CPU the forward's time per pixel is flat up to about this many pixels and grows beyond (the
# feature maps leave the caches): benchmarks/tile_sizes.py.
CPU_SPEED_PIXELS = 512 * 512


def auto_plan(
    network: nn.Module, scale: int, device: torch.device, dtype: torch.dtype, overlap: int | None = None, views: int = 1
) -> TilePlan:
    """A plan chosen for speed within the memory budget: images run whole whenever they fit, and only
    larger ones are tiled, in the fewest tiles that fit (each tile also computes its overlap, so more,
    smaller tiles only add work). `views`: inputs one forward call makes of each tile (--tta's
    self-ensemble batches up to 8 on a GPU), each costing the memory of a tile.

    The budget: a forward pass keeps a handful of feature maps of the widest layer alive (SPAN's tail
    concatenates four) plus the pixel-shuffle input and the output, about 12 maps of the widest width
    per LR pixel (an over-estimate, on purpose), in a quarter of free memory on a CPU and half on a GPU.
    On a CPU the budget is also capped where the time per pixel starts to grow.
    """
    overlap = default_overlap(network) if overlap is None else overlap
    widest = max((m.out_channels for m in network.modules() if isinstance(m, nn.Conv2d)), default=64)
    per_pixel = torch.finfo(dtype).bits // 8 * (12 * widest + 2 * 3 * scale * scale) * max(1, views)
    share = 0.25 if device.type == "cpu" else 0.5
    budget = int(available_memory(device) * share / per_pixel)
    if device.type == "cpu":
        budget = min(budget, CPU_SPEED_PIXELS)
    budget = max(budget, (MIN_TILE * 2 + 2 * overlap) ** 2)
    tile = max(MIN_TILE * 2, math.isqrt(budget) - 2 * overlap)
    # A CPU gains nothing from batching (measured, benchmarks/upscale.py); a GPU takes as many whole
    # frames or tiles per call as the budget holds (TilePlan.per_call), up to 64.
    return TilePlan(tile, overlap, 1 if device.type == "cpu" else 64, whole=budget)


def least_work_grid(height: int, width: int, overlap: int, budget: int) -> tuple[int, int]:
    """(rows, cols) of near-equal tiles, each within `budget` pixels with its overlap, computing the fewest
    pixels in all; tiles keep at least MIN_TILE core pixels a side (the budget gives way if it must)."""
    best: tuple[int, int, int] | None = None
    for rows in range(1, max(1, height // MIN_TILE) + 1):
        tile_h = -(-height // rows) + (2 * overlap if rows > 1 else 0)
        room = budget // tile_h  # the widest tile that fits
        for cols in range(1, max(1, width // MIN_TILE) + 1):
            tile_w = -(-width // cols) + (2 * overlap if cols > 1 else 0)
            if tile_w <= room or cols == max(1, width // MIN_TILE):
                work = rows * cols * tile_h * tile_w + (0 if tile_w <= room else budget * rows * cols)  # over budget: last resort
                if best is None or work < best[0]:
                    best = (work, rows, cols)
                break
    assert best is not None
    return best[1], best[2]


def even_spans(length: int, parts: int) -> list[tuple[int, int]]:
    size = -(-length // parts)
    return [(i * size, min((i + 1) * size, length)) for i in range(parts) if i * size < length]


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
    device: torch.device,
    context: int = 0,
    on_tile: Callable[[int], None] | None = None,
) -> None:
    """Run `infer` over the tiles of an LR image and stream blended output rows to `write`, all on `device`.

    `read(y0, y1, x0, x1)` gives an LR window as float32 (h, w, C) in 0..1 on `device`; `infer` maps a
    float32 (B, C, h, w) batch to (B, C, h*s, w*s) in 0..1 on `device`. `context` is the network's exact
    reach (exact_context); when the overlap covers it, tile edges get no weight.
    """
    ov, s = plan.overlap, scale
    dead = context if 0 < context <= ov else 0
    fade = 2 * (ov - dead) * s  # the ramp between two tiles' exact outputs
    rows, cols = plan.grid(height, width)
    out_w = width * s
    # One strip buffer for the whole run: the tallest tile row plus the band it shares with the last.
    strip = max(min(height, y1 + ov) - max(0, y0 - ov) for y0, y1 in rows) * s
    acc = torch.zeros((strip, out_w, channels), dtype=torch.float32, device=device)
    wsum = torch.zeros((strip, out_w, 1), dtype=torch.float32, device=device)
    ramps: dict[tuple[int, bool, bool], torch.Tensor] = {}

    def weights(length: int, at_start: bool, at_end: bool) -> torch.Tensor:
        key = (length, at_start, at_end)
        if key not in ramps:
            ramps[key] = torch.from_numpy(ramp(length, fade, at_start, at_end, dead * s)).to(device)
        return ramps[key]

    top = 0  # output row held in acc[0]
    filled = 0  # rows of acc in use
    for r, (y0, y1) in enumerate(rows):
        ey0, ey1 = max(0, y0 - ov), min(height, y1 + ov)
        need = ey1 * s - top
        acc[filled:need] = 0.0
        wsum[filled:need] = 0.0
        filled = need
        wy = weights((ey1 - ey0) * s, ey0 == 0, ey1 == height)[:, None, None]
        offset = ey0 * s - top
        boxes = [(ey0, ey1, max(0, x0 - ov), min(width, x1 + ov)) for x0, x1 in cols]
        per_call = plan.per_call((boxes[0][1] - boxes[0][0]) * (boxes[0][3] - boxes[0][2]))
        for group in _batches(boxes, per_call):
            x = torch.stack([read(*boxes[i]) for i in group]).permute(0, 3, 1, 2)
            y = infer(x).permute(0, 2, 3, 1)
            for (_, _, bx0, bx1), tile_out in zip((boxes[i] for i in group), y):
                weight = wy * weights((bx1 - bx0) * s, bx0 == 0, bx1 == width)[None, :, None]
                region = np.s_[offset : offset + tile_out.shape[0], bx0 * s : bx1 * s]
                acc[region] += tile_out * weight
                wsum[region] += weight
            if on_tile:
                on_tile(len(group))
        # Rows above the next tile row's reach are final: normalise them in place and hand them on.
        done = max((rows[r + 1][0] - ov) * s if r + 1 < len(rows) else height * s, top)
        n = done - top
        if n:
            acc[:n] /= wsum[:n].clamp_min(1e-12)
            write(top, done, acc[:n])
        acc[: filled - n] = acc[n:filled].clone()
        wsum[: filled - n] = wsum[n:filled].clone()
        filled -= n
        top = done


def _batches(boxes: list[tuple[int, int, int, int]], limit: int) -> list[list[int]]:
    """Indices of consecutive tiles of equal shape, at most `limit` per forward call."""
    groups: list[list[int]] = []
    for i, box in enumerate(boxes):
        last = groups[-1] if groups else None
        first = boxes[last[0]] if last else None
        if last and first and len(last) < limit and (first[1] - first[0], first[3] - first[2]) == (box[1] - box[0], box[3] - box[2]):
            last.append(i)
        else:
            groups.append([i])
    return groups


_TORCH_PIXELS = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16, np.dtype(np.float32): torch.float32}


class Upscaler:
    """A network plus what surrounds each forward: pixels to and from the device, tiles, precision
    fallback and memory retries.

    Pixels cross to the device as integers (uint8, uint16) and come back as integers: the conversion
    to floats, normalisation, blending, clamping and rounding are torch ops on the network's device, so
    the host never holds a float copy of an image. A tile that runs out of memory is split (batch
    first, then the tile itself, recursively tiled at half the size); a half-precision tile that comes
    back with NaN or inf is recomputed, alone, by the fp32 network (`fp32`: the model's weights in
    fp32 as loaded, not widened from the half-precision ones). The retried result always replaces the
    failed one: nothing stale is ever blended.
    """

    def __init__(self, network: nn.Module, scale: int, plan: TilePlan, fp32: nn.Module | None = None) -> None:
        self.network = network
        self.scale = scale
        self.plan = plan
        self.context = exact_context(network)
        param = next(network.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._fp32 = fp32
        self.retries = {"oom": 0, "fp32": 0}  # fp32: tiles (or whole frames) redone in fp32

    def _fp32_network(self) -> nn.Module:
        if self._fp32 is None:  # only when no fp32 weights were given: the best that can be done
            self._fp32 = copy.deepcopy(self.network).float()
        return self._fp32

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float32 in 0..1 on the device, C in {1, 3} -> (B, C, h*s, w*s) float32 in 0..1."""
        grey = x.shape[1] == 1
        batch = x.expand(-1, 3, -1, -1) if grey else x
        y = self.network(batch.to(self.dtype).contiguous(memory_format=memory_format(self.device)))
        if self.dtype != torch.float32:
            bad = ~torch.isfinite(y).flatten(1).all(dim=1)
            if bool(bad.any()):  # only the tiles that overflowed, from the fp32 input, in true fp32
                y = y.float()
                redo = bad.nonzero().flatten()
                self.retries["fp32"] += int(redo.numel())
                y[redo] = self._fp32_network()(batch[redo].contiguous(memory_format=memory_format(self.device)))
        y = y.float().clamp_(0.0, 1.0)
        return y.mean(dim=1, keepdim=True) if grey else y

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
        """Upscale one (C, h, w) float tile by tiling it again, smaller."""
        c, h, w = image.shape
        hwc = image.permute(1, 2, 0)
        out = torch.empty((h * self.scale, w * self.scale, c), dtype=torch.float32, device=image.device)

        def write(r0: int, r1: int, rows: torch.Tensor) -> None:
            out[r0:r1] = rows

        blend_tiles(
            lambda y0, y1, x0, x1: hwc[y0:y1, x0:x1],
            write,
            self.infer,
            height=h,
            width=w,
            channels=c,
            scale=self.scale,
            plan=plan,
            device=image.device,
            context=self.context,
        )
        return out.permute(2, 0, 1)

    # --- integers in, integers out -------------------------------------------------------

    def _upload(self, pixels: np.ndarray) -> torch.Tensor:
        """An (.., H, W, C) host array on the device, as it is (integers stay integers)."""
        if pixels.dtype not in _TORCH_PIXELS:
            raise ValueError(f"pixels must be uint8, uint16 or float32, not {pixels.dtype}")
        if self.device.type != "cuda":
            with warnings.catch_warnings():  # a read-only array (np.asarray of a PIL image) is only ever read here
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                return torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        # Through page-locked memory (torch's caching host allocator reuses it, and keeps a block
        # from being reused while a copy from it is in flight), so the copy runs asynchronously.
        host = torch.empty(pixels.shape, dtype=_TORCH_PIXELS[pixels.dtype], pin_memory=True)
        host.numpy()[...] = pixels
        return host.to(self.device, non_blocking=True)

    @torch.inference_mode()
    def _quantise(self, y: torch.Tensor, out_dtype: np.dtype) -> torch.Tensor:
        """Float 0..1 -> out_dtype's range, rounded half to even and cast, on the device. In place: `y` is
        always a fresh network output or a strip the caller hands over."""
        out_dtype = np.dtype(out_dtype)
        if out_dtype.kind == "f":
            return y.to(_TORCH_PIXELS[out_dtype])
        return y.mul_(full_scale(out_dtype)).round_().to(_TORCH_PIXELS[out_dtype])

    def _download(self, y: torch.Tensor) -> np.ndarray:
        """Device integers to a host array of their own, now."""
        return HostCopy(y).array()

    @torch.inference_mode()
    def upscale_frames(self, frames: list[np.ndarray], out_dtype: np.dtype) -> list[HostCopy]:
        """Several whole frames in one forward call when each fits in a single tile (small video frames
        on a GPU); otherwise each frame is tiled on its own. On CUDA the results are still on their way to
        the host (HostCopy.array() waits): the next frames' forward need not wait for them."""
        h, w, c = frames[0].shape
        if self.count_tiles(h, w) > 1:
            return [HostCopy.of(self.upscale(f, np.empty((h * self.scale, w * self.scale, c), out_dtype))) for f in frames]
        x = self._upload(np.stack(frames)).permute(0, 3, 1, 2).float() / full_scale(frames[0].dtype)
        y = self._quantise(self.infer(x).permute(0, 2, 3, 1), out_dtype)
        return [HostCopy(frame) for frame in y]

    def count_tiles(self, height: int, width: int) -> int:
        rows, cols = self.plan.grid(height, width)
        return len(rows) * len(cols)

    @torch.inference_mode()
    def upscale(self, pixels: np.ndarray, out: np.ndarray, on_tile: Callable[[int], None] | None = None) -> np.ndarray:
        """Upscale an (H, W, C) uint8/uint16 (or float32 in 0..1) array into the preallocated
        (H*s, W*s, C) `out` of any of those types: the image goes to the device as it is, tiles are
        blended there, and finished output rows come back quantised, strip by strip."""
        h, w, c = pixels.shape
        if out.shape != (h * self.scale, w * self.scale, c):
            raise ValueError(f"output array {out.shape} does not fit {pixels.shape} x{self.scale}")
        if self.count_tiles(h, w) == 1:  # one tile: nothing to blend
            out[...] = self.upscale_frames([pixels], out.dtype)[0].array()
            if on_tile:
                on_tile(1)
            return out
        lr = self._upload(pixels)
        in_max = full_scale(pixels.dtype)
        if 0 < self.context <= self.plan.overlap:
            return self._place_tiles(lr, in_max, out, on_tile)

        def read(y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
            return lr[y0:y1, x0:x1].float() / in_max

        def write(r0: int, r1: int, rows: torch.Tensor) -> None:
            out[r0:r1] = self._download(self._quantise(rows, out.dtype))

        blend_tiles(
            read,
            write,
            self.infer,
            height=h,
            width=w,
            channels=c,
            scale=self.scale,
            plan=self.plan,
            device=self.device,
            context=self.context,
            on_tile=on_tile,
        )
        return out

    def _place_tiles(self, lr: torch.Tensor, in_max: float, out: np.ndarray, on_tile: Callable[[int], None] | None) -> np.ndarray:
        """Tiles whose overlap covers the network's reach: each core's output is exact, so it is quantised
        and placed as it is, with nothing to blend (and no float copy of an output row). A row of tiles
        fills an integer strip on the device that goes to the host as a whole (on a CPU, the strip is `out`)."""
        (h, w, c), s, ov = lr.shape, self.scale, self.plan.overlap
        rows, cols = self.plan.grid(h, w)
        host = torch.from_numpy(out) if self.device.type == "cpu" else None
        for y0, y1 in rows:
            ey0, ey1 = max(0, y0 - ov), min(h, y1 + ov)
            strip = (
                host[y0 * s : y1 * s]
                if host is not None
                else torch.empty((y1 - y0) * s, w * s, c, dtype=_TORCH_PIXELS[out.dtype], device=self.device)
            )
            boxes = [(ey0, ey1, max(0, x0 - ov), min(w, x1 + ov)) for x0, x1 in cols]
            per_call = self.plan.per_call((ey1 - ey0) * (boxes[0][3] - boxes[0][2]))
            for group in _batches(boxes, per_call):
                x = torch.stack([lr[ey0:ey1, boxes[i][2] : boxes[i][3]] for i in group]).permute(0, 3, 1, 2).float() / in_max
                y = self._quantise(self.infer(x).permute(0, 2, 3, 1), out.dtype)
                for i, tile in zip(group, y):
                    (x0, x1), bx0 = cols[i], boxes[i][2]
                    strip[:, x0 * s : x1 * s] = tile[(y0 - ey0) * s : (y1 - ey0) * s, (x0 - bx0) * s : (x1 - bx0) * s]
                if on_tile:
                    on_tile(len(group))
            if host is None:
                out[y0 * s : y1 * s] = HostCopy(strip).array()
        return out


class HostCopy:
    """Device integers on their way to the host.

    On CUDA the copy is queued on a stream of its own, behind an event of the compute stream, into
    page-locked memory: `array()` (the writer thread calls it) waits for that copy only, while the
    compute stream goes on with the next frames. Elsewhere the copy is made at once."""

    _streams: dict[torch.device, torch.cuda.Stream] = {}

    def __init__(self, pixels: torch.Tensor) -> None:
        self.nbytes = pixels.numel() * pixels.element_size()
        self._device = pixels.device
        if pixels.device.type != "cuda":
            self._array: np.ndarray | None = pixels.cpu().numpy()
            return
        self._array = None
        self._pixels = pixels
        self._ready = torch.cuda.Event()
        self._ready.record(torch.cuda.current_stream(pixels.device))

    @classmethod
    def of(cls, array: np.ndarray) -> HostCopy:
        copy_ = cls.__new__(cls)
        copy_.nbytes, copy_._device, copy_._array = array.nbytes, torch.device("cpu"), array
        return copy_

    def array(self) -> np.ndarray:
        if self._array is None:
            stream = HostCopy._streams.get(self._device)
            if stream is None:
                stream = HostCopy._streams[self._device] = torch.cuda.Stream(self._device)
            with torch.cuda.stream(stream):
                stream.wait_event(self._ready)
                host = torch.empty(self._pixels.shape, dtype=self._pixels.dtype, pin_memory=True)
                host.copy_(self._pixels, non_blocking=True)
                self._pixels.record_stream(stream)  # its memory is not reused before this copy is done
            stream.synchronize()
            self._array, self._pixels = host.numpy(), None
        return self._array
