"""The model registry: models.toml, its entries and where each variant's fused weights live.

Light on purpose (no torch): `esr models list` and every `--help` read it. Loading networks
from references is esrcli.loading's job.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .cache import fused_path
from .errors import RegistryError as RegistryError
from .sources import HubSource, PackageSource, Source, UrlSource

DEFAULT_MODEL = "esr-tiny"
"""The model used when none is named: trained by `esr train`, shipped in the package, works offline."""


@dataclass(frozen=True)
class Weights:
    """One released weight file of a model, at one scale, with every place it can come from."""

    scale: int
    sha256: str
    size: int | None
    filename: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    title: str
    arch: str
    args: dict[str, Any]
    licence: str
    paper: str
    weights: tuple[Weights, ...]
    notes: str = ""
    # Clamp each SPAB block's output, per channel, to the range it reaches on photographs (bounds
    # calibrated per weight file, see esrcli.loading): releases that turn saturated colour edges into
    # speckle need it; photographs never reach the bounds, so their output does not change.
    clamp_features: bool = False
    # The registry name of the same network trained on degraded inputs from this one's weights: --denoise
    # mixes the two (esrcli.denoise), at the scales both have.
    robust: str = ""

    @property
    def scales(self) -> list[int]:
        return [w.scale for w in self.weights]

    @property
    def default_scale(self) -> int:
        return self.weights[0].scale

    def variant(self, scale: int | None = None) -> Weights:
        if scale is None:
            return self.weights[0]
        for weights in self.weights:
            if weights.scale == scale:
                return weights
        available = ", ".join(f"x{s}" for s in self.scales)
        raise RegistryError(f"model '{self.name}' has no x{scale} weights (available: {available})")


def _source(raw: dict[str, Any], weights: dict[str, Any], where: str) -> Source:
    sha, size = weights["sha256"].lower(), weights.get("size")
    if "url" in raw:
        return UrlSource(url=raw["url"], sha256=sha, size=size, filename=weights.get("file"))
    if "package" in raw:
        return PackageSource(path=raw["package"], sha256=sha, size=size)
    if "hub" in raw:
        return HubSource(repo_id=raw["hub"], filename=raw["path"], revision=raw.get("revision", "main"), sha256=sha, size=size)
    raise RegistryError(f"{where}: a source needs 'url', 'hub' or 'package'")


def _flag(raw: dict[str, Any], key: str) -> bool:
    """A true/false key: a string such as "false" would read as true, so anything else is refused."""
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false, not {value!r}")
    return value


def _entry(name: str, raw: Any, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: '{name}' must be a table of a model ([{name}]), not {type(raw).__name__}")
    if not raw.get("weights"):
        raise RegistryError(f"{where}: model '{name}' has no [[{name}.weights]]")
    try:
        weights = tuple(
            Weights(
                scale=int(w["scale"]),
                sha256=w["sha256"].lower(),
                size=w.get("size"),
                filename=w.get("file") or name,
                sources=tuple(_source(s, w, f"{where} [{name}]") for s in w["sources"]),
            )
            for w in raw["weights"]
        )
        return ModelEntry(
            name=name,
            title=raw["title"],
            arch=raw["arch"],
            args=dict(raw.get("args", {})),
            licence=raw["licence"],
            paper=raw.get("paper", ""),
            weights=weights,
            notes=raw.get("notes", ""),
            clamp_features=_flag(raw, "clamp_features"),
            robust=str(raw.get("robust", "")),
        )
    except KeyError as exc:
        raise RegistryError(f"{where}: model '{name}' lacks {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # a value of the wrong type or form
        raise RegistryError(f"{where}: model '{name}' is malformed ({' '.join(str(exc).split())})") from None


@dataclass
class Registry:
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RegistryError(f"{path}: cannot read the model registry ({' '.join(str(exc).split())})") from None
        entries = {name: _entry(name, body, str(path)) for name, body in raw.items()}
        for entry in entries.values():
            if entry.robust and (entry.robust == entry.name or entry.robust not in entries):
                raise RegistryError(f"{path}: model '{entry.name}' names robust = '{entry.robust}', which is not another model in it")
        return cls(entries, path)

    def get(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.entries, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(self.entries)})"
            raise RegistryError(f"unknown model '{name}'{hint}; a weight file path or hf://owner/repo/file also works") from None

    def __iter__(self):
        return iter(self.entries.values())


def default_registry_path() -> Path:
    """models.toml inside the installed package, or at the top of a source checkout."""
    packaged = Path(__file__).with_name("models.toml")
    return packaged if packaged.is_file() else Path(__file__).resolve().parents[1] / "models.toml"


@cache
def default_registry() -> Registry:
    return Registry.from_file(os.environ.get("ESR_MODELS_TOML") or default_registry_path())


def embedded_source(weights: Weights) -> PackageSource | None:
    """The packaged file of an embedded model: already fused (written by esr export), always at hand."""
    return next((s for s in weights.sources if isinstance(s, PackageSource)), None)


def fused_cache_path(entry: ModelEntry, weights: Weights) -> Path:
    """Where the fused weights of a variant live: the packaged file itself for embedded models."""
    packaged = embedded_source(weights)
    if packaged is not None:
        return packaged.file
    return fused_path(entry.name, weights.scale, weights.sha256)
