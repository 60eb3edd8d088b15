"""Which architectures exist and where each class lives: read without importing torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import UnknownArchitecture

if TYPE_CHECKING:
    from .base import SRNet

# id -> "module:class". One line per architecture: this is the registration.. One line per architecture: this is the registration.
BUILTIN: dict[str, str] = {
    "span": "esrcli.archs.span:SPAN",
    "espan": "esrcli.archs.span:ESPAN",
    "spanf": "esrcli.archs.span:SPANF",
    "efdn": "esrcli.archs.efdn:EFDN",
}

_added: dict[str, type[SRNet]] = {}  # registered at run time


def names() -> list[str]:
    """Every architecture id, built in first: for config checks and CLI choices (no torch)."""
    return [*BUILTIN, *(n for n in _added if n not in BUILTIN)]


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get(name: str) -> type[SRNet]:
    """The class of architecture `name`."""
    if name in _added:
        return _added[name]
    if isinstance(name, str) and name in BUILTIN:
        return _load(BUILTIN[name])
    raise UnknownArchitecture(f"unknown architecture {name!r} (known: {', '.join(names())})")


def register(cls: type[SRNet]) -> type[SRNet]:
    """Make `cls` (an `SRNet` subclass with `arch`, `title` and `detect`) one of esr's architectures:
    models load, detect, tile, export and train with it like the built-in ones. Usable as a decorator."""
    from .base import SRNet

    if not (isinstance(cls, type) and issubclass(cls, SRNet)) or not getattr(cls, "arch", "") or not getattr(cls, "title", ""):
        raise UnknownArchitecture(f"{cls!r}: an architecture is an SRNet subclass with an `arch` id and a `title`")
    taken = get(cls.arch) if cls.arch in names() else None
    if taken is not None and taken is not cls:
        raise UnknownArchitecture(f"architecture id {cls.arch!r} is taken by {taken.__module__}.{taken.__qualname__}")
    _added[cls.arch] = cls
    return cls


def unregister(name: str) -> None:
    """Forget an architecture added with `register` (built-in ones stay)."""
    _added.pop(name, None)
