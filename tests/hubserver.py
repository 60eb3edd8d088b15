"""A fake Hugging Face Hub on 127.0.0.1: the part of the HTTP API that HfApi uses to publish a model.

Tests point the real huggingface_hub client at it (``endpoint=`` or ``HF_ENDPOINT``) and then look at
what arrived: repos, branches, commits with their whole trees, and every request. As on the Hub,
weights (*.safetensors, *.onnx, *.pth) go the LFS way: preupload says "lfs", the LFS batch answers
the "basic" transfer with a PUT href on this server, and the commit names them by sha256; other
files travel base64 inside the commit. There is no Xet here. huggingface_hub 2.4 chooses Xet on the
client side, whenever hf_xet imports, whatever a server answers, so tests must switch it off
(``huggingface_hub.constants.HF_HUB_DISABLE_XET = True``); the Xet token routes answer 501 so that a
forgotten switch fails fast instead of reaching for a CAS server.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

LFS_PATTERNS = ("*.safetensors", "*.onnx", "*.pth")
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub sends anything this big through LFS, whatever its name
Json = dict[str, Any] | list[Any]


def git_blob_sha1(data: bytes) -> str:
    """The oid git gives a file: the Hub's ETag and preupload `oid` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """What git stores in place of an LFS file (its size is the `pointerSize` the API reports)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]  # the whole tree at this commit


@dataclass
class Repo:
    """One model repo, as tests assert on it: every commit keeps its whole tree, so old revisions stay readable."""

    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> newest commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> content, from the PUTs
    promised: dict[str, int] = field(default_factory=dict)  # sha256 -> size a batch answer allowed a PUT for


class Seen(NamedTuple):
    method: str
    path: str  # unquoted, without the query
    status: int


class HubError(Exception):
    """An error answer, with the X-Error-Code that huggingface_hub turns into its own exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None, **body: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body


@dataclass
class HubState:
    """Everything the server knows, shared with the test; handlers change it under `lock`."""

    port: int = 0
    lfs_patterns: tuple[str, ...] = LFS_PATTERNS
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_lfs(self, path: str, size: int) -> bool:
        name = path.rsplit("/", 1)[-1]
        return size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(name, p) for p in self.lfs_patterns)

    def commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes]) -> Commit:
        """A new commit; the sequence number keeps two identical trees from sharing an oid."""
        tree = "".join(f"{p}\0{git_blob_sha1(d)}\n" for p, d in sorted(files.items()))
        oid = hashlib.sha1(f"{len(repo.commits)}\n{parent}\n{message}\n{tree}".encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, message, dict(files))
        return repo.commits[oid]

    def etag(self, path: str, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path, len(data)) else git_blob_sha1(data)


REPO = r"(?P<repo>[^/]+/[^/]+)"
Reply = tuple[int, Json | bytes, dict[str, str]]
Args = dict[str, str]  # the unquoted parts of the URL: repo, rev, path, oid


def _make_handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every answer has a Content-Length

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def do_GET(self) -> None:
            self._dispatch()

        do_HEAD = do_POST = do_PUT = do_GET

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _dispatch(self) -> None:
            body = self._read_body()  # always drained, so a keep-alive connection stays in step
            url = urlsplit(self.path)
            path, self.query = unquote(url.path), parse_qs(url.query)
            self.authorized = self.headers.get("Authorization", "").startswith("Bearer ")
            with state.lock:
                try:
                    for method, pattern, route in ROUTES:
                        if self.command in method and (m := re.fullmatch(pattern, url.path)):  # a quoted "/" stays in its part
                            args = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                            status, payload, headers = route(self, args, body)
                            break
                    else:
                        raise HubError(404, f"no route for {self.command} {path}")
                except HubError as e:
                    status, payload, headers = (
                        e.status,
                        {"error": e.message, **e.body},
                        {**e.headers, "Content-Type": "application/json", "X-Error-Message": e.message},
                    )
                    if e.code:
                        headers["X-Error-Code"] = e.code
                state.requests.append(Seen(self.command, path, status))
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers.setdefault("Content-Type", "application/json")
            headers.setdefault("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        # -- helpers ------------------------------------------------------------------------

        def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
            repo = state.repos.get(repo_id)
            if repo is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            if (repo.private or write) and not self.authorized:  # the Hub hides private repos behind 401
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            return repo

        def _revision(self, repo: Repo, rev: str) -> Commit:
            commit = repo.commits.get(repo.branches.get(rev, rev))
            if commit is None:
                raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return commit

        def _json(self, body: bytes) -> dict[str, Any]:
            try:
                return json.loads(body or b"{}")
            except ValueError as e:
                raise HubError(400, f"bad JSON: {e}") from None

        # -- repos, branches, info --------------------------------------------------------------

        def create_repo(self, a: Args, body: bytes) -> Reply:
            if not self.authorized:
                raise HubError(401, "You must be authenticated to create a repo")
            req = self._json(body)
            if req.get("type", "model") != "model":
                raise HubError(400, "this test hub only hosts models")
            repo_id = f"{req.get('organization') or 'user'}/{req['name']}"
            if repo_id in state.repos:
                # create_repo(exist_ok=True) reads the url from this answer
                raise HubError(409, "You already created this model repo", url=f"{state.endpoint}/{repo_id}")
            repo = state.repos[repo_id] = Repo(private=req.get("visibility") == "private" or req.get("private") is True)
            gitattributes = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in state.lfs_patterns)
            repo.branches["main"] = state.commit(repo, None, "initial commit", {".gitattributes": gitattributes.encode()}).oid
            return 200, {"url": f"{state.endpoint}/{repo_id}", "name": repo_id}, {}

        def create_branch(self, a: Args, body: bytes) -> Reply:
            repo = self._repo(a["repo"], write=True)
            start = self._revision(repo, self._json(body).get("startingPoint") or "main")
            if a["rev"] in repo.branches:
                raise HubError(409, f"Reference refs/heads/{a['rev']} already exists")
            repo.branches[a["rev"]] = start.oid
            return 200, {}, {}

        def model_info(self, a: Args, body: bytes) -> Reply:
            repo = self._repo(a["repo"])
            commit = self._revision(repo, a.get("rev", "main"))
            siblings = [{"rfilename": p, **self._blob(p, d, "size", "blobId")} for p, d in sorted(commit.files.items())]
            info = {"id": a["repo"], "author": a["repo"].split("/")[0], "sha": commit.oid, "private": repo.private}
            return 200, {**info, "gated": False, "disabled": False, "siblings": siblings}, {}

        def tree(self, a: Args, body: bytes) -> Reply:
            commit = self._revision(self._repo(a["repo"]), a["rev"])
            prefix = f"{a['path'].strip('/')}/" if a.get("path") else ""
            recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
            entries: dict[str, dict[str, Any]] = {}
            for path, data in sorted(commit.files.items()):
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix) :].split("/")
                for depth in range(1, len(parts) if recursive else min(len(parts), 2)):  # the folders on the way
                    folder = prefix + "/".join(parts[:depth])
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": git_blob_sha1(folder.encode())})
                if recursive or len(parts) == 1:
                    entries[path] = {"type": "file", "path": path, **self._blob(path, data, "size", "oid")}
            if prefix and not entries:
                raise HubError(404, f"{prefix} not found", "EntryNotFound")
            return 200, list(entries.values()), {}

        def _blob(self, path: str, data: bytes, size_key: str, oid_key: str) -> dict[str, Any]:
            if not state.is_lfs(path, len(data)):
                return {size_key: len(data), oid_key: git_blob_sha1(data)}
            pointer = lfs_pointer(data)
            sha = hashlib.sha256(data).hexdigest()
            lfs = {"oid": sha, "sha256": sha, "size": len(data), "pointerSize": len(pointer)}
            return {size_key: len(data), oid_key: git_blob_sha1(pointer), "lfs": lfs}

        # -- upload: preupload, LFS batch + PUT + verify, commit --------------------------------

        def preupload(self, a: Args, body: bytes) -> Reply:
            commit = self._revision(self._repo(a["repo"], write=True), a["rev"])
            files = []
            for f in self._json(body).get("files", []):
                mode = "lfs" if state.is_lfs(f["path"], f["size"]) else "regular"
                old = commit.files.get(f["path"])
                oid = None if old is None else state.etag(f["path"], old)
                files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            return 200, {"files": files, "commitOid": commit.oid}, {}

        def lfs_batch(self, a: Args, body: bytes) -> Reply:
            repo = self._repo(a["repo"], write=True)
            req = self._json(body)
            if req.get("operation") != "upload" or "basic" not in req.get("transfers", ["basic"]):
                raise HubError(400, "this test hub only takes basic LFS uploads")
            objects = []
            for obj in req.get("objects", []):
                oid, size = obj["oid"], obj["size"]
                answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs:  # not stored yet: hand out a PUT
                    repo.promised[oid] = size
                    href = f"{state.endpoint}/_lfs/{a['repo']}/{oid}"
                    answer["actions"] = {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}}
                objects.append(answer)
            return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

        def lfs_put(self, a: Args, body: bytes) -> Reply:
            """Stands in for the signed storage URL: only a PUT a batch answer promised is taken, no token needed."""
            repo, oid = state.repos.get(a["repo"]), a["oid"]
            if repo is None or oid not in repo.promised:
                raise HubError(403, "no upload was promised for this object")
            if hashlib.sha256(body).hexdigest() != oid or len(body) != repo.promised[oid]:
                raise HubError(400, f"content does not match sha256 {oid} and size {repo.promised[oid]}")
            repo.lfs[oid] = body
            del repo.promised[oid]
            return 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}

        def lfs_verify(self, a: Args, body: bytes) -> Reply:
            repo, req = self._repo(a["repo"], write=True), self._json(body)
            if req.get("oid") != a["oid"] or len(repo.lfs.get(a["oid"], b"")) != req.get("size"):
                raise HubError(404, f"object {a['oid']} of size {req.get('size')} was not uploaded")
            return 200, {}, {}

        def create_commit(self, a: Args, body: bytes) -> Reply:
            repo = self._repo(a["repo"], write=True)
            if "create_pr" in self.query:
                raise HubError(400, "this test hub does not do pull requests")
            if a["rev"] not in repo.branches:
                raise HubError(404, f"Invalid rev id: {a['rev']} is not a branch", "RevisionNotFound")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise HubError(400, "a commit starts with its header line")
            header, parent = lines[0]["value"], repo.commits[repo.branches[a["rev"]]]
            if header.get("parentCommit") and not parent.oid.startswith(header["parentCommit"]):
                raise HubError(412, f"{a['rev']} is at {parent.oid}, not {header['parentCommit']}")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    if value["oid"] not in repo.lfs or len(repo.lfs[value["oid"]]) != value.get("size", -1):
                        raise HubError(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = repo.lfs[value["oid"]]
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: d for p, d in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            message = "\n\n".join(part for part in (header.get("summary", ""), header.get("description", "")) if part)
            commit = state.commit(repo, parent.oid, message, files)
            repo.branches[a["rev"]] = commit.oid
            url = f"{state.endpoint}/{a['repo']}/commit/{commit.oid}"
            return 200, {"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None}, {}

        # -- download -----------------------------------------------------------------------------

        def resolve(self, a: Args, body: bytes) -> Reply:
            commit = self._revision(self._repo(a["repo"]), a["rev"])
            headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            data = commit.files.get(a["path"])
            if data is None:
                raise HubError(404, f"Entry not found: {a['path']}", "EntryNotFound", headers)
            headers["ETag"] = f'"{state.etag(a["path"], data)}"'
            if state.is_lfs(a["path"], len(data)):  # the Hub's own headers for the file behind an LFS pointer
                headers |= {"X-Linked-Etag": headers["ETag"], "X-Linked-Size": str(len(data))}
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if not rng:
                return 200, data, headers
            start, end = int(rng[1]), min(int(rng[2] or len(data) - 1), len(data) - 1)
            if start >= len(data):
                raise HubError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            return 206, data[start : end + 1], headers | {"Content-Range": f"bytes {start}-{end}/{len(data)}"}

        def no_xet(self, a: Args, body: bytes) -> Reply:
            raise HubError(501, "this test hub has no Xet storage: set huggingface_hub.constants.HF_HUB_DISABLE_XET = True")

        def validate_yaml(self, a: Args, body: bytes) -> Reply:
            return 200, {"errors": [], "warnings": []}, {}

    ROUTES: list[tuple[tuple[str, ...], str, Callable[..., Reply]]] = [
        (("POST",), r"/api/repos/create", Handler.create_repo),
        (("POST",), r"/api/validate-yaml", Handler.validate_yaml),
        (("GET",), rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", Handler.model_info),
        (("GET",), rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", Handler.tree),
        (("POST",), rf"/api/models/{REPO}/branch/(?P<rev>[^/]+)", Handler.create_branch),
        (("POST",), rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", Handler.preupload),
        (("POST",), rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", Handler.create_commit),
        (("GET", "POST"), rf"/api/models/{REPO}/xet-(?:read|write)-token(?:/.*)?", Handler.no_xet),
        (("POST",), rf"/{REPO}\.git/info/lfs/objects/batch", Handler.lfs_batch),
        (("PUT",), rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})", Handler.lfs_put),
        (("POST",), rf"/_lfs/{REPO}/(?P<oid>[0-9a-f]{{64}})/verify", Handler.lfs_verify),
        (("GET", "HEAD"), rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", Handler.resolve),
    ]
    return Handler


@contextmanager
def serve_hub() -> Iterator[HubState]:
    """Run the fake Hub on a free port for the duration of the block."""
    state = HubState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
