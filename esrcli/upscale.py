"""Upscaling pictures and batches of files: scale planning, alpha, exact sizes, safe outputs.

Independent of the CLI: `esr upscale` only parses options, shows progress and prints.
"""

from __future__ import annotations

import glob
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .imagefile import FORMATS, ImageError, Picture, format_for_suffix, read_image, write_image
from .registry import LoadedModel, default_registry, load_model
from .tiling import Upscaler

# --- scale planning ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalePlan:
    """How to reach `target` with models of the given native scales."""

    target: float
    model_scale: int
    passes: int

    @property
    def reached(self) -> int:
        return self.model_scale**self.passes

    @property
    def resample(self) -> bool:
        return self.reached != self.target

    def describe(self) -> str:
        steps = " + ".join([f"x{self.model_scale} model"] * self.passes)
        if self.resample:
            verb = "down" if self.reached > self.target else "up"
            steps += f" (x{self.reached}), then Lanczos {verb}-resample to x{format_scale(self.target)}"
        return steps


class ScaleError(ValueError):
    pass


def format_scale(scale: float) -> str:
    return f"{scale:g}"


def plan_scale(native: Iterable[int], target: float) -> ScalePlan:
    """A native variant if one matches; else the smallest larger one, then resample down;
    else repeated passes of the largest, then resample to the exact size."""
    native = sorted(set(native))
    if not (math.isfinite(target) and target > 1):
        raise ScaleError(f"scale must be a number greater than 1, not {target:g}")
    if target > 16:
        raise ScaleError(f"scale {target:g} is above the supported maximum of 16")
    if target in native:
        return ScalePlan(target, int(target), 1)
    larger = [s for s in native if s > target]
    if larger:
        return ScalePlan(target, larger[0], 1)
    biggest = native[-1]
    passes = math.ceil(math.log(target) / math.log(biggest) - 1e-9)
    return ScalePlan(target, biggest, passes)


def load_for_scale(ref: str, scale: float | None, *, device, dtype, progress: bool = True) -> tuple[LoadedModel, ScalePlan]:
    """The model variant and passes that best reach `scale` (default: the model's own scale)."""
    registry = default_registry()
    if ref in registry.entries:
        entry = registry.get(ref)
        plan = plan_scale(entry.scales, scale or entry.default_scale)
        return load_model(ref, scale=plan.model_scale, device=device, dtype=dtype, progress=progress), plan
    loaded = load_model(ref, device=device, dtype=dtype, progress=progress)
    return loaded, plan_scale([loaded.scale], scale or loaded.scale)


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


# --- one picture ---------------------------------------------------------------------------


def resample(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos resize of an (H, W, C) uint8/uint16 array (antialiased when shrinking)."""
    if pixels.shape[1::-1] == size:
        return pixels
    if pixels.dtype == np.uint8:
        mode = "L" if pixels.shape[2] == 1 else "RGB"
        im = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)
        out = np.asarray(im.resize(size, Image.Resampling.LANCZOS))
        return out.reshape(size[1], size[0], -1)
    planes = []
    for c in range(pixels.shape[2]):  # 16 bits: one float plane at a time keeps memory bounded
        plane = Image.fromarray(pixels[..., c].astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS)
        planes.append(np.clip(np.rint(np.asarray(plane)), 0, 65535).astype(np.uint16))
    return np.stack(planes, axis=-1)


def run_passes(upscaler: Upscaler, pixels: np.ndarray, passes: int, on_tile: Callable[[int], None] | None = None) -> np.ndarray:
    """Apply the model `passes` times; intermediate results stay 16-bit so no precision is lost between passes."""
    for i in range(passes):
        last = i == passes - 1
        h, w, c = pixels.shape
        out = np.empty((h * upscaler.scale, w * upscaler.scale, c), pixels.dtype if last else np.uint16)
        pixels = upscaler.upscale(pixels, out, on_tile=on_tile)
    return pixels


def tiles_for(upscaler: Upscaler, picture: Picture, plan: ScalePlan, alpha_by_model: bool) -> int:
    """Tiles the whole picture will take, for progress bars."""
    w, h = picture.size
    total = 0
    for i in range(plan.passes):
        total += upscaler.count_tiles(h * plan.model_scale**i, w * plan.model_scale**i)
    return total * (2 if picture.alpha is not None and alpha_by_model else 1)


def upscale_picture(
    picture: Picture,
    upscaler: Upscaler,
    plan: ScalePlan,
    *,
    alpha_mode: str = "model",
    on_tile: Callable[[int], None] | None = None,
) -> Picture:
    """The upscaled picture: colour (and alpha) through the model, resampled to the exact size."""
    size = target_size(*picture.size, plan.target)
    pixels = resample(run_passes(upscaler, picture.pixels, plan.passes, on_tile), size)
    alpha = None
    if picture.alpha is not None:
        if alpha_mode == "model":
            alpha = resample(run_passes(upscaler, picture.alpha, plan.passes, on_tile), size)
        else:
            alpha = resample(picture.alpha, size)
    return Picture(pixels=pixels, alpha=alpha, icc_profile=picture.icc_profile, exif=picture.exif, format=picture.format)


# --- batches of files ----------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".jfif"}


@dataclass
class Task:
    source: Path
    output: Path


@dataclass
class Outcome:
    source: Path
    output: Path | None
    status: str  # "done", "skipped" or "failed"
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Batch:
    tasks: list[Task] = field(default_factory=list)
    failures: list[Outcome] = field(default_factory=list)  # inputs that could not even be planned


def expand_inputs(inputs: Iterable[str], recursive: bool) -> tuple[list[tuple[Path, Path | None]], list[Outcome]]:
    """Files, directories (their images) and globs -> (file, the folder it was found under)."""
    found: list[tuple[Path, Path | None]] = []
    problems: list[Outcome] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            files = sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                problems.append(
                    Outcome(
                        path,
                        None,
                        "failed",
                        f"{path}: no images in this folder" + ("" if recursive else " (use --recursive for subfolders)"),
                    )
                )
            found.extend((f, path) for f in files)
        elif path.is_file():
            found.append((path, None))
        elif glob.has_magic(raw):
            matches = sorted(Path(p) for p in glob.glob(raw, recursive=recursive) if Path(p).is_file())
            if not matches:
                problems.append(Outcome(path, None, "failed", f"{raw}: no file matches this pattern"))
            found.extend((m, None) for m in matches)
        else:
            problems.append(Outcome(path, None, "failed", f"{raw}: no such file or folder"))
    unique: dict[Path, tuple[Path, Path | None]] = {}
    for f, root in found:
        unique.setdefault(f.resolve(), (f, root))
    return list(unique.values()), problems


def output_path(source: Path, root: Path | None, *, out: Path | None, out_is_file: bool, suffix: str, fmt: str) -> Path:
    """Where an input's result goes: `-o FILE`, mirrored under `-o DIR`, or beside the input."""
    if out is not None and out_is_file:
        return out
    ext = source.suffix if fmt == "same" else FORMATS[fmt]
    if fmt == "same" and format_for_suffix(ext) is None:
        ext = ".png"  # a format esr can read but not write (BMP, GIF...) becomes PNG
    name = f"{source.stem}{suffix}{ext}"
    if out is None:
        return source.with_name(name)
    relative = source.parent.relative_to(root) if root is not None else Path()
    return out / relative / name


def plan_batch(inputs: Iterable[str], *, out: Path | None, recursive: bool, suffix: str, fmt: str) -> Batch:
    """Pair every input with its output; inputs that cannot be planned become failures."""
    files, problems = expand_inputs(inputs, recursive)
    batch = Batch(failures=problems)
    out_is_file = out is not None and not out.is_dir() and out.suffix != "" and not str(out).endswith(("/", "\\"))
    if out_is_file and len(files) > 1:
        batch.failures.append(Outcome(out, None, "failed", f"{out}: -o names one file, but there are {len(files)} inputs: pass a folder"))
        return batch
    sources = {f.resolve() for f, _ in files}
    for f, root in files:
        target = output_path(f, root, out=out, out_is_file=out_is_file, suffix=suffix, fmt=fmt)
        if target.resolve() in sources:
            batch.failures.append(
                Outcome(f, target, "failed", f"{f}: the output would overwrite an input ({target}); change --suffix or -o")
            )
            continue
        batch.tasks.append(Task(f, target))
    return batch


@dataclass(frozen=True)
class Settings:
    plan: ScalePlan
    fmt: str = "same"  # "same" or a key of FORMATS
    quality: int = 95
    alpha_mode: str = "model"  # or "bicubic"
    overwrite: bool = False
    allow_large: bool = False


def process(
    task: Task,
    upscaler: Upscaler,
    settings: Settings,
    *,
    on_start: Callable[[int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> Outcome:
    """Read, upscale and atomically write one file; a failure is an Outcome, never an exception."""
    start = time.perf_counter()

    def failed(message: str) -> Outcome:
        return Outcome(task.source, task.output, "failed", message, time.perf_counter() - start)

    if task.output.exists() and not settings.overwrite:
        return Outcome(task.source, task.output, "skipped", f"{task.output} exists (use --overwrite)")
    try:
        picture = read_image(task.source, allow_large=settings.allow_large)
        out_format = settings.fmt if settings.fmt != "same" else format_for_suffix(task.output.suffix)
        if picture.alpha is not None and out_format == "jpg":
            return failed(f"{task.source}: has transparency, which JPEG cannot store; use --format png or webp")
        if on_start:
            on_start(tiles_for(upscaler, picture, settings.plan, settings.alpha_mode == "model"))
        result = upscale_picture(picture, upscaler, settings.plan, alpha_mode=settings.alpha_mode, on_tile=on_tile)
        task.output.parent.mkdir(parents=True, exist_ok=True)
        path = write_image(result, task.output, format=out_format, quality=settings.quality)
    except ImageError as exc:
        return failed(str(exc))
    except OSError as exc:
        return failed(f"{task.output}: cannot write ({exc.strerror or exc})")
    except MemoryError as exc:
        return failed(f"{task.source}: {exc}")
    return Outcome(task.source, path, "done", None, time.perf_counter() - start)
