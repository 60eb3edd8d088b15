"""Pinned model sources (esrcli.sources) to verified local files.

huggingface_hub does the Hub's transfers, cache and offline mode; esr adds what is its own: the
SHA-256 pins, mirror fallback, resumable plain-URL downloads into its own cache, and one-line
errors that say how to go on without a network. A verified file is remembered by its size and
mtime, so later runs neither hash nor touch the network again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .atomic import atomic_write
from .cache import cache_dir as cache_dir
from .cache import cache_path
from .errors import CacheError as CacheError
from .errors import ChecksumMismatch as ChecksumMismatch
from .errors import DownloadError as DownloadError
from .errors import OfflineError as OfflineError
from .sources import HubSource, PackageSource, Source, UrlSource

_OFFLINE_VARS = ("ESR_OFFLINE", "HF_HUB_OFFLINE")


def _offline_var() -> str | None:
    return next((v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")), None)


def is_offline() -> bool:
    """esr's own switch or the Hub's: users set whichever they know."""
    return _offline_var() is not None


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- verification, remembered --------------------------------------------------------------


def _sidecar(sha: str) -> Path:
    return cache_path("verified", f"{sha}.json")


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _verified(path: Path, sha: str, size: int | None = None) -> bool:
    """Does `path` hold the pinned bytes? Hashed once; afterwards a matching stamp vouches for it."""
    try:
        if size is not None and path.stat().st_size != size:
            return False
        if json.loads(_sidecar(sha).read_text()) == _stamp(path):
            return True
    except (OSError, ValueError):
        pass
    if not path.is_file() or sha256_file(path) != sha:
        return False
    try:
        _sidecar(sha).parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(_sidecar(sha), fsync=False) as tmp:
            tmp.write_text(json.dumps(_stamp(path)))
    except OSError:
        pass  # only costs a hash next time
    return True


def _mismatch(name: str, where: str, path: Path, source: Source) -> ChecksumMismatch:
    got_size = path.stat().st_size
    problem = (
        f"expected {source.size} bytes, got {got_size}"
        if source.size not in (None, got_size)
        else (f"expected sha256 {source.sha256}, got {sha256_file(path)}")
    )
    path.unlink(missing_ok=True)
    reason = f"{where}: checksum mismatch ({problem}); the downloaded file was deleted"
    return ChecksumMismatch(f"model '{name}': {reason}", reason=reason)


# --- transfers -----------------------------------------------------------------------------


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


@contextmanager
def _progress(enabled: bool) -> Iterator[None]:
    """huggingface_hub's own switch for its bars, for the duration of one transfer."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled and not enabled:
            enable_progress_bars()


def _network_reason(exc: BaseException) -> str:
    """One line for what went wrong on the wire."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"HTTP {status}"
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return " ".join(str(cause).split()) or type(cause).__name__


@contextmanager
def _bar(label: str, total: int | None, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich download bar on a terminal (as every esr bar), else nothing."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield lambda n: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=total, completed=done)
        yield lambda n: progress.advance(task, n)


def _url_paths(src: UrlSource) -> tuple[Path, Path]:
    """(final, partial) in esr's cache, keyed by the pin so two models sharing a file name never collide."""
    final = cache_path("downloads", src.sha256[:16], src.filename)
    return final, final.with_name(f"{src.filename}.part")


def _fetch_url(src: UrlSource, *, name: str, progress: bool) -> Path:
    """Into esr's cache; the `.part` file grows across interrupted attempts (HTTP Range)."""
    final, part = _url_paths(src)
    if _verified(final, src.sha256, src.size):
        return final
    if is_offline():
        raise _offline_error(name, src)

    def fail(reason: str) -> DownloadError:
        return DownloadError(f"model '{name}': download of {src.url} failed: {reason}", reason=f"{src.url}: {reason}")

    if host := _unresolvable_host(src.url):
        raise fail(f"cannot resolve {host} (no network?)")
    part.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as f:
        have = f.tell() if src.size is None or f.tell() <= src.size else f.truncate(0)
        headers = {"User-Agent": "esr", "Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(src.url, headers=headers), timeout=30) as response:
                if have and response.status != 206:  # the server ignored Range: start over
                    f.truncate(0)
                    have = 0
                length = response.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() else src.size
                with _bar(src.filename, total, have, progress) as advance:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        advance(len(chunk))
                if total is not None and f.tell() < total:
                    raise http.client.IncompleteRead(b"", total - f.tell())
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                f.truncate(0)  # the partial file no longer fits the remote one
            raise fail(_network_reason(exc)) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, socket.gaierror):
                raise fail(f"cannot resolve {urllib.parse.urlsplit(src.url).hostname} (no network?)") from None
            raise fail(_network_reason(exc)) from None
        except (OSError, http.client.HTTPException):
            f.flush()
            raise fail(f"transfer cut short after {f.tell()} of {src.size or '?'} bytes (partial file kept for resume)") from None
    if not _verified(part, src.sha256, src.size):
        raise _mismatch(name, src.url, part, src)
    os.replace(part, final)
    _verified(final, src.sha256, src.size)  # restamp under the final name
    return final


def _fetch_hub(src: HubSource, *, name: str, progress: bool) -> Path:
    """Through huggingface_hub's cache; a cached file with the wrong bytes is downloaded again once."""
    from huggingface_hub import hf_hub_download

    offline = is_offline()
    pinned = src.sha256 is not None or len(src.revision) == 40
    if offline or pinned:  # a moving branch without a pin is checked against the Hub each time
        try:
            cached = Path(hf_hub_download(src.repo_id, src.filename, revision=src.revision, local_files_only=True))
            if src.sha256 is None or _verified(cached, src.sha256, src.size):
                return cached
        except Exception:  # not cached
            pass
    if offline:
        raise _offline_error(name, src)
    if host := _unresolvable_host(src.url):  # fail at once rather than through the client's retries (~25 s)
        reason = f"cannot resolve {host} (no network?)"
        raise DownloadError(f"model '{name}': download of {src.uri} ({src.url}) failed: {reason}", reason=f"{src.uri}: {reason}")
    for force in (False, True):
        try:
            with _progress(progress):
                path = Path(hf_hub_download(src.repo_id, src.filename, revision=src.revision, force_download=force))
        except Exception as exc:
            raise _hub_error(src, exc, name=name) from exc
        if src.sha256 is None or _verified(path, src.sha256, src.size):
            return path
    error = _mismatch(name, src.uri, path.resolve(), src)  # deletes the blob...
    path.unlink(missing_ok=True)  # ...and the snapshot's link to it
    raise error


def _hub_error(src: HubSource, exc: BaseException, *, name: str) -> DownloadError:
    """huggingface_hub's exception types, as one actionable line."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return _offline_error(name, src)
    reasons = [
        (errors.GatedRepoError, "the repository is gated: accept its terms on the Hub and log in (hf auth login or HF_TOKEN)"),
        (errors.RepositoryNotFoundError, "repository not found (or private: log in with hf auth login or set HF_TOKEN)"),
        (errors.RevisionNotFoundError, f"revision '{src.revision}' not found"),
        (errors.EntryNotFoundError, f"file not found in the repository at revision '{src.revision}'"),
        (errors.LocalEntryNotFoundError, f"cannot reach the Hub ({' '.join(str(exc.__cause__ or exc).split())[:160]})"),
    ]
    reason = next((text for kind, text in reasons if isinstance(exc, kind)), None) or _network_reason(exc)
    return DownloadError(f"model '{name}': download of {src.uri} ({src.url}) failed: {reason}", reason=f"{src.uri}: {reason}")


def _offline_error(name: str, source: Source) -> OfflineError:
    var = _offline_var() or "HF_HUB_OFFLINE"
    where = f"{source.url} ({source.uri})" if isinstance(source, HubSource) else str(source)
    reason = f"not cached and esr is offline ({var}={os.environ.get(var, '1')})"
    cache = f" (or cache it with: esr models fetch {name} --file FILE)" if not name.startswith("hf://") else ""
    return OfflineError(
        f"model '{name}' is {reason}: download {where} and pass it with -m /path/to/file{cache}, or unset ESR_OFFLINE/HF_HUB_OFFLINE",
        reason=f"{source}: {reason}",
    )


def _fetch_package(src: PackageSource, *, name: str) -> Path:
    """A packaged file, checked like a download: a damaged install must not load silently."""
    if not src.file.is_file():
        raise DownloadError(f"model '{name}': {src.file} is missing from the installed package; reinstall esrcli")
    if not _verified(src.file, src.sha256, src.size):
        raise ChecksumMismatch(f"model '{name}': {src.file} has sha256 {sha256_file(src.file)}, expected {src.sha256}; reinstall esrcli")
    return src.file


def fetch(source: Source, *, name: str, progress: bool = True) -> Path:
    """A local path holding the source's pinned bytes, downloading only if needed."""
    if isinstance(source, PackageSource):
        return _fetch_package(source, name=name)
    if isinstance(source, UrlSource):
        return _fetch_url(source, name=name, progress=progress)
    return _fetch_hub(source, name=name, progress=progress)


def fetch_first(sources: Sequence[Source], *, name: str, progress: bool = True) -> Path:
    """Mirrors in order, so one dead host blocks nobody; a cached copy from any of them wins."""
    if not sources:
        raise DownloadError(f"model '{name}' has no download sources")
    for src in sources:
        if isinstance(src, UrlSource) and _verified(_url_paths(src)[0], src.sha256, src.size):
            return _url_paths(src)[0]
    errors: list[DownloadError] = []
    for src in sources:
        try:
            return fetch(src, name=name, progress=progress)
        except DownloadError as e:
            errors.append(e)
    if len(errors) == 1 or is_offline():
        if isinstance(errors[0], (ChecksumMismatch, OfflineError)):
            raise errors[0]
        raise type(errors[0])(f"{errors[0]}; {manual_download_advice(name, sources[0])}", reason=errors[0].reason) from errors[0]
    summary = "; ".join(f"[{i}] {e.reason}" for i, e in enumerate(errors, 1))
    raise DownloadError(f"model '{name}': all {len(errors)} sources failed: {summary}; {manual_download_advice(name, sources[0])}")


def manual_download_advice(name: str | None, source: Source) -> str:
    """What to do without a working network: the same advice as in offline mode."""
    where = f"{source.url} ({source.uri})" if isinstance(source, HubSource) else str(source)
    cache = f" (or cache it with: esr models fetch {name} --file FILE)" if name else ""
    return f"to work without a network, download {where} yourself and pass it with -m /path/to/file{cache}"
