"""Where a model's weights can come from: a pinned URL, a Hugging Face Hub file, a file in the package.

Plain data, parsed and checked here (registry entries and hf:// references); esrcli.download
turns a source into a verified local file.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .errors import BadReference as BadReference

HF_FORM = "hf://owner/repo/path/to/file[@revision]"


def _pin(value: str | None, required: bool) -> str | None:
    if value is None and not required:
        return None
    norm = (value or "").strip().lower()
    if len(norm) != 64 or any(c not in "0123456789abcdef" for c in norm):
        raise ValueError(f"invalid sha256 {value!r}: expected 64 hex characters")
    return norm


@dataclass(frozen=True)
class UrlSource:
    """A file at a plain HTTP(S) URL; the pin is mandatory because nothing else vouches for it."""

    url: str
    sha256: str
    size: int | None = None
    filename: str | None = None

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme in {self.url!r}")
        object.__setattr__(self, "sha256", _pin(self.sha256, required=True))
        name = self.filename or urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        if name in ("", ".", "..") or any(c in name for c in "/\\\x00"):  # it becomes a path in the cache
            raise ValueError(f"cannot derive a safe file name from {self.url!r}; pass filename=")
        object.__setattr__(self, "filename", name)

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub model repository, fetched through huggingface_hub's cache."""

    repo_id: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if len(self.repo_id.split("/")) != 2 or not all(self.repo_id.split("/")):
            raise ValueError(f"invalid Hub repo id {self.repo_id!r}: expected 'owner/name'")
        if any(s in ("", ".", "..") for s in self.filename.split("/")) or not self.revision:
            raise ValueError(f"invalid file {self.filename!r} or revision {self.revision!r} in Hub repo {self.repo_id}")
        object.__setattr__(self, "sha256", _pin(self.sha256, required=False))

    @classmethod
    def from_uri(cls, uri: str) -> HubSource:
        """`hf://owner/repo/path/in/repo[@revision]`; huggingface_hub's `hf://owner/repo@rev/path` too."""
        if not uri.startswith("hf://"):
            raise BadReference(f"{uri}: not a Hub reference; expected {HF_FORM}")
        segs, revision = uri[len("hf://") :].split("/"), "main"
        if len(segs) >= 2 and "@" in segs[1]:
            segs[1], revision = segs[1].split("@", 1)
        elif "@" in segs[-1]:
            segs[-1], revision = segs[-1].rsplit("@", 1)
        if not revision or len(segs) < 3 or any(s in ("", ".", "..") for s in segs):
            raise BadReference(f"{uri}: not a Hub file reference; expected {HF_FORM}")
        return cls("/".join(segs[:2]), "/".join(segs[2:]), revision)

    @property
    def uri(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" + ("" if self.revision == "main" else f"@{self.revision}")

    @property
    def url(self) -> str:
        """The plain HTTPS address a user can fetch by hand (HF_ENDPOINT respected)."""
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, self.filename, revision=self.revision)

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class PackageSource:
    """A file shipped inside the esrcli package (the embedded default models): works offline."""

    path: str  # relative to the esrcli package folder
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", _pin(self.sha256, required=True))
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ValueError(f"package path must stay inside the package: {self.path!r}")

    @property
    def file(self) -> Path:
        return Path(__file__).resolve().parent / self.path

    def __str__(self) -> str:
        return f"esrcli/{self.path}"


Source = UrlSource | HubSource | PackageSource
