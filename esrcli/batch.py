"""Upscaling pictures and batches of files: alpha, exact sizes, output naming, safe outputs.

Independent of the CLI: `esr upscale` only parses options, shows progress and prints. An animated
GIF, WebP or APNG is one task whose frames go through the model in order (`upscale_animation`) and
are written back in an animated format, or as a video for a video suffix (esrcli.video.frames).
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine import Stages, run_stages
from .errors import VideoError
from .imagefile import ImageError, Picture, _max_pixels, check_storable, read_image, write_image
from .imagefile.animation import (
    ANIMATED_SUFFIXES,
    VIDEO_SUFFIXES,
    Animation,
    format_for_animation,
    is_animated,
    read_animation,
    write_animation,
)
from .paths import FORMATS, check_name_part, format_for_suffix, inside, list_images
from .scaling import Pipeline, resample, target_size

# --- one picture ---------------------------------------------------------------------------

ALPHA_MODES = ("model", "bicubic")
# LR pixels around an alpha value that must all be fully opaque (or transparent) for the output
# there to be exactly opaque (transparent): a bicubic kernel reaches 2 pixels, and so, to within
# rounding, does a model's response to an edge.
ALPHA_EXACT_RADIUS = 2


def tiles_for(pipeline: Pipeline, picture: Picture, alpha_by_model: bool) -> int:
    """Tiles the whole picture will take, for progress bars."""
    w, h = picture.size
    alpha_varies = picture.alpha is not None and picture.alpha.min() != picture.alpha.max()
    return pipeline.count_tiles(h, w) * (2 if alpha_varies and alpha_by_model else 1)


def upscale_picture(
    picture: Picture,
    pipeline: Pipeline,
    *,
    alpha_mode: str = "model",
    on_tile: Callable[[int], None] | None = None,
) -> Picture:
    """The upscaled picture: colour (and alpha) through the model, resampled to the exact size. Under
    --denoise auto the pipeline is the one of the strength this picture calls for (the result says which)."""
    pipeline, denoise = pipeline.for_input(picture.pixels, picture.jpeg_tables)
    pixels = pipeline.run(picture.pixels, on_tile)
    alpha = None if picture.alpha is None else upscale_alpha(picture.alpha, pipeline, alpha_mode, on_tile)
    return Picture(
        pixels=pixels,
        alpha=alpha,
        icc_profile=picture.icc_profile,
        exif=picture.exif,
        format=picture.format,
        denoise=denoise,
        source_bits=picture.source_bits,  # a 10 or 12-bit AVIF/HEIC source is written back at its depth
    )


def upscale_animation(
    animation: Animation,
    pipeline: Pipeline,
    *,
    alpha_mode: str = "model",
    on_tile: Callable[[int], None] | None = None,
) -> Animation:
    """Every frame upscaled in order through the same pipeline, durations and loop count kept. Under
    --denoise auto one strength serves the whole animation (as for a video), so that it does not flicker."""
    sample = animation.frames[:: max(1, len(animation.frames) // 8)]
    pipeline = pipeline.for_frames([frame.pixels for frame in sample])
    _, denoise = pipeline.for_input(sample[0].pixels)  # a fixed pipeline now: it answers with itself
    colours = _frames_through(pipeline, [frame.pixels for frame in animation.frames], on_tile)
    frames = [
        Picture(
            pixels=colour,
            alpha=None if frame.alpha is None else upscale_alpha(frame.alpha, pipeline, alpha_mode, on_tile),
            icc_profile=frame.icc_profile,
            exif=frame.exif,
            format=frame.format,
            denoise=denoise,
        )
        for frame, colour in zip(animation.frames, colours)
    ]
    return Animation(frames=frames, durations=list(animation.durations), loop=animation.loop, format=animation.format)


def _frames_through(pipeline: Pipeline, frames: list[np.ndarray], on_tile: Callable[[int], None] | None) -> list[np.ndarray]:
    """The colour of every frame, in order: as many whole frames per forward call as the device's memory
    allows (video's batching, `Pipeline.frames_per_call`), one at a time where it allows one."""
    h, w = frames[0].shape[:2]
    per_call = pipeline.frames_per_call(h, w)
    if per_call <= 1:
        return [pipeline.run(f, on_tile) for f in frames]
    out = []
    for i in range(0, len(frames), per_call):
        group = frames[i : i + per_call]
        out += [copy.array() for copy in pipeline.run_frames(group)]
        if on_tile is not None:
            on_tile(len(group) * pipeline.count_tiles(h, w))
    return out


def upscale_alpha(alpha: np.ndarray, pipeline: Pipeline, mode: str = "model", on_tile: Callable[[int], None] | None = None) -> np.ndarray:
    """Transparency at the output size: a constant channel stays that constant; otherwise the model
    (or bicubic) draws the edges, and fully opaque or transparent areas stay exactly so."""
    if mode not in ALPHA_MODES:
        raise ValueError(f"alpha mode must be one of {ALPHA_MODES}, not {mode!r}")
    h, w = alpha.shape[:2]
    size = target_size(w, h, pipeline.plan.target)
    low, high = int(alpha.min()), int(alpha.max())
    if low == high:
        return np.full((size[1], size[0], 1), low, alpha.dtype)
    out = pipeline.run(alpha, on_tile) if mode == "model" else resample(alpha, size, "bicubic")
    if not out.flags.writeable:  # Pillow's arrays are read-only views
        out = out.copy()
    peak = np.iinfo(alpha.dtype).max
    for value in (0, peak):
        keep = _surrounded_by(alpha[..., 0] == value, ALPHA_EXACT_RADIUS)
        rows = np.minimum((np.arange(size[1]) + 0.5) * h // size[1], h - 1).astype(np.intp)
        cols = np.minimum((np.arange(size[0]) + 0.5) * w // size[0], w - 1).astype(np.intp)
        for r0 in range(0, size[1], 1024):  # nearest-neighbour enlargement of the mask, in bands
            band = keep[rows[r0 : r0 + 1024]][:, cols]
            out[r0 : r0 + 1024, :, 0][band] = value
    return out


def _surrounded_by(mask: np.ndarray, radius: int) -> np.ndarray:
    """True where `mask` holds over the whole (2r+1)^2 neighbourhood (the image edge repeats)."""
    padded = np.pad(mask, radius, mode="edge")
    h, w = mask.shape
    result = np.ones_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            result &= padded[dy : dy + h, dx : dx + w]
    return result


# --- batches of files ----------------------------------------------------------------------


@dataclass
class Task:
    source: Path
    output: Path
    format: str  # a key of FORMATS, decided once when the batch is planned ("gif" or "video" for an animation too)
    animated: bool = False  # an animated GIF, WebP or APNG: every frame is upscaled


@dataclass
class Outcome:
    source: Path
    output: Path | None
    status: str  # "done", "skipped" or "failed"
    error: str | None = None
    seconds: float = 0.0
    denoise: dict | None = None  # the --denoise strength it was upscaled with (and, under auto, what decided it)


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
        if not raw.strip():  # an unset shell variable: never "the current folder"
            problems.append(Outcome(path, None, "failed", f"{raw!r}: an empty input name (an unset variable?)"))
        elif path.is_dir():
            files = list_images(path, recursive)
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
            root = glob_root(raw) if recursive else None
            found.extend((m, root) for m in matches)
        else:
            problems.append(Outcome(path, None, "failed", f"{raw}: no such file or folder"))
    unique: dict[Path, tuple[Path, Path | None]] = {}
    for f, root in found:
        unique.setdefault(f.resolve(), (f, root))
    return list(unique.values()), problems


def glob_root(pattern: str) -> Path:
    """The folder a glob's matches are mirrored from: its leading components without wildcards."""
    fixed = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


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
    check_name_part(suffix, "--suffix")
    files, problems = expand_inputs(inputs, recursive)
    batch = Batch(failures=problems)
    out_is_file = out is not None and not out.is_dir() and out.suffix != "" and not str(out).endswith(("/", "\\"))
    if out_is_file and len(files) > 1:
        batch.failures.append(Outcome(out, None, "failed", f"{out}: -o names one file, but there are {len(files)} inputs: pass a folder"))
        return batch
    planned = plan_files(files, out=out, out_is_file=out_is_file, recursive=recursive, suffix=suffix, fmt=fmt)
    planned.failures[:0] = batch.failures
    return planned


def plan_files(
    files: list[tuple[Path, Path | None]], *, out: Path | None, out_is_file: bool = False, recursive: bool, suffix: str, fmt: str
) -> Batch:
    """`plan_batch` once the inputs are files, each with the folder it was found under (or None): also
    how `esr upscale --watch` plans each file that arrives."""
    batch = Batch()
    sources = {f.resolve() for f, _ in files}
    writers: dict[Path, list[Path]] = {}
    for f, root in files:
        animated = f.suffix.lower() in ANIMATED_SUFFIXES and is_animated(f)
        if animated and fmt not in ("same", "png", "webp"):
            batch.failures.append(
                Outcome(f, None, "failed", f"{f}: an animated image cannot be written as {fmt}; use --format png or webp")
            )
            continue
        target = output_path(f, root, out=out, out_is_file=out_is_file, suffix=suffix, fmt=fmt)
        if animated and fmt == "same" and not out_is_file:
            target = target.with_suffix(f.suffix)  # an animated GIF stays a GIF (a still one becomes PNG)
        if out is not None and not out_is_file and not inside(target, out):  # a glob with ".." mirrored under -o
            batch.failures.append(
                Outcome(
                    f,
                    target,
                    "failed",
                    f"{f}: its mirrored output {target} would be outside {out}; name the input without '..' or drop --recursive",
                )
            )
            continue
        if target.resolve() in sources:
            batch.failures.append(
                Outcome(f, target, "failed", f"{f}: the output would overwrite an input ({target}); change --suffix or -o")
            )
            continue
        out_format = fmt if fmt != "same" else format_for_suffix(target.suffix)
        if animated:
            out_format = "video" if target.suffix.lower() in VIDEO_SUFFIXES else format_for_animation(target.suffix)
            if out_format is None:
                batch.failures.append(
                    Outcome(
                        f,
                        target,
                        "failed",
                        f"{target}: {f} is animated, and {target.suffix or 'a file without a suffix'} cannot hold an animation; "
                        "use .gif, .webp, .png (APNG) or a video (.mp4, .mkv, .mov, .webm)",
                    )
                )
                continue
        if out_format is None:  # only an -o FILE can name a suffix esr does not write
            batch.failures.append(
                Outcome(
                    f,
                    target,
                    "failed",
                    f"{target}: esr does not write {target.suffix or 'files without a suffix'}; "
                    f"use one of {', '.join(FORMATS.values())} or pass --format",
                )
            )
            continue
        writers.setdefault(target.resolve(), []).append(f)
        batch.tasks.append(Task(f, target, out_format, animated))
    clashes = [(task.output, writers[task.output.resolve()]) for task in batch.tasks if len(writers[task.output.resolve()]) > 1]
    if clashes:
        # Never let one input's result silently replace (or skip) another's: refuse before any work.
        seen: set[Path] = set()
        for target, names in clashes:
            if target.resolve() not in seen:
                seen.add(target.resolve())
                batch.failures.append(Outcome(names[0], target, "failed", clash_message(target, names, recursive)))
        batch.tasks = []
    return batch


def clash_message(target: Path, names: list[Path], recursive: bool) -> str:
    """Why `target` is written by none of `names`, and what to do."""
    if len({n.parent.resolve() for n in names}) == 1:
        hint = "they differ only in format: upscale them in separate runs with different --suffix"
    elif not recursive:
        hint = "use --recursive to mirror the folders under -o"
    else:
        hint = "use a different -o or --suffix for each"
    return f"{target}: would be written by {' and '.join(str(n) for n in names)}; {hint}"


@dataclass(frozen=True)
class Settings:
    quality: int = 95
    alpha_mode: str = "model"  # or "bicubic"
    overwrite: bool = False
    allow_large: bool = False
    dither: bool = False  # GIF output: Floyd-Steinberg dithering onto its palette


def load(task: Task, settings: Settings) -> Picture | Animation | Outcome:
    """The picture (or animation) to upscale, or the Outcome that ends the task early (skipped, unreadable)."""
    if task.output.exists() and not settings.overwrite:
        return Outcome(task.source, task.output, "skipped", f"{task.output} exists (use --overwrite)")
    try:
        if task.animated:
            return read_animation(task.source, max_pixels=None if settings.allow_large else _max_pixels())
        picture = read_image(task.source, allow_large=settings.allow_large)
        check_storable(picture, task.format, str(task.source))
    except ImageError as exc:
        return Outcome(task.source, task.output, "failed", str(exc))
    return picture


def compute_one(
    task: Task, picture: Picture | Animation, pipeline: Pipeline, settings: Settings, on_tile: Callable[[int], None] | None = None
) -> Picture | Animation | Outcome:
    try:
        if isinstance(picture, Animation):
            return upscale_animation(picture, pipeline, alpha_mode=settings.alpha_mode, on_tile=on_tile)
        return upscale_picture(picture, pipeline, alpha_mode=settings.alpha_mode, on_tile=on_tile)
    except (ImageError, MemoryError) as exc:
        return Outcome(task.source, task.output, "failed", f"{task.source}: {exc}")


def save(task: Task, result: Picture | Animation, settings: Settings) -> Outcome:
    """Write atomically; a failure is an Outcome, never an exception."""
    try:
        try:
            task.output.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in reversed(task.output.parents) if p.exists() and not p.is_dir()), task.output.parent)
            return Outcome(task.source, task.output, "failed", f"{task.output}: cannot write ({blocker} is a file, not a folder)")
        if isinstance(result, Animation):
            path = _write_animation(task, result, settings)
        else:
            path = write_image(result, task.output, format=task.format, quality=settings.quality)
    except (ImageError, VideoError) as exc:
        return Outcome(task.source, task.output, "failed", str(exc))
    except OSError as exc:
        return Outcome(task.source, task.output, "failed", f"{task.output}: cannot write ({exc.strerror or exc})")
    denoise = result.frames[0].denoise if isinstance(result, Animation) else result.denoise
    return Outcome(task.source, path, "done", denoise=denoise)


def _write_animation(task: Task, result: Animation, settings: Settings) -> Path:
    if task.format == "video":
        from .imagefile.animation import frame_stack
        from .video.frames import write_frames_video

        try:
            return write_frames_video([frame_stack(f) for f in result.frames], result.durations, task.output)
        except VideoError as exc:  # its message names the output already
            raise VideoError(f"{task.source}: {exc}") from exc
    return write_animation(result, task.output, format=task.format, quality=settings.quality, dither=settings.dither)


def tiles_of(pipeline: Pipeline, item: Picture | Animation, alpha_by_model: bool) -> int:
    """`tiles_for` a picture, or for every frame of an animation."""
    if isinstance(item, Animation):
        return sum(tiles_for(pipeline, frame, alpha_by_model) for frame in item.frames)
    return tiles_for(pipeline, item, alpha_by_model)


def process(
    task: Task,
    pipeline: Pipeline,
    settings: Settings,
    *,
    on_start: Callable[[int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> Outcome:
    """Read, upscale and write one file, one step after the other."""
    start = time.perf_counter()
    picture = load(task, settings)
    if isinstance(picture, (Picture, Animation)):
        if on_start:
            on_start(tiles_of(pipeline, picture, settings.alpha_mode == "model"))
        result = compute_one(task, picture, pipeline, settings, on_tile)
        outcome = save(task, result, settings) if isinstance(result, (Picture, Animation)) else result
    else:
        outcome = picture
    outcome.seconds = time.perf_counter() - start
    return outcome


def run_batch(
    tasks: list[Task],
    pipeline: Pipeline,
    settings: Settings,
    *,
    on_start: Callable[[Task, int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    read_ahead: int = 2,
) -> list[Outcome]:
    """Every task through the engine: the next files decode while the model runs, and the previous
    result is encoded and written meanwhile. Outcomes come in task order; on an interrupt the file
    being written is finished (atomically), those queued behind it are dropped, and the interrupt
    propagates. No more than about two full-size outputs exist at once (a 4000x3000 photo at x4 is
    576 MB in 8 bits): a result of 256 MB or more is written before the next picture is upscaled."""

    def source() -> Iterator[tuple[Task, float, Picture | Animation | Outcome]]:
        for task in tasks:
            yield task, time.perf_counter(), load(task, settings)

    return run_loaded(source(), pipeline, settings, on_start=on_start, on_tile=on_tile, on_outcome=on_outcome, read_ahead=read_ahead)


def run_loaded(
    loaded: Iterable[tuple[Task | None, float, Picture | Animation | Outcome]],
    pipeline: Pipeline,
    settings: Settings,
    *,
    on_start: Callable[[Task, int], None] | None = None,
    on_tile: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    read_ahead: int = 2,
    cancel: Callable[[], None] | None = None,
) -> list[Outcome]:
    """`run_batch` for a source that loads its own pictures (`load`), iterated in the reader thread: each
    item is (task, when it started, its picture or the Outcome that ended it early; the task is None only
    then). `cancel` is called when the run stops early, to end a source that may block (`esr upscale --watch`)."""
    outcomes: list[Outcome] = []

    def compute(items: list[tuple[Task, float, Picture | Animation | Outcome]]) -> list[tuple[Task, float, Picture | Animation | Outcome]]:
        task, start, picture = items[0]
        if isinstance(picture, (Picture, Animation)):
            if on_start:
                on_start(task, tiles_of(pipeline, picture, settings.alpha_mode == "model"))
            picture = compute_one(task, picture, pipeline, settings, on_tile)
        return [(task, start, picture)]

    def sink(item: tuple[Task, float, Picture | Animation | Outcome]) -> None:
        task, start, result = item
        outcome = save(task, result, settings) if isinstance(result, (Picture, Animation)) else result
        outcome.seconds = time.perf_counter() - start
        outcomes.append(outcome)
        if on_outcome:
            on_outcome(outcome)

    def weigh(item: tuple[Task, float, Picture | Animation | Outcome]) -> int:
        result = item[2]
        if isinstance(result, Animation):
            return result.nbytes
        return result.pixels.nbytes + (0 if result.alpha is None else result.alpha.nbytes) if isinstance(result, Picture) else 0

    run_stages(loaded, Stages(compute, sink, read_ahead=read_ahead, write_behind=1, weigh=weigh, cancel=cancel))
    return outcomes
