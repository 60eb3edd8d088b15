"""The architectures esr knows: one registration line each, read without importing torch.

Each architecture is a module (or folder) here whose `SRNet` subclass declares what it is and can
do (id, title, detection order, forms, tiling, precision, spandrel layout, LoRA placement: see
`archs.base.SRNet`). BUILTIN names where each class lives, so `esr --help` and train configs can
list and check names without loading torch; `register` adds one defined anywhere else (a plugin,
a test) with one call. Building, detecting and fusing networks is `archs.library`'s job; its names
are importable from here as well.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import UnknownArchitecture as UnknownArchitecture
from .catalogue import BUILTIN, get, names, register, unregister

_LIBRARY = ("build", "detect", "fuse_model", "fused_state_dict", "in_detection_order")
_CLASSES = {
    "SRNet": "esrcli.archs.base:SRNet",
    "SPAN": BUILTIN["span"],
    "ESPAN": BUILTIN["espan"],
    "SPANF": BUILTIN["spanf"],
    "EFDN": BUILTIN["efdn"],
}


def __getattr__(name: str) -> Any:
    if name in _LIBRARY:
        from . import library

        return getattr(library, name)
    if name in _CLASSES:
        module, _, attr = _CLASSES[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'esrcli.archs' has no attribute {name!r}")


__all__ = [
    "BUILTIN",
    "EFDN",
    "ESPAN",
    "SPAN",
    "SPANF",
    "SRNet",
    "UnknownArchitecture",
    "build",
    "detect",
    "fuse_model",
    "fused_state_dict",
    "get",
    "in_detection_order",
    "names",
    "register",
    "unregister",
]
