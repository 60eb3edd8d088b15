"""Tests for esrcli.download against a real HTTP server on 127.0.0.1 (no mocks, no internet)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from loopback import COMMIT, FileServer

from esrcli.download import ChecksumMismatch, DownloadError, OfflineError, cache_dir, fetch, fetch_first, is_offline, sha256_file
from esrcli.sources import HubSource, UrlSource

REPO_ROOT = Path(__file__).resolve().parents[1]
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache and never goes through a proxy or to the real Hub."""
    cache = tmp_path / "esr-cache"
    monkeypatch.setenv("ESR_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for var in ("ESR_OFFLINE", "HF_HUB_OFFLINE", *_PROXY_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return cache


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()) if path.exists() else []


# --------------------------------------------------------------------------------------------
# Environment helpers
# --------------------------------------------------------------------------------------------


def test_cache_dir_honours_esr_cache(isolated_env: Path) -> None:
    assert not isolated_env.exists()
    assert cache_dir() == isolated_env
    assert isolated_env.is_dir()  # created on demand


def test_cache_dir_xdg_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform in ("darwin", "win32"):
        pytest.skip("XDG layout is Linux-only")
    monkeypatch.delenv("ESR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "esr"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("ESR_OFFLINE", "1", True),
        ("HF_HUB_OFFLINE", "TRUE", True),
        ("ESR_OFFLINE", "on", True),
        ("ESR_OFFLINE", "yes", True),
        ("ESR_OFFLINE", "0", False),
        ("HF_HUB_OFFLINE", "", False),
    ],
)
def test_is_offline(monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: bool) -> None:
    assert not is_offline()
    monkeypatch.setenv(var, value)
    assert is_offline() is expected


def test_url_source_validation() -> None:
    data = b"x"
    src = UrlSource("https://example.org/a/b/model%20v2.pth?dl=1", _sha(data).upper())
    assert src.filename == "model v2.pth"
    assert src.sha256 == _sha(data)
    with pytest.raises(ValueError):
        UrlSource("https://example.org/a/", _sha(data))  # no file name to derive
    with pytest.raises(ValueError):
        UrlSource("https://example.org/a.pth", "not-a-sha")
    with pytest.raises(ValueError):
        UrlSource("https://example.org/a.pth", _sha(data), filename="../evil")


# --------------------------------------------------------------------------------------------
# URL sources
# --------------------------------------------------------------------------------------------


def test_url_download_success_then_cached(server: FileServer, isolated_env: Path) -> None:
    data = os.urandom(300_000)
    server.add("weights/span_x4.pth", data)
    src = UrlSource(server.url("weights/span_x4.pth"), _sha(data), size=len(data))

    path = fetch(src, name="span", progress=True)  # stderr is not a tty under pytest: bar disabled
    assert path.read_bytes() == data
    assert path.name == "span_x4.pth"
    assert path.is_relative_to(isolated_env / "downloads")
    assert sha256_file(path) == src.sha256
    assert not path.with_name("span_x4.pth.part").exists()
    assert (isolated_env / "verified" / f"{src.sha256}.json").is_file()  # verified once, remembered
    assert server.count == 1

    again = fetch(src, name="span", progress=False)
    assert again == path
    assert server.count == 1  # no network on the second call


def test_progress_bar_on_terminal(server: FileServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = os.urandom(3_000_000)
    server.add("bar.pth", data)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # make rich treat captured stderr as a terminal
    path = fetch(UrlSource(server.url("bar.pth"), _sha(data)), name="bar", progress=True)
    assert path.read_bytes() == data
    captured = capsys.readouterr()
    assert "bar.pth" in captured.err and captured.out == ""


def test_cached_file_tampered_is_redownloaded(server: FileServer) -> None:
    data = os.urandom(10_000)
    server.add("m.pth", data)
    src = UrlSource(server.url("m.pth"), _sha(data))
    path = fetch(src, name="m", progress=False)
    path.write_bytes(b"corrupted" + data[9:])  # same size, different content, new mtime
    assert fetch(src, name="m", progress=False).read_bytes() == data
    assert server.count == 2


def test_checksum_mismatch_leaves_nothing(server: FileServer, isolated_env: Path) -> None:
    data = os.urandom(50_000)
    server.add("bad.pth", data)
    wrong = _sha(b"something else")
    src = UrlSource(server.url("bad.pth"), wrong)

    with pytest.raises(ChecksumMismatch) as exc:
        fetch(src, name="span", progress=False)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "span" in msg and wrong in msg and _sha(data) in msg and "deleted" in msg
    assert _files_under(isolated_env / "downloads") == []


def test_size_mismatch_is_a_checksum_error(server: FileServer, isolated_env: Path) -> None:
    data = os.urandom(1_000)
    server.add("s.pth", data)
    src = UrlSource(server.url("s.pth"), _sha(data), size=999)
    with pytest.raises(ChecksumMismatch, match="999"):
        fetch(src, name="s", progress=False)
    assert _files_under(isolated_env / "downloads") == []


def test_interrupted_transfer_resumes_with_range(server: FileServer, isolated_env: Path) -> None:
    data = os.urandom(400_000)
    server.add("big.pth", data)
    src = UrlSource(server.url("big.pth"), _sha(data), size=len(data))

    server.cut_short = True
    with pytest.raises(DownloadError) as exc:
        fetch(src, name="big", progress=False)
    assert not isinstance(exc.value, ChecksumMismatch)
    assert "big" in str(exc.value) and src.url in str(exc.value) and "cut short" in str(exc.value)
    part = isolated_env / "downloads" / src.sha256[:16] / "big.pth.part"
    assert part.is_file()
    kept = part.stat().st_size
    assert 0 < kept < len(data)

    server.cut_short = False
    path = fetch(src, name="big", progress=False)
    assert path.read_bytes() == data
    assert server.requests[-1].headers.get("range") == f"bytes={kept}-"
    assert not part.exists()


def test_resume_restarts_when_server_ignores_range(server: FileServer, isolated_env: Path) -> None:
    data = os.urandom(100_000)
    server.add("norange.pth", data)
    src = UrlSource(server.url("norange.pth"), _sha(data))
    part = isolated_env / "downloads" / src.sha256[:16] / "norange.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # garbage that a 200 answer must replace, not extend

    server.support_range = False
    path = fetch(src, name="nr", progress=False)
    assert path.read_bytes() == data
    assert server.requests[-1].headers.get("range") == "bytes=1000-"


@pytest.mark.parametrize("code", [404, 500])
def test_http_errors(server: FileServer, code: int) -> None:
    server.add("x.pth", b"abc")
    server.status["/x.pth"] = code
    src = UrlSource(server.url("x.pth"), _sha(b"abc"))
    with pytest.raises(DownloadError, match=f"HTTP {code}") as exc:
        fetch(src, name="xm", progress=False)
    assert "xm" in str(exc.value) and src.url in str(exc.value)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = UrlSource(f"http://127.0.0.1:{port}/m.pth", _sha(b"m"))
    with pytest.raises(DownloadError) as exc:
        fetch(src, name="dead", progress=False)
    assert "dead" in str(exc.value) and src.url in str(exc.value) and "\n" not in str(exc.value)


def test_offline(server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5_000)
    server.add("off.pth", data)
    src = UrlSource(server.url("off.pth"), _sha(data))

    monkeypatch.setenv("ESR_OFFLINE", "1")
    with pytest.raises(OfflineError) as exc:
        fetch(src, name="span", progress=False)
    msg = str(exc.value)
    assert "'span'" in msg and src.url in msg and "ESR_OFFLINE" in msg and "-m" in msg
    with pytest.raises(OfflineError):
        fetch_first([src], name="span", progress=False)
    assert server.count == 0

    monkeypatch.delenv("ESR_OFFLINE")
    path = fetch(src, name="span", progress=False)
    assert server.count == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch(src, name="span", progress=False) == path
    assert fetch_first([src], name="span", progress=False) == path
    assert server.count == 1


def test_fetch_first_falls_back(server: FileServer) -> None:
    data = os.urandom(20_000)
    server.add("mirror/m.pth", data)
    missing = UrlSource(server.url("gone/m.pth"), _sha(data))
    good = UrlSource(server.url("mirror/m.pth"), _sha(data))

    path = fetch_first([missing, good], name="m", progress=False)
    assert path.read_bytes() == data
    assert [r.path for r in server.requests] == ["/gone/m.pth", "/mirror/m.pth"]

    # A cached copy from any source wins without touching the network.
    assert fetch_first([missing, good], name="m", progress=False) == path
    assert server.count == 2


def test_fetch_first_all_fail_summarises(server: FileServer) -> None:
    data = b"payload"
    server.add("wrong.pth", b"other bytes")
    a = UrlSource(server.url("nothere.pth"), _sha(data))
    b = UrlSource(server.url("wrong.pth"), _sha(data))
    with pytest.raises(DownloadError) as exc:
        fetch_first([a, b], name="combo", progress=False)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "combo" in msg and "all 2 sources failed" in msg
    assert a.url in msg and "HTTP 404" in msg and b.url in msg and "checksum mismatch" in msg


def test_fetch_first_single_keeps_error_type(server: FileServer) -> None:
    server.add("one.pth", b"abc")
    with pytest.raises(ChecksumMismatch):
        fetch_first([UrlSource(server.url("one.pth"), _sha(b"xyz"))], name="one", progress=False)


# --------------------------------------------------------------------------------------------
# Hub sources (through HF_ENDPOINT, in a subprocess so huggingface_hub reads the env at import)
# --------------------------------------------------------------------------------------------

_HUB_SCRIPT = r"""
import json, sys
from pathlib import Path
from esrcli.download import DownloadError, HubSource, fetch, fetch_first
spec = json.loads(sys.argv[1])
src = HubSource(**spec["source"])
try:
    if spec.get("first"):
        p = fetch_first([src], name=spec["name"], progress=False)
    else:
        p = fetch(src, name=spec["name"], progress=False)
    out = {"path": str(p), "data": Path(p).read_bytes().hex()}
except DownloadError as e:
    out = {"error": type(e).__name__, "message": str(e)}
print(json.dumps(out))
"""


@pytest.fixture
def hub(server: FileServer, tmp_path: Path, isolated_env: Path):  # type: ignore[no-untyped-def]
    """Run esrcli.download in a fresh interpreter configured like a user would: via env vars."""
    hf_home = tmp_path / "hf-home"

    def run(source: dict[str, object], *, name: str = "span", offline: bool = False, first: bool = False) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(
            HF_ENDPOINT=server.base,
            HF_HOME=str(hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            ESR_CACHE=str(isolated_env),
            PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
        )
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        spec = json.dumps({"source": source, "name": name, "first": first})
        proc = subprocess.run([sys.executable, "-c", _HUB_SCRIPT, spec], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    run.hf_home = hf_home  # type: ignore[attr-defined]
    return run


def test_hub_download_verifies_and_caches(server: FileServer, hub, isolated_env: Path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(64_000)
    server.add_hub("esr/span", "x4/span_x4.safetensors", data)
    source = {"repo_id": "esr/span", "filename": "x4/span_x4.safetensors", "sha256": _sha(data), "size": len(data)}

    out = hub(source)
    assert "error" not in out, out
    assert bytes.fromhex(out["data"]) == data
    assert out["path"].endswith("span_x4.safetensors")  # the snapshot path keeps the real name
    assert Path(out["path"]).is_relative_to(hub.hf_home)
    methods = [(r.method, r.path) for r in server.requests]
    assert ("GET", "/esr/span/resolve/main/x4/span_x4.safetensors") in methods
    assert (isolated_env / "verified" / f"{_sha(data)}.json").is_file()

    before = server.count
    again = hub(source)
    assert again["path"] == out["path"]
    assert server.count == before  # pinned sha + verified cache: no network

    offline = hub(source, offline=True)
    assert offline["path"] == out["path"]
    assert server.count == before


def test_hub_wrong_sha_deletes_from_hf_cache(server: FileServer, hub) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(8_000)
    server.add_hub("esr/span", "span.safetensors", data)
    wrong = _sha(b"not it")
    out = hub({"repo_id": "esr/span", "filename": "span.safetensors", "sha256": wrong})
    assert out["error"] == "ChecksumMismatch", out
    assert wrong in out["message"] and _sha(data) in out["message"] and "span" in out["message"]
    repo_cache = hub.hf_home / "hub" / "models--esr--span"
    assert repo_cache.is_dir()  # it really went through the HF cache...
    assert list((repo_cache / "blobs").iterdir()) == []  # ...and the bad blob is gone
    assert not (repo_cache / "snapshots" / COMMIT / "span.safetensors").exists()
    assert not (repo_cache / "snapshots" / COMMIT / "span.safetensors").is_symlink()


def test_hub_offline_not_cached(server: FileServer, hub) -> None:  # type: ignore[no-untyped-def]
    server.add_hub("esr/span", "span.safetensors", b"weights")
    out = hub({"repo_id": "esr/span", "filename": "span.safetensors", "sha256": _sha(b"weights")}, offline=True, first=True)
    assert out["error"] == "OfflineError", out
    assert "'span'" in out["message"] and "hf://esr/span/span.safetensors" in out["message"]
    assert "HF_HUB_OFFLINE" in out["message"]
    assert server.count == 0


def test_hub_missing_file(server: FileServer, hub) -> None:  # type: ignore[no-untyped-def]
    out = hub({"repo_id": "esr/span", "filename": "nope.safetensors", "revision": COMMIT})
    assert out["error"] == "DownloadError", out
    assert "not found" in out["message"] and "nope.safetensors" in out["message"]
    assert "\n" not in out["message"]


def test_hub_from_uri() -> None:
    s = HubSource.from_uri("hf://owner/repo/path/in/repo.safetensors")
    assert (s.repo_id, s.filename, s.revision) == ("owner/repo", "path/in/repo.safetensors", "main")
    s = HubSource.from_uri(f"hf://owner/repo/w.pth@{COMMIT}")
    assert (s.repo_id, s.filename, s.revision) == ("owner/repo", "w.pth", COMMIT)
    assert s.uri == f"hf://owner/repo/w.pth@{COMMIT}"
    s = HubSource.from_uri("hf://owner/repo@v1.0/dir/w.pth")
    assert (s.repo_id, s.filename, s.revision) == ("owner/repo", "dir/w.pth", "v1.0")
    assert HubSource.from_uri(HubSource("a/b", "c/d.bin").uri) == HubSource("a/b", "c/d.bin")
    for bad in [
        "https://huggingface.co/a/b/c",
        "hf://owner/repo",
        "hf://owner",
        "hf://owner/repo/",
        "hf://owner//file",
        "hf://owner/repo/file@",
        "hf://owner/repo/../x",
        "hf:///repo/file",
        "",
    ]:
        with pytest.raises(ValueError):
            HubSource.from_uri(bad)
