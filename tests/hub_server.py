"""A loopback file server that answers as the Hugging Face hub does (``HF_ENDPOINT`` points at it).

``HEAD``/``GET /OWNER/REPO/resolve/REVISION/FILE`` with the hub's headers (``X-Repo-Commit``,
``ETag`` and ``X-Linked-Etag`` holding the SHA-256 of an LFS file, ``X-Linked-Size``), byte ranges,
and faults: a connection dropped mid-file, a wrong announced SHA-256, a slow transfer, a token
required.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from rkllm_runtime.emulator import EmulatedModel, Rule

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def model_bytes(*, padding_mb: int = 0, rules: list[Rule] | None = None, **fields: object) -> bytes:
    """An emulator model file, padded with comment lines to a size that takes several progress steps.

    Its ``rules`` come before the one that answers "Hello from the hub.".
    """
    every = [*(rules or []), Rule(reply="Hello from the hub.")]
    text = EmulatedModel(rules=every, **fields).text()  # type: ignore[arg-type]
    return (text + ("#" + "x" * 1023 + "\n") * 1024 * padding_mb).encode()


@dataclass
class HubFile:
    """A file the hub serves, and its faults."""

    data: bytes
    announced_sha256: str | None = None
    """What the hub claims (None: the real one)."""
    drop_after: int | None = None
    """Close the connection after this many bytes of the next full GET (once)."""
    delay_s: float = 0.0
    """Pause before each 1 MB block."""

    @property
    def sha256(self) -> str:
        return self.announced_sha256 or hashlib.sha256(self.data).hexdigest()


@dataclass
class Hub:
    """The files by ``OWNER/REPO/FILE``, and what clients asked."""

    files: dict[str, HubFile] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(method, path, Range header) of each request."""
    token: str | None = None
    """Required as ``Authorization: Bearer`` when set."""
    url: str = ""

    def add(self, repo: str, name: str, data: bytes, **faults: object) -> HubFile:
        served = HubFile(data, **faults)  # type: ignore[arg-type]
        self.files[f"{repo}/{name}"] = served
        return served

    def gets(self, name: str) -> list[str | None]:
        """The Range header of each GET of a file (None: the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + name)]


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            parts = unquote(self.path.split("?")[0]).lstrip("/").split("/", 4)
            served = None
            if len(parts) == 5 and parts[2] == "resolve":
                served = hub.files.get(f"{parts[0]}/{parts[1]}/{parts[4]}")
            if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
                self._status(401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"})
                return
            if served is None:
                self._status(404, {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"})
                return
            start = 0
            if rng := self.headers.get("Range"):
                start = int(rng.removeprefix("bytes=").split("-")[0])
            data = served.data[start:]
            self.send_response(206 if start else 200)
            headers = {
                "X-Repo-Commit": COMMIT,
                "ETag": f'"{served.sha256}"',
                "X-Linked-Etag": f'"{served.sha256}"',
                "X-Linked-Size": str(len(served.data)),
                "Accept-Ranges": "bytes",
                "Content-Length": str(len(data)),
                "Content-Type": "application/octet-stream",
                "Connection": "close",  # no handler thread outlives its request
            }
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(served.data) - 1}/{len(served.data)}"
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.close_connection = True
            if not body:
                return
            self.close_connection = True
            limit = len(data)
            if served.drop_after is not None and not start:
                limit, served.drop_after = served.drop_after, None
            for offset in range(0, limit, 2**20):
                time.sleep(served.delay_s)
                try:
                    self.wfile.write(data[offset : min(limit, offset + 2**20)])
                    self.wfile.flush()
                except OSError:
                    return

        def _status(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.close_connection = True
            for key, value in {**headers, "Content-Length": "0", "Connection": "close"}.items():
                self.send_header(key, value)
            self.end_headers()

    return Handler


@contextmanager
def running_hub() -> Iterator[Hub]:
    """A hub on a free loopback port, for the length of the block."""
    hub = Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.block_on_close = True  # server_close() joins the request threads
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
