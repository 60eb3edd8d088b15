"""What a model reference names, decided once for every caller.

A reference is what `-m`, `esrcli.load_model`, `esr export`, train configs (model.init, lora.student,
lora.teacher, distill.teacher) and Ray workers accept: a registry name (models.toml), an `esr train`
run folder, a weight file, or `hf://owner/repo/file[@revision]`. `ModelRef.parse` decides which, in
one order: hf:// first, then a registry name (a name wins over a same-named folder in the working
directory), then a folder, then a file; anything else is an unknown name, with suggestions.
esrcli.loading turns a parsed reference into a network. Light on purpose (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import RegistryError
from .paths import WEIGHT_SUFFIXES
from .registry import ModelEntry, Registry, default_registry
from .sources import HubSource

Kind = Literal["registry", "run", "file", "hub"]


def looks_like_file(text: str) -> bool:
    """A weight-file suffix, a path separator or an existing path: meant as a file, not a name."""
    return Path(text).suffix.lower() in WEIGHT_SUFFIXES or os.sep in text or Path(text).exists()


@dataclass(frozen=True)
class ModelRef:
    text: str  # as the user wrote it
    kind: Kind
    entry: ModelEntry | None = None  # kind "registry"
    hub: HubSource | None = None  # kind "hub"

    @classmethod
    def parse(cls, ref: str | Path | ModelRef, registry: Registry | None = None) -> ModelRef:
        if isinstance(ref, ModelRef):
            return ref
        text = str(ref)
        registry = registry or default_registry()
        if not text.strip():
            raise RegistryError("an empty model name (an unset variable?); esr models list shows the names")
        if text.startswith("hf://"):
            return cls(text, "hub", hub=HubSource.from_uri(text))
        if text in registry.entries:
            return cls(text, "registry", entry=registry.entries[text])
        if Path(text).is_dir():
            return cls(text, "run")
        if looks_like_file(text):
            return cls(text, "file")
        registry.get(text)  # raises: an unknown name, with the close ones
        raise AssertionError("unreachable")

    @property
    def path(self) -> Path:
        """The run folder or weight file (kinds "run" and "file")."""
        return Path(self.text)

    @property
    def name(self) -> str:
        """How results and messages call the model: the registry name, the file's or folder's name, the URI."""
        if self.entry is not None:
            return self.entry.name
        return self.text if self.kind == "hub" else self.path.resolve().name if self.kind == "run" else self.path.name

    @property
    def scales(self) -> list[int]:
        """The native scales a registry model has; empty where the weights alone say (one scale)."""
        return self.entry.scales if self.entry is not None else []

    def partner(self, registry: Registry | None = None) -> ModelRef | None:
        """The robust partner that --denoise mixes with (models.toml `robust`), or None."""
        if self.entry is None or not self.entry.robust:
            return None
        return ModelRef.parse(self.entry.robust, registry)
