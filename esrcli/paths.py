"""Which files are images, which formats esr writes, and how image sets are laid out on disk.

Light on purpose (no numpy, no Pillow): the CLI's options are built from it before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputNameError as OutputNameError

# Files that hold network weights: what makes a model reference a file rather than a registry name.
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")

# Formats esr writes, by --format name, with the suffix a new file gets. HEIC and JPEG XL need an
# optional extra (esrcli[heif], esrcli[jxl]); esrcli.imagefile.plugins loads it when one is met.
FORMATS: dict[str, str] = {
    "png": ".png",
    "jpg": ".jpg",
    "webp": ".webp",
    "tiff": ".tif",
    "avif": ".avif",
    "heic": ".heic",
    "jxl": ".jxl",
}

_WRITABLE: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".jpe": "jpg",
    ".jfif": "jpg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".avif": "avif",
    ".heic": "heic",
    ".heif": "heic",
    ".hif": "heic",  # what some cameras name their 10-bit HEIF files
    ".jxl": "jxl",
}

# Suffixes a folder or glob input is scanned for: everything written above, and what esr reads but
# writes as PNG (BMP, GIF, TGA, PPM/PGM).
IMAGE_SUFFIXES = frozenset(_WRITABLE) | {".bmp", ".gif", ".tga", ".ppm", ".pgm"}


def format_for_suffix(suffix: str) -> str | None:
    """The FORMATS name for a file suffix (".JPEG" -> "jpg"), or None if esr does not write it."""
    s = suffix.strip().lower()
    if s and not s.startswith("."):
        s = "." + s
    return _WRITABLE.get(s)


def check_name_part(text: str, option: str) -> str:
    """`text` (a --suffix, a model name...) as part of a file name: no folder separator and no "..",
    so an output can only land in the folder the user named."""
    separators = {"/", "\\", os.sep, *([os.altsep] if os.altsep else [])}
    bad = [c for c in sorted(separators) if c in text]
    if bad or ".." in text or "\0" in text:
        what = f"a path separator ({bad[0]!r})" if bad else ("'..'" if ".." in text else "a NUL character")
        raise OutputNameError(f"{option} {text!r}: contains {what}; it becomes part of a file name, so it may not name a folder")
    return text


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, once resolved (symlinks and ".." followed), lies in `folder`."""
    return path.resolve().is_relative_to(folder.resolve())


def writable_suffixes() -> list[str]:
    return sorted(_WRITABLE)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of a folder (and its subfolders with `recursive`), sorted."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in Path(folder).glob(pattern) if p.is_file() and is_image(p))


# --- benchmark and validation sets -----------------------------------------------------------


def hr_folder(set_dir: Path) -> Path:
    """A set is a folder with HR/ (and optionally LR_bicubic/X{s}/), or simply a folder of images."""
    return set_dir / "HR" if (set_dir / "HR").is_dir() else set_dir


def find_lr(set_dir: Path, hr_path: Path, scale: int) -> Path | None:
    """The set's own LR file for an HR image (`LR_bicubic/X4/babyx4.png` or `.../baby.png`)."""
    folder = set_dir / "LR_bicubic" / f"X{scale}"
    for stem in (f"{hr_path.stem}x{scale}", hr_path.stem):
        for suffix in (hr_path.suffix, ".png"):
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None
