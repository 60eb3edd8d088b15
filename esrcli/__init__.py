"""esr: efficient super-resolution for images and videos.

    import esrcli
    model = esrcli.load_model("esr-tiny")     # any model reference the CLI's -m accepts
    bigger = model.upscale(image)             # PIL image, numpy array or torch tensor in, the same out
    bigger = esrcli.upscale(image, scale=2)   # one call

Importing esrcli is cheap: torch loads with the first model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["EsrError", "Model", "__version__", "load_model", "upscale"]

if TYPE_CHECKING:
    from .api import Model, load_model, upscale
    from .errors import EsrError


def __getattr__(name: str) -> Any:
    if name in ("Model", "load_model", "upscale"):
        from . import api

        return getattr(api, name)
    if name == "EsrError":
        from .errors import EsrError

        return EsrError
    raise AttributeError(f"module 'esrcli' has no attribute {name!r}")
