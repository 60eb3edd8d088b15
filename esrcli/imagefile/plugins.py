"""The Pillow plugins esr loads only when it meets (or is asked to write) a file that needs one.

HEIC/HEIF is read and written by pillow-heif (`pip install 'esrcli[heif]'`), JPEG XL by
pillow-jxl-plugin (`pip install 'esrcli[jxl]'`); AVIF is Pillow's own. Importing either plugin costs
time and memory that `esr --help` and most runs never need, so a file's first bytes (or an output
format) decide whether to load one, and a missing extra is one line that says how to install it.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

from PIL import Image

from ..errors import ImageError


@dataclass(frozen=True)
class Extra:
    title: str  # what the user calls the format
    module: str  # what to import
    package: str  # what pip installs
    extra: str  # esrcli[...]

    @property
    def install(self) -> str:
        return f"pip install 'esrcli[{self.extra}]'"


EXTRAS = {
    "heic": Extra("HEIC/HEIF", "pillow_heif", "pillow-heif", "heif"),
    "jxl": Extra("JPEG XL", "pillow_jxl", "pillow-jxl-plugin", "jxl"),
}

# Brands of an ISO BMFF file's ftyp box: AVIF (Pillow reads it) or HEVC-coded HEIF (pillow-heif).
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"

_LOCK = threading.Lock()
_LOADED: set[str] = set()


def sniff(head: bytes) -> str | None:
    """ "avif", "heic" or "jxl" from a file's first 64 bytes, else None (any other format)."""
    if head[:2] == b"\xff\x0a" or head[:12] == _JXL_CONTAINER:
        return "jxl"
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    size = int.from_bytes(head[:4], "big")
    end = min(max(size, 16), len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIF_BRANDS:
        return "heic"
    return None


def available(kind: str) -> bool:
    """Whether esr can read and write `kind` here (a FORMATS name), loading its plugin if it needs one."""
    if kind == "avif":
        from PIL import features

        return bool(features.check("avif"))
    extra = EXTRAS.get(kind)
    if extra is None:
        return True
    try:
        _load(kind)
    except ImportError:
        return False
    return True


def require(kind: str, name: str) -> None:
    """Load what `kind` needs, or raise a one-line ImageError that says how to install it."""
    if available(kind):
        return
    if kind == "avif":
        raise ImageError(name, "this Pillow was built without AVIF support; install a Pillow wheel (pip install -U pillow)")
    extra = EXTRAS[kind]
    raise ImageError(name, f"{extra.title} needs the optional package {extra.package}: {extra.install}")


def _load(kind: str) -> None:
    with _LOCK:
        if kind in _LOADED:
            return
        module = importlib.import_module(EXTRAS[kind].module)
        if kind == "heic":
            # Thumbnails, depth maps and auxiliary images are not part of the picture esr upscales.
            module.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
        # pillow_jxl registers its opener and saver on import.
        Image.init()
        _LOADED.add(kind)


# The Pillow format that opens each kind: a file is handed to that plugin alone, so that (say) a
# HEIC file is never tried by the AVIF plugin, which also accepts the shared "mif1" brand.
PILLOW_FORMATS = {"avif": "AVIF", "heic": "HEIF", "jxl": "JXL"}


def prepare_open(name: str, head: bytes, suffix: str) -> str | None:
    """Before Pillow opens a file: load the plugin its content (or, failing that, its suffix) calls
    for; the Pillow format to open it with when its content says, else None."""
    kind = sniff(head)
    if kind is not None:
        require(kind, name)
        return PILLOW_FORMATS[kind]
    from ..paths import format_for_suffix

    by_suffix = format_for_suffix(suffix)
    if by_suffix in EXTRAS:
        available(by_suffix)  # content not recognised: Pillow says what is wrong with it
    return None
