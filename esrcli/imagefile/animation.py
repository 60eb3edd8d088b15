"""Animated GIF, WebP and PNG (APNG): read as full frames, written back with their timing.

Every frame is read as a viewer shows it: Pillow composites a frame that updates only part of the
canvas onto what its disposal leaves, so each `Picture` here is the whole canvas, in 8-bit RGB (or
RGBA where any frame has transparency). Written back, every frame is a full frame with its own
duration, and the loop count is kept; a GIF gets one palette built over all its frames (no
dithering unless asked), with a transparent index where the animation has transparency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from ..atomic import atomic_write
from ..errors import ImageError
from .picture import Picture, _os_reason

# Suffixes whose files may hold an animation, and the formats an animation is written in.
ANIMATED_SUFFIXES = frozenset({".gif", ".webp", ".png", ".apng"})
# Suffixes an animation is written as a video for (esrcli.video.frames).
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".webm"})
ANIMATION_FORMATS = {"gif": "GIF", "webp": "WEBP", "png": "PNG"}
_SUFFIX_FORMAT = {".gif": "gif", ".webp": "webp", ".png": "png", ".apng": "png"}


@dataclass
class Animation:
    """The frames of an animation, each the full canvas, with their durations in milliseconds."""

    frames: list[Picture]
    durations: list[int]
    loop: int | None = None  # 0: forever; None: the file said nothing (a GIF then plays once)
    format: str = "gif"  # the format it was read from ("gif", "webp", "png")
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size

    @property
    def nbytes(self) -> int:
        return sum(f.pixels.nbytes + (0 if f.alpha is None else f.alpha.nbytes) for f in self.frames)


def format_for_animation(suffix: str) -> str | None:
    """The animation format a suffix names ("gif", "webp", "png"), or None."""
    return _SUFFIX_FORMAT.get(suffix.lower())


def is_animated(path: str | os.PathLike[str]) -> bool:
    """Whether the file is an animated GIF, WebP or PNG (more than one frame); False for anything else,
    unreadable files included (the ordinary reader then says what is wrong)."""
    if Path(path).suffix.lower() not in ANIMATED_SUFFIXES:
        return False
    try:
        with Image.open(path) as im:
            return im.format in ("GIF", "WEBP", "PNG") and bool(getattr(im, "is_animated", False))
    except Exception:  # noqa: BLE001 - not ours to report here
        return False


def is_animated_pil(im: Image.Image) -> bool:
    return im.format in ("GIF", "WEBP", "PNG") and bool(getattr(im, "is_animated", False))


def read_animation(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Animation:
    """Every frame of an animated file, composited onto the full canvas, with its duration."""
    name = os.fspath(path)
    try:
        with Image.open(name) as im:
            return animation_from_pil(im, name=name, max_pixels=max_pixels)
    except ImageError:
        raise
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot read")) from e
    except Exception as e:  # noqa: BLE001 - decoders raise ValueError, struct.error, ...
        raise ImageError(name, f"cannot read animation ({e or type(e).__name__})") from e


def animation_from_pil(im: Image.Image, *, name: str = "<PIL image>", max_pixels: int | None = None) -> Animation:
    """An open animated PIL image as an `Animation` (its current frame is left where it was)."""
    w, h = im.size
    count = int(getattr(im, "n_frames", 1) or 1)
    if max_pixels is not None and w * h * count > max_pixels:
        raise ImageError(
            name,
            f"{count} frames of {w}x{h} ({w * h * count / 1e6:.1f} megapixels in all) exceed the "
            f"{max_pixels / 1e6:g} MP safety limit; pass --allow-large to process it",
        )
    fmt = {"GIF": "gif", "WEBP": "webp", "PNG": "png"}.get(im.format or "", "png")
    loop = im.info.get("loop")
    position = im.tell()
    stacks: list[np.ndarray] = []
    durations: list[int] = []
    try:
        for frame in ImageSequence.Iterator(im):
            stacks.append(np.asarray(frame.convert("RGBA")))  # composited: the canvas as a viewer shows it
            durations.append(int(round(float(frame.info.get("duration", 0) or 0))))
    finally:
        im.seek(position)
    transparent = any(s[..., 3].min() < 255 for s in stacks)
    frames = [
        Picture(
            pixels=np.ascontiguousarray(s[..., :3]),
            alpha=np.ascontiguousarray(s[..., 3:]) if transparent else None,
            format=im.format or "PNG",
        )
        for s in stacks
    ]
    return Animation(frames=frames, durations=durations, loop=None if loop is None else int(loop), format=fmt)


def frame_stack(picture: Picture) -> np.ndarray:
    """A frame as HxWx3 (RGB) or HxWx4 (RGBA) uint8."""
    from .picture import to_8bit

    if picture.bit_depth != 8:
        picture = to_8bit(picture)
    pixels = picture.pixels if picture.pixels.shape[2] == 3 else np.repeat(picture.pixels, 3, axis=2)
    return pixels if picture.alpha is None else np.concatenate([pixels, picture.alpha], axis=2)


def write_animation(animation: Animation, path: str | os.PathLike[str], *, format: str, quality: int = 95, dither: bool = False) -> Path:
    """Write atomically, every frame full with its duration, the loop count kept."""
    target = Path(path)
    name = os.fspath(path)
    if format not in ANIMATION_FORMATS:
        raise ImageError(name, f"cannot write an animation as {format}; use .gif, .webp or .png (APNG)")
    if target.is_dir():
        raise ImageError(name, "cannot write (it is a directory)")
    images = [Image.fromarray(np.ascontiguousarray(frame_stack(f))) for f in animation.frames]
    options: dict[str, object] = {"save_all": True, "append_images": images[1:], "duration": list(animation.durations)}
    if animation.loop is not None:
        options["loop"] = animation.loop
    if format == "gif":
        images = _gif_frames(images, dither)
        options["append_images"] = images[1:]
        transparent = images[0].info.get("transparency") is not None
        # Full frames: where one is transparent the frame beneath must not show through.
        options.update(disposal=2 if transparent else 1, optimize=False)
        if transparent:
            options["transparency"] = _TRANSPARENT
    elif format == "webp":
        options.update(quality=quality, exact=images[0].mode == "RGBA", minimize_size=False, allow_mixed=False)
        options.setdefault("loop", 0)
    else:  # APNG: each frame replaces the canvas
        options.update(disposal=0, blend=0, default_image=False)
    try:
        with atomic_write(target) as tmp:
            with open(tmp, "wb") as f:
                images[0].save(f, format=ANIMATION_FORMATS[format], **options)
    except ImageError as e:
        raise ImageError(name, e.problem) from e
    except OSError as e:
        raise ImageError(name, _os_reason(e, "cannot write")) from e
    except Exception as e:  # noqa: BLE001 - encoders raise ValueError, struct.error, ...
        raise ImageError(name, f"cannot write ({e or type(e).__name__})") from e
    return target


_TRANSPARENT = 255  # the palette index kept for transparency in a GIF that has it


def _gif_frames(images: list[Image.Image], dither: bool) -> list[Image.Image]:
    """Palette frames sharing one palette built over every frame (255 colours and a transparent index
    where there is transparency), Floyd-Steinberg dithered only when asked."""
    transparent = images[0].mode == "RGBA"
    rgb = [im.convert("RGB") for im in images]
    w, h = rgb[0].size
    # The palette is built from a sample of every frame, so that no frame's colours are left out.
    step = max(1, int(np.sqrt(w * h * len(rgb) / 4_000_000)))
    sample = np.concatenate([np.asarray(im)[::step, ::step].reshape(-1, 3) for im in rgb])
    sheet = Image.fromarray(sample.reshape(1, -1, 3) if sample.shape[0] < 65_000 else _square(sample))
    colours = 255 if transparent else 256
    palette = sheet.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    entries = palette.getpalette()[: colours * 3]
    entries += entries[:3] * ((768 - len(entries)) // 3)  # unused entries repeat the first colour
    palette.putpalette(entries)
    out = []
    for im, src in zip(rgb, images):
        frame = im.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE)
        if transparent:
            index = np.asarray(frame).copy()
            index[index == _TRANSPARENT] = 0  # a colour tie resolved to the spare entry: the same colour
            index[np.asarray(src)[..., 3] < 128] = _TRANSPARENT
            frame = Image.fromarray(index, "P")
            frame.putpalette(entries)
            frame.info["transparency"] = _TRANSPARENT
        out.append(frame)
    return out


def _square(sample: np.ndarray) -> np.ndarray:
    side = int(np.ceil(np.sqrt(sample.shape[0])))
    padded = np.concatenate([sample, np.repeat(sample[-1:], side * side - sample.shape[0], axis=0)])
    return padded.reshape(side, side, 3)
