"""A real HTTP server on 127.0.0.1 for download tests: plain files plus the Hub's resolve API.

It serves real bytes over real sockets; switches make it ignore Range, cut a body short or
answer with an error, and it records every request.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from esrcli.download import sha256_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    root: Path
    port: int = 0
    support_range: bool = True
    cut_short: bool = False
    status: dict[str, int] = field(default_factory=dict)  # url path -> forced HTTP status
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def add_hub(self, repo_id: str, filename: str, data: bytes) -> None:
        self.add(f"_hub/{repo_id}/{filename}", data)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)


def _make_handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    hub_re = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: cutting a body short is clean

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def _record(self) -> None:
            with state.lock:
                state.requests.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, *, head: bool) -> None:
            self._record()
            path = self.path.split("?", 1)[0]
            if path in state.status:
                self._error(state.status[path])
                return
            extra: dict[str, str] = {}
            hub = hub_re.match(path)
            if hub:
                repo_id, _revision, filename = hub.groups()
                file = state.root / "_hub" / repo_id / filename
                # What the Hub sends for an LFS file: commit, sha256 etag, size.
                extra = {"X-Repo-Commit": COMMIT}
                if not file.is_file():
                    self._error(404, {**extra, "X-Error-Code": "EntryNotFound"})
                    return
                extra["ETag"] = f'"{sha256_file(file)}"'
            else:
                file = state.root / path.lstrip("/")
                if not file.is_file():
                    self._error(404)
                    return
            data = file.read_bytes()
            start = 0
            rng = self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d+)-", rng or "")
            if state.support_range and m:
                start = int(m.group(1))
                if start >= len(data):
                    self._error(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            if state.support_range:
                self.send_header("Accept-Ranges", "bytes")
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return
            if state.cut_short:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def _error(self, code: int, headers: dict[str, str] | None = None) -> None:
            body = f"error {code}".encode()
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


@contextmanager
def serve(root: Path) -> Iterator[FileServer]:
    state = FileServer(root=root)
    state.root.mkdir(parents=True, exist_ok=True)
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
