"""Turn a pinned model source (plain URL or Hugging Face Hub file) into a verified local file.

Weights are code-adjacent: a truncated or tampered file must never reach the model loader, so
every source is checked against its pinned size/SHA-256 before first use, and the "verified" fact
is remembered in a small sidecar so later runs start instantly and work without a network.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .atomic import atomic_write
from .errors import EsrError

__all__ = [
    "BadReference",
    "ChecksumMismatch",
    "DownloadError",
    "HubSource",
    "OfflineError",
    "PackageSource",
    "Source",
    "UrlSource",
    "cache_dir",
    "fetch",
    "fetch_first",
    "is_offline",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_TRUTHY = {"1", "true", "yes", "on"}
_OFFLINE_VARS = ("ESR_OFFLINE", "HF_HUB_OFFLINE")
_CHUNK = 1 << 20
_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class DownloadError(EsrError):
    """A source could not be turned into a usable file; the message is one line for the CLI.

    ``reason`` holds the bare cause (without the model prefix) so ``fetch_first`` can summarise
    several failed sources in a single line.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(_one_line(message))
        self.reason = _one_line(reason) if reason is not None else self.args[0]

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only ``reason`` would otherwise be lost when errors cross process boundaries.
        return (self.__class__, (self.args[0],), {"reason": self.reason})


class ChecksumMismatch(DownloadError):
    """The bytes arrived but are not the pinned ones; the bad file has already been deleted."""


class OfflineError(DownloadError):
    """Offline mode forbids the network and the file is not in the cache."""


class BadReference(EsrError, ValueError):
    """A model reference that does not parse, such as hf://owner."""


HF_FORM = "hf://owner/repo/path/to/file[@revision]"


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _check_sha(value: str | None, *, required: bool) -> str | None:
    """Normalise a pinned digest so comparisons are plain string equality."""
    if value is None:
        if required:
            raise ValueError("a sha256 is required for URL sources")
        return None
    norm = value.strip().lower()
    if not _SHA256_RE.fullmatch(norm):
        raise ValueError(f"invalid sha256 {value!r}: expected 64 hex characters")
    return norm


@dataclass(frozen=True)
class UrlSource:
    """A file at a plain HTTP(S) URL; the sha256 is mandatory because nothing else vouches for it."""

    url: str
    sha256: str
    size: int | None = None
    filename: str | None = None

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.url).scheme.lower()
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"unsupported URL scheme in {self.url!r}")
        object.__setattr__(self, "sha256", _check_sha(self.sha256, required=True))
        name = self.filename
        if name is None:
            path = urllib.parse.urlsplit(self.url).path
            name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        # The name becomes a path component in the cache: keep it from escaping its folder.
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise ValueError(f"cannot derive a safe file name from {self.url!r}; pass filename=")
        object.__setattr__(self, "filename", name)
        if self.size is not None and self.size < 0:
            raise ValueError("size must be >= 0")

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub model repo, fetched through huggingface_hub's own cache."""

    repo_id: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        parts = self.repo_id.split("/")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"invalid Hub repo id {self.repo_id!r}: expected 'owner/name'")
        segs = self.filename.split("/")
        if not self.filename or any(s in ("", ".", "..") for s in segs):
            raise ValueError(f"invalid file path {self.filename!r} in Hub repo {self.repo_id}")
        if not self.revision:
            raise ValueError("revision must not be empty")
        object.__setattr__(self, "sha256", _check_sha(self.sha256, required=False))
        if self.size is not None and self.size < 0:
            raise ValueError("size must be >= 0")

    @classmethod
    def from_uri(cls, uri: str) -> HubSource:
        """Parse ``hf://owner/repo/path/in/repo[@revision]`` (``hf://owner/repo@rev/path`` too).

        The registry stores sources as strings; accepting huggingface_hub's own ``repo@rev``
        spelling as well saves users from learning a second convention.
        """
        prefix = "hf://"
        if not uri.startswith(prefix):
            raise BadReference(f"{uri}: not a Hub reference; expected {HF_FORM}")
        body = uri[len(prefix) :]
        revision = "main"
        segs = body.split("/")
        if len(segs) >= 2 and "@" in segs[1]:  # hf://owner/repo@rev/path
            segs[1], revision = segs[1].split("@", 1)
            body = "/".join(segs)
        elif "@" in body:  # hf://owner/repo/path@rev
            body, revision = body.rsplit("@", 1)
        segs = body.split("/")
        if not revision or len(segs) < 3 or any(s in ("", ".", "..") for s in segs):
            raise BadReference(f"{uri}: not a Hub file reference; expected {HF_FORM}")
        try:
            return cls(repo_id="/".join(segs[:2]), filename="/".join(segs[2:]), revision=revision)
        except ValueError as exc:
            raise BadReference(f"{uri}: {exc}; expected {HF_FORM}") from None

    @property
    def uri(self) -> str:
        """Canonical ``hf://`` form, for messages and round-tripping."""
        suffix = "" if self.revision == "main" else f"@{self.revision}"
        return f"hf://{self.repo_id}/{self.filename}{suffix}"

    def __str__(self) -> str:
        return self.uri


@dataclass(frozen=True)
class PackageSource:
    """A file shipped inside the esrcli package (the embedded default models): works offline."""

    path: str  # relative to the esrcli package folder
    sha256: str
    size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", _check_sha(self.sha256, required=True))
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ValueError(f"package path must stay inside the package: {self.path!r}")

    @property
    def file(self) -> Path:
        return Path(__file__).resolve().parent / self.path

    def __str__(self) -> str:
        return f"esrcli/{self.path}"


Source = UrlSource | HubSource | PackageSource


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where esr keeps downloads; follows each platform's convention unless ESR_CACHE overrides it."""
    env = os.environ.get("ESR_CACHE")
    if env:
        root = Path(env).expanduser()
    elif sys.platform == "darwin":
        root = Path.home() / "Library" / "Caches" / "esr"
    elif sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        root = Path(base) / "esr" / "Cache"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says relative values are invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
        root = base / "esr"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _offline_var() -> str | None:
    """The first env var that turns offline mode on, so messages can tell users what to unset."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUTHY:
            return var
    return None


def is_offline() -> bool:
    """Honour both esr's own switch and the Hub's, since users set whichever they know."""
    return _offline_var() is not None


def sha256_file(path: Path) -> str:
    """Stream the file so multi-GB weights don't need to fit in memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Collapse multi-line library messages so the CLI prints one clean line."""
    return " ".join(str(text).split())


def _first_line(exc: BaseException) -> str:
    """A short human cause for an exception, falling back to its type when the text is empty."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """A torn sidecar would make a good file look unverified (or worse), so write-then-rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, fsync=False) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")


def _stamp(path: Path) -> dict[str, Any]:
    """Size + mtime identify a file cheaply; any rewrite or truncation changes them."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sidecar_matches(sidecar: Path, target: Path, sha256: str) -> bool:
    """True when the sidecar vouches for exactly this file, letting us skip a full rehash."""
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        return (
            data.get("sha256") == sha256
            and data.get("path") == str(target)
            and data.get("size") == target.stat().st_size
            and data.get("mtime_ns") == target.stat().st_mtime_ns
        )
    except (OSError, ValueError, AttributeError):
        return False


def _record_verified(sidecar: Path, target: Path, sha256: str) -> None:
    """Remember a successful hash check; failure to write only costs a rehash next time."""
    try:
        _write_json_atomic(sidecar, {"sha256": sha256, "path": str(target), **_stamp(target)})
    except OSError as e:
        logger.debug("could not write %s: %s", sidecar, e)


def _offline_error(name: str, source: Source) -> OfflineError:
    var = _offline_var() or "HF_HUB_OFFLINE"
    if isinstance(source, HubSource):
        where = f"{_hub_resolve_url(source)} ({source.uri})"
    else:
        where = source.url
    reason = f"not cached and esr is offline ({var}={os.environ.get(var, '1')})"
    return OfflineError(
        f"model '{name}' is {reason}: download {where} and pass it with -m /path/to/file"
        + (f" (or cache it with: esr models fetch {name} --file FILE)" if not name.startswith("hf://") else "")
        + ", or unset ESR_OFFLINE/HF_HUB_OFFLINE",
        reason=f"{source}: {reason}",
    )


# --------------------------------------------------------------------------------------------
# URL sources
# --------------------------------------------------------------------------------------------


def _url_paths(src: UrlSource) -> tuple[Path, Path, Path]:
    """(final, .part, sidecar): keyed by digest so two models sharing a file name never collide."""
    assert src.filename is not None  # set by __post_init__
    folder = cache_dir() / "downloads" / src.sha256[:16]
    final = folder / src.filename
    return final, folder / f"{src.filename}.part", folder / f"{src.filename}.sha256"


def _url_cached(src: UrlSource) -> Path | None:
    """Return the verified final file without touching the network, or None if absent/invalid."""
    final, _, sidecar = _url_paths(src)
    if not final.is_file():
        return None
    if src.size is not None and final.stat().st_size != src.size:
        final.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return None
    if _sidecar_matches(sidecar, final, src.sha256):
        return final
    # No (or stale) sidecar, e.g. the user dropped the file in by hand: verify once.
    if sha256_file(final) == src.sha256:
        _record_verified(sidecar, final, src.sha256)
        return final
    logger.warning("cached %s does not match its sha256; deleting it", final)
    final.unlink(missing_ok=True)
    sidecar.unlink(missing_ok=True)
    return None


@contextmanager
def _progress_bar(desc: str, total: int | None, completed: int, enabled: bool) -> Iterator[Any]:
    """Yield an ``advance(n)`` callable; rich is imported only when a bar can actually be shown."""
    if enabled:
        from rich.console import Console

        console = Console(stderr=True)
        enabled = console.is_terminal
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(desc, total=total, completed=completed)
        yield lambda n: bar.advance(task, n)


def _hash_existing(f: BinaryIO, hasher: Any) -> int:
    """Feed already-downloaded bytes to the hasher so a resumed file needs no second pass."""
    f.seek(0)
    n = 0
    while chunk := f.read(_CHUNK):
        hasher.update(chunk)
        n += len(chunk)
    return n


def _start_of_content_range(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _download_url(src: UrlSource, *, name: str, progress: bool) -> Path:
    final, part, sidecar = _url_paths(src)
    final.parent.mkdir(parents=True, exist_ok=True)

    def fail(reason: str) -> DownloadError:
        return DownloadError(f"model '{name}': download of {src.url} failed: {reason}", reason=f"{src.url}: {reason}")

    hasher = hashlib.sha256()
    # Append mode: every write lands at the end, so resumed bytes can never overwrite kept ones.
    with open(part, "a+b") as f:
        have = _hash_existing(f, hasher)
        if src.size is not None and have > src.size:  # cannot be a prefix of the right file
            f.truncate(0)
            hasher, have = hashlib.sha256(), 0
        if src.size is None or have < src.size:
            hasher = _stream_into(src, f, hasher, have, fail, progress=progress)

    got_size = part.stat().st_size
    got_sha = hasher.hexdigest()
    problem = None
    if src.size is not None and got_size != src.size:
        problem = f"expected {src.size} bytes, got {got_size}"
    elif got_sha != src.sha256:
        problem = f"expected sha256 {src.sha256}, got {got_sha}"
    if problem is not None:
        part.unlink(missing_ok=True)
        reason = f"{src.url}: checksum mismatch ({problem}); the downloaded file was deleted"
        raise ChecksumMismatch(f"model '{name}': {reason}", reason=reason)

    os.replace(part, final)
    _record_verified(sidecar, final, src.sha256)
    return final


def _stream_into(src: UrlSource, f: BinaryIO, hasher: Any, have: int, fail: Callable[[str], DownloadError], *, progress: bool) -> Any:
    """GET the URL, resuming after ``have`` bytes, appending to ``f``; returns the running digest.

    Partial data is flushed and kept on network errors so the next call can resume with Range.
    """
    headers = {"User-Agent": "esr (+https://pypi.org/project/esrcli)", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(src.url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:
            # Our .part no longer fits the remote file (changed upstream?): start over next time.
            f.truncate(0)
            raise fail("server rejected the resume range (HTTP 416); partial file discarded, retry") from None
        raise fail(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):
            raise fail(f"cannot resolve {urllib.parse.urlsplit(src.url).hostname} (no network?)") from None
        raise fail(_first_line(e.reason) if isinstance(e.reason, BaseException) else str(e.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise fail(_first_line(e)) from None

    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        if have and status == 206:
            if _start_of_content_range(resp.headers.get("Content-Range")) != have:
                f.truncate(0)
                raise fail("server sent an unexpected byte range; partial file discarded, retry")
        elif have:
            # 200: the server ignored Range and sends the whole file, so start over.
            f.truncate(0)
            hasher, have = hashlib.sha256(), 0
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = have + remaining if remaining is not None else src.size
        received = 0

        def cut_short(detail: str) -> DownloadError:
            f.flush()
            return fail(f"{detail} after {have + received} of {total or '?'} bytes (partial file kept for resume)")

        with _progress_bar(src.filename or src.url, total, have, progress) as advance:
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
            except http.client.IncompleteRead as e:
                # http.client raises this when the server closes before Content-Length bytes.
                f.write(e.partial)
                hasher.update(e.partial)
                received += len(e.partial)
                raise cut_short("transfer cut short") from None
            except (OSError, http.client.HTTPException) as e:
                raise cut_short(_first_line(e)) from None
        if remaining is not None and received < remaining:
            raise cut_short("transfer cut short")
    return hasher


def _fetch_url(src: UrlSource, *, name: str, progress: bool) -> Path:
    cached = _url_cached(src)
    if cached is not None:
        return cached
    if is_offline():
        raise _offline_error(name, src)
    return _download_url(src, name=name, progress=progress)


# --------------------------------------------------------------------------------------------
# Hub sources
# --------------------------------------------------------------------------------------------


def _hub_resolve_url(src: HubSource) -> str:
    """The plain HTTPS URL a user can fetch by hand (respects HF_ENDPOINT)."""
    try:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(src.repo_id, src.filename, revision=src.revision)
    except Exception:  # never let message formatting fail
        return f"https://huggingface.co/{src.repo_id}/resolve/{src.revision}/{src.filename}"


def _unresolvable_host(url: str) -> str | None:
    """The URL's host when this machine cannot resolve it and no proxy would do so instead."""
    host = urllib.parse.urlsplit(url).hostname
    if not host or urllib.request.getproxies():
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return host
    except OSError:
        return None
    return None


def _hub_sidecar(sha256: str) -> Path:
    return cache_dir() / "verified" / f"{sha256}.json"


def _hub_kwargs(progress: bool) -> dict[str, Any]:
    """Silence huggingface_hub's own tqdm bar per call (not globally) when asked to."""
    if progress:
        return {}
    import inspect

    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import tqdm as hf_tqdm

    if "tqdm_class" not in inspect.signature(hf_hub_download).parameters:
        return {}

    class _SilentTqdm(hf_tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return {"tqdm_class": _SilentTqdm}


def _link_chain(path: Path) -> list[Path]:
    """The snapshot symlink, its blob, and any further link (shared blob store), in order."""
    chain = [path]
    seen = {str(path)}
    cur = path
    while cur.is_symlink() and len(chain) < 16:
        nxt = Path(os.readlink(cur))
        cur = nxt if nxt.is_absolute() else (cur.parent / nxt)
        cur = Path(os.path.normpath(cur))
        if str(cur) in seen:
            break
        seen.add(str(cur))
        chain.append(cur)
    return chain


def _delete_hub_file(path: Path) -> None:
    """Remove a bad download from the HF cache so the next attempt fetches it again."""
    for p in reversed(_link_chain(path)):
        try:
            p.unlink(missing_ok=True)
        except OSError as e:
            logger.warning("could not delete %s: %s", p, e)


def _hub_verify(src: HubSource, path: Path, *, name: str) -> Path:
    """Check size/sha of a file hf_hub_download returned; delete it from the HF cache if wrong."""
    actual_size = path.stat().st_size
    problem = None
    if src.size is not None and actual_size != src.size:
        problem = f"expected {src.size} bytes, got {actual_size}"
    elif src.sha256 is not None:
        sidecar = _hub_sidecar(src.sha256)
        if _sidecar_matches(sidecar, path, src.sha256):
            return path
        got = sha256_file(path)
        if got == src.sha256:
            _record_verified(sidecar, path, src.sha256)
            return path
        problem = f"expected sha256 {src.sha256}, got {got}"
    if problem is None:
        return path
    _delete_hub_file(path)
    reason = f"{src.uri}: checksum mismatch ({problem}); the file was deleted from the Hugging Face cache"
    raise ChecksumMismatch(f"model '{name}': {reason}", reason=reason)


def _hub_cached(src: HubSource, *, offline: bool) -> Path | None:
    """A cached copy usable without asking the Hub, or None.

    A file on a moving branch (``main``) is only trusted without a network check when its sha is
    pinned (content cannot have drifted) or when we are offline anyway.
    """
    if not (offline or src.sha256 is not None or _COMMIT_RE.fullmatch(src.revision)):
        return None
    from huggingface_hub import hf_hub_download

    try:
        found = hf_hub_download(src.repo_id, src.filename, revision=src.revision, local_files_only=True)
    except Exception:  # not cached, or cache unreadable: treat as a miss
        return None
    path = Path(found)
    if not path.is_file():
        return None
    return path


def _hub_error(src: HubSource, exc: BaseException, *, name: str) -> DownloadError:
    """Translate huggingface_hub's exception zoo into one actionable line."""
    from huggingface_hub import utils as hfu

    def chain(e: BaseException | None) -> Iterator[BaseException]:
        seen: set[int] = set()
        while e is not None and id(e) not in seen:
            seen.add(id(e))
            yield e
            e = e.__cause__ or e.__context__

    if any(isinstance(e, hfu.OfflineModeIsEnabled) for e in chain(exc)):
        return _offline_error(name, src)

    http_status: int | None = None
    for e in chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(e, hfu.HfHubHTTPError) and resp is not None:
            http_status = getattr(resp, "status_code", None)
            break

    if isinstance(exc, hfu.GatedRepoError):
        reason = "the repository is gated: accept its terms on the Hub and log in (hf auth login or HF_TOKEN)"
    elif isinstance(exc, hfu.RepositoryNotFoundError):
        reason = "repository not found (or private: log in with hf auth login or set HF_TOKEN)"
    elif isinstance(exc, hfu.RevisionNotFoundError):
        reason = f"revision '{src.revision}' not found"
    elif isinstance(exc, hfu.LocalEntryNotFoundError):
        # hf_hub_download hides the real cause of a failed HEAD behind this generic error.
        root = list(chain(exc))[-1]
        if http_status is not None:
            reason = f"the Hub answered HTTP {http_status}"
        elif root is not exc:
            reason = f"cannot reach the Hub: {_first_line(root)}"
        else:
            reason = "cannot reach the Hub and the file is not cached"
    elif isinstance(exc, hfu.EntryNotFoundError):
        reason = f"file not found in the repository at revision '{src.revision}'"
    elif http_status is not None:
        reason = f"the Hub answered HTTP {http_status}"
    else:
        reason = _first_line(exc)
    endpoint_url = _hub_resolve_url(src)
    return DownloadError(
        f"model '{name}': download of {src.uri} ({endpoint_url}) failed: {reason}",
        reason=f"{src.uri}: {reason}",
    )


def _fetch_hub(src: HubSource, *, name: str, progress: bool) -> Path:
    offline = is_offline()
    cached = _hub_cached(src, offline=offline)
    if cached is not None:
        try:
            return _hub_verify(src, cached, name=name)
        except ChecksumMismatch:
            if offline:
                raise
            # A corrupted cache entry was deleted: fall through and download it again.
    if offline:
        raise _offline_error(name, src)
    host = _unresolvable_host(_hub_resolve_url(src))
    if host is not None:  # fail at once rather than through huggingface_hub's retries (~25 s)
        reason = f"cannot resolve {host} (no network?)"
        raise DownloadError(f"model '{name}': download of {src.uri} ({_hub_resolve_url(src)}) failed: {reason}", reason=f"{src.uri}: {reason}")

    from huggingface_hub import hf_hub_download

    try:
        found = hf_hub_download(src.repo_id, src.filename, revision=src.revision, **_hub_kwargs(progress))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # huggingface_hub raises many unrelated types; all are a failed source here
        raise _hub_error(src, e, name=name) from e
    return _hub_verify(src, Path(found), name=name)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _fetch_package(src: PackageSource, *, name: str) -> Path:
    """A packaged file, checked like a download: a damaged install must not load silently."""
    path = src.file
    if not path.is_file():
        raise DownloadError(f"model '{name}': {path} is missing from the installed package; reinstall esrcli")
    sidecar = cache_dir() / "verified" / f"{src.sha256}.json"
    if not _sidecar_matches(sidecar, path, src.sha256):
        got = sha256_file(path)
        if got != src.sha256:
            raise ChecksumMismatch(f"model '{name}': {path} has sha256 {got}, expected {src.sha256}; reinstall esrcli")
        _record_verified(sidecar, path, src.sha256)
    return path


def fetch(source: Source, *, name: str, progress: bool = True) -> Path:
    """Return a local path whose content matches the source's pins, downloading only if needed."""
    if isinstance(source, PackageSource):
        return _fetch_package(source, name=name)
    if isinstance(source, UrlSource):
        return _fetch_url(source, name=name, progress=progress)
    if isinstance(source, HubSource):
        return _fetch_hub(source, name=name, progress=progress)
    raise TypeError(f"unsupported source type {type(source).__name__}")


def _cached_any(source: Source, *, name: str) -> Path | None:
    """A verified local copy obtainable with no network at all, so any mirror's cache wins."""
    try:
        if isinstance(source, PackageSource):
            return _fetch_package(source, name=name)
        if isinstance(source, UrlSource):
            return _url_cached(source)
        cached = _hub_cached(source, offline=is_offline())
        return None if cached is None else _hub_verify(source, cached, name=name)
    except (DownloadError, OSError):
        return None


def fetch_first(sources: Sequence[Source], *, name: str, progress: bool = True) -> Path:
    """Try mirrors in order so one dead host doesn't block users; a cached copy of any wins."""
    if not sources:
        raise DownloadError(f"model '{name}' has no download sources")
    for src in sources:
        cached = _cached_any(src, name=name)
        if cached is not None:
            return cached
    if is_offline():
        raise _offline_error(name, sources[0])

    errors: list[DownloadError] = []
    for i, src in enumerate(sources, 1):
        try:
            return fetch(src, name=name, progress=progress)
        except DownloadError as e:
            errors.append(e)
            if i < len(sources):
                logger.warning("model '%s': source %d failed (%s); trying the next one", name, i, e.reason)
    advice = manual_download_advice(name, sources[0])
    if len(errors) == 1:
        error = errors[0]
        if isinstance(error, ChecksumMismatch):
            raise error
        raise type(error)(f"{error}; {advice}", reason=error.reason) from error
    summary = "; ".join(f"[{i}] {e.reason}" for i, e in enumerate(errors, 1))
    raise DownloadError(f"model '{name}': all {len(errors)} sources failed: {summary}; {advice}") from errors[-1]


def manual_download_advice(name: str | None, source: Source) -> str:
    """What to do without a working network: the same advice as in offline mode."""
    where = f"{_hub_resolve_url(source)} ({source.uri})" if isinstance(source, HubSource) else str(source)
    cache = f" (or cache it with: esr models fetch {name} --file FILE)" if name else ""
    return f"to work without a network, download {where} yourself and pass it with -m /path/to/file{cache}"
