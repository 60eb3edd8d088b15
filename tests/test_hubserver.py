"""The fake Hub of hubserver.py driven by the real huggingface_hub client: publish, branch, download.

huggingface_hub reads HF_ENDPOINT, HF_HUB_DISABLE_XET, HF_HUB_CACHE and HF_HUB_DISABLE_PROGRESS_BARS
once, at import. So in this process the client gets ``endpoint=`` and ``cache_dir=`` on every call and
its constants are patched; the environment variables only reach the subprocess test, which checks
that HF_ENDPOINT alone is enough when it is set before the import.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import HubState, serve_hub
from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

REPO = "esr/tiny-x2"
TOKEN = "hf_test"
HEX40 = re.compile(r"[0-9a-f]{40}")
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubState]:
    """A fresh fake Hub; huggingface_hub kept off Xet, proxies, saved tokens and the user's caches."""
    for var in (*_PROXY_VARS, "HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var, value in {
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_XET": "1",
    }.items():
        monkeypatch.setenv(var, value)  # for subprocesses: this process imported huggingface_hub already
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # is_xet_available() looks at it on every call
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(importlib.import_module("huggingface_hub.utils.tqdm"), "HF_HUB_DISABLE_PROGRESS_BARS", True)
    with serve_hub() as state:
        monkeypatch.setenv("HF_ENDPOINT", state.endpoint)
        yield state


def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _download(hub: HubState, filename: str, revision: str, cache: Path, token: str | bool = TOKEN) -> Path:
    return Path(hf_hub_download(REPO, filename, revision=revision, endpoint=hub.endpoint, token=token, cache_dir=cache))


def _calls(hub: HubState) -> list[tuple[str, str]]:
    return [(seen.method, seen.path) for seen in hub.requests]


def test_publish_to_main_then_to_a_branch(hub: HubState, tmp_path: Path) -> None:
    weights = random.Random(0).randbytes(100_000)
    readme = b"---\nlicense: mit\n---\n# tiny x2\n"
    config = b'{"scale": 2}\n'
    sha = hashlib.sha256(weights).hexdigest()
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO, repo_type="model", private=True, exist_ok=True)
    v0 = _folder(tmp_path / "v0", {"model.safetensors": weights, "README.md": readme})
    first = api.upload_folder(folder_path=v0, repo_id=REPO, revision="main", commit_message="weights v0")
    api.create_branch(REPO, branch="v1", exist_ok=True)
    v1 = _folder(tmp_path / "v1", {"model.safetensors": weights, "config.json": config})
    second = api.upload_folder(folder_path=v1, repo_id=REPO, revision="v1", commit_message="config for v1")

    assert HEX40.fullmatch(first.oid) and HEX40.fullmatch(second.oid) and first.oid != second.oid
    repo = hub.repos[REPO]
    assert repo.private
    assert repo.branches == {"main": first.oid, "v1": second.oid}
    assert repo.commits[first.oid].message == "weights v0" and repo.commits[second.oid].parent == first.oid
    assert repo.commits[first.oid].files.keys() == {".gitattributes", "model.safetensors", "README.md"}
    assert repo.commits[first.oid].files["model.safetensors"] == weights and repo.commits[first.oid].files["README.md"] == readme
    assert repo.commits[second.oid].files["config.json"] == config

    # One cache per revision: a cache that holds a commit's files answers by commit id without asking the server.
    for rev in ("main", first.oid, "v1", second.oid):
        cache = tmp_path / f"downloads-{rev}"
        path = _download(hub, "model.safetensors", rev, cache)
        assert path.read_bytes() == weights
        assert path.resolve().name == sha  # cached under the LFS etag, as from the Hub
        assert _download(hub, "README.md", rev, cache).read_bytes() == readme
        if rev in ("v1", second.oid):
            assert _download(hub, "config.json", rev, cache).read_bytes() == config
        else:
            with pytest.raises(EntryNotFoundError):
                _download(hub, "config.json", rev, cache)
    for rev in (first.oid, second.oid):
        assert ("HEAD", f"/{REPO}/resolve/{rev}/model.safetensors") in _calls(hub)

    assert api.list_repo_files(REPO, revision=first.oid) == [".gitattributes", "README.md", "model.safetensors"]
    assert "config.json" in api.list_repo_files(REPO, revision="v1")
    info = api.model_info(REPO, revision="v1")
    assert info.sha == second.oid and info.private
    lfs = {s.rfilename: s.lfs.sha256 for s in info.siblings or [] if s.lfs}
    assert lfs == {"model.safetensors": sha}

    # The weights went the LFS way, once (the second commit saw them unchanged); text inline; never Xet.
    calls = _calls(hub)
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in calls
    puts = [path for method, path in calls if method == "PUT"]
    assert puts == [f"/_lfs/{REPO}/{sha}"]
    assert not any("xet" in path for _, path in calls)


def test_exist_ok_and_conflicts(hub: HubState, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    url = api.create_repo(REPO, repo_type="model", private=False)
    assert url.repo_id == REPO and url.endpoint == hub.endpoint
    api.create_repo(REPO, repo_type="model", private=False, exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO, repo_type="model")
    assert err.value.response.status_code == 409

    api.create_branch(REPO, branch="v1")
    api.create_branch(REPO, branch="v1", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(REPO, branch="v1")
    assert err.value.response.status_code == 409
    with pytest.raises(RevisionNotFoundError):
        api.create_branch(REPO, branch="v2", revision="nowhere")
    api.create_branch(REPO, branch="release/v2", revision="v1")  # a "/" in a name travels quoted
    gitattributes = hf_hub_download(REPO, ".gitattributes", revision="release/v2", endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path)
    assert b"*.safetensors filter=lfs" in Path(gitattributes).read_bytes()
    repo = hub.repos[REPO]
    assert not repo.private and repo.branches["v1"] == repo.branches["main"] == repo.branches["release/v2"]
    assert api.model_info(REPO, revision="release/v2").sha == repo.branches["main"]


def test_private_repo_needs_the_token(hub: HubState, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO, private=True)
    api.upload_folder(folder_path=_folder(tmp_path / "up", {"README.md": b"# private\n"}), repo_id=REPO)
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info(REPO)
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, "README.md", "main", tmp_path / "anon", token=False)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{hub.endpoint}/{REPO}/resolve/main/README.md")
    assert err.value.code == 401 and err.value.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(HfHubHTTPError):
        anonymous.create_repo("esr/other")
    assert set(hub.repos) == {REPO}
    assert _download(hub, "README.md", "main", tmp_path / "owner").read_bytes() == b"# private\n"

    api.create_repo("esr/public")
    assert anonymous.model_info("esr/public").private is False


def test_unknown_repo_and_revision(hub: HubState, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, "README.md", "main", tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(REPO)
    api.create_repo(REPO)
    with pytest.raises(RevisionNotFoundError):
        _download(hub, ".gitattributes", "nowhere", tmp_path / "c")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(REPO, revision="nowhere")
    with pytest.raises(RevisionNotFoundError):
        api.upload_folder(folder_path=_folder(tmp_path / "up", {"a.json": b"{}"}), repo_id=REPO, revision="nowhere")
    assert [(s.path, s.status) for s in hub.requests if s.status == 404][0] == (f"/{REPO}/resolve/main/README.md", 404)


def test_lfs_storage_checks_what_it_is_given(hub: HubState) -> None:
    """A PUT nobody asked for, wrong bytes, or a commit naming an object never uploaded are refused."""
    HfApi(endpoint=hub.endpoint, token=TOKEN).create_repo(REPO)
    data = b"weights" * 1000
    oid = hashlib.sha256(data).hexdigest()

    def call(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(hub.endpoint + path, body, {"Authorization": f"Bearer {TOKEN}", **(headers or {})}, method=method)
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert call("PUT", f"/_lfs/{REPO}/{oid}", data)[0] == 403  # no batch answer promised it
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}], "hash_algo": "sha256"}
    status, body = call("POST", f"/{REPO}.git/info/lfs/objects/batch", json.dumps(batch).encode())
    answer = json.loads(body)
    assert status == 200 and answer["transfer"] == "basic"
    assert answer["objects"][0]["actions"]["upload"]["href"] == f"{hub.endpoint}/_lfs/{REPO}/{oid}"
    assert call("PUT", f"/_lfs/{REPO}/{oid}", data[:-1] + b"X")[0] == 400
    commit = [
        {"key": "header", "value": {"summary": "s"}},
        {"key": "lfsFile", "value": {"path": "m.pth", "algo": "sha256", "oid": oid, "size": len(data)}},
    ]
    ndjson = "".join(json.dumps(line) + "\n" for line in commit).encode()
    assert call("POST", f"/api/models/{REPO}/commit/main", ndjson)[0] == 400  # not uploaded yet
    assert call("PUT", f"/_lfs/{REPO}/{oid}", data)[0] == 200
    assert call("POST", f"/api/models/{REPO}/commit/main", ndjson)[0] == 200
    assert call("GET", f"/{REPO}/resolve/main/m.pth", headers={"Range": "bytes=7-13"}) == (206, b"weights")


def test_xet_left_on_fails_fast(hub: HubState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With hf_xet importable, upload_folder goes to Xet whatever the server says; here it stops at the 501."""
    pytest.importorskip("hf_xet")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO)
    folder = _folder(tmp_path / "up", {"model.safetensors": b"\0" * 1000})
    with pytest.raises(Exception, match="501"):
        api.upload_folder(folder_path=folder, repo_id=REPO)
    assert ("GET", f"/api/models/{REPO}/xet-write-token/main") in _calls(hub)
    assert not any(method == "PUT" or "/commit/" in path for method, path in _calls(hub))


def test_hf_endpoint_set_before_import_is_enough(hub: HubState, tmp_path: Path) -> None:
    """A fresh interpreter with HF_ENDPOINT (and HF_HUB_DISABLE_XET) in its environment needs no endpoint= at all."""
    folder = _folder(tmp_path / "up", {"model.onnx": b"onnx" * 5000, "README.md": b"# hi\n"})
    script = f"""
from huggingface_hub import HfApi, hf_hub_download
api = HfApi(token="{TOKEN}")
api.create_repo("{REPO}", private=True, exist_ok=True)
api.create_branch("{REPO}", branch="v1", exist_ok=True)
oid = api.upload_folder(folder_path={str(folder)!r}, repo_id="{REPO}", revision="v1").oid
print(oid)
print(hf_hub_download("{REPO}", "model.onnx", revision=oid, token="{TOKEN}"))
"""
    out = subprocess.run([sys.executable, "-c", script], env=os.environ, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    oid, path = out.stdout.split()
    assert hub.repos[REPO].branches["v1"] == oid
    assert Path(path).read_bytes() == b"onnx" * 5000 and Path(path).is_relative_to(tmp_path / "hf-cache")
    assert any(method == "PUT" for method, _ in _calls(hub)) and not any("xet" in path for _, path in _calls(hub))
