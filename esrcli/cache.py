"""Where esr keeps what it downloads and makes, decided here only.

Under one root (ESR_CACHE, else the platform's cache folder): `downloads/<pin>/<file>` (plain-URL
weights, keyed by their SHA-256 so two models sharing a file name never collide), `verified/<sha>.json`
(stamps that spare re-hashing a checked file) and `fused/<model>-x<scale>-<pin>.safetensors` (registry
weights fused once). The Hub's files stay in huggingface_hub's own cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import CacheError


def cache_dir() -> Path:
    """Where esr keeps downloads: ESR_CACHE, else the platform's cache folder."""
    if os.environ.get("ESR_CACHE"):
        root = Path(os.environ["ESR_CACHE"]).expanduser()
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / "esr"
    elif sys.platform == "win32":
        root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "esr" / "Cache"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "esr"  # XDG: relative values are ignored
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(f"{root}: cannot use this cache folder ({exc.strerror or exc}); set ESR_CACHE to a writable folder") from None
    return root


def cache_path(area: str, *parts: str) -> Path:
    """A file in one of the cache's areas: "downloads", "verified" or "fused"."""
    if area not in ("downloads", "verified", "fused"):
        raise ValueError(f"no cache area {area!r}")
    return cache_dir().joinpath(area, *parts)


def fused_path(model: str, scale: int, sha256: str) -> Path:
    """The fused weights of a registry model's variant (pinned by its release's SHA-256)."""
    return cache_path("fused", f"{model}-x{scale}-{sha256[:16]}.safetensors")
