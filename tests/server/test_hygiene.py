"""Slow, idle and malformed clients: time limits, the connection cap, and 4xx errors without tracebacks."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.server.conftest import MODEL, RunningServer, StartServer

KEY = "s3cret-key"
# Short limits, so that the tests do not wait long for them.
LIMITS = ("--header-timeout", "1", "--body-timeout", "1")
GRACE_S = 5.0
"""How long a test waits for the server to act on a one-second limit."""


@pytest.fixture
def keyed(start_server: StartServer, tmp_path: Path) -> RunningServer:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    return start_server("--api-key-file", str(key_file), *LIMITS, api_key=KEY)


def _connect(server: RunningServer) -> socket.socket:
    address = urlsplit(server.url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.settimeout(GRACE_S)
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed the connection (a timeout fails the test)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_a_connection_that_sends_nothing_is_closed(keyed: RunningServer) -> None:
    with _connect(keyed) as sock:
        assert _closed_by_server(sock) == b""


def test_headers_trickled_a_byte_at_a_time_are_cut_off(keyed: RunningServer) -> None:
    head = f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
    with _connect(keyed) as sock:
        sent = _trickle(sock, head)
    assert sent < len(head)


def _trickle(sock: socket.socket, data: bytes) -> int:
    """Send a byte every 0.2 s; how many went before the server closed the connection."""
    for sent in range(len(data)):
        try:
            sock.sendall(data[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            return sent
        time.sleep(0.2)
    return len(data)


def _post_one_byte(server: RunningServer, path: str, declared: int) -> bytes:
    """A POST that declares ``declared`` bytes of body and sends one; what came back until the close."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {declared}\r\n\r\n{{"
    )
    with _connect(server) as sock:
        sock.sendall(head.encode())
        return _closed_by_server(sock)


def test_a_declared_body_over_the_limit_is_refused_unread(keyed: RunningServer) -> None:
    reply = _post_one_byte(keyed, "/api/chat", declared=500 * 2**20)
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413 ")  # the reason phrase depends on the Python release
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"error": "the request is too large"}


def test_a_body_that_does_not_arrive_is_408(keyed: RunningServer) -> None:
    reply = _post_one_byte(keyed, "/v1/chat/completions", declared=100)
    assert reply.startswith(b"HTTP/1.1 408 ")
    error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert (error["type"], error["message"]) == (
        "invalid_request_error",
        "the request body did not arrive within 1 s",
    )


def _open(server: RunningServer, count: int, stack: ExitStack) -> Iterator[socket.socket]:
    for _ in range(count):
        yield stack.enter_context(_connect(server))


def test_health_answers_under_a_flood_of_idle_and_trickling_connections(start_server: StartServer) -> None:
    """300 idle and 100 trickling connections against a descriptor limit of 256."""
    server = start_server("--header-timeout", "60", nofile=256)
    with ExitStack() as stack:
        idle = list(_open(server, 300, stack))
        trickling = list(_open(server, 100, stack))
        for sock in trickling:
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost")
        started = time.monotonic()
        health = httpx.get(server.url + "/health", timeout=1.0)
        took = time.monotonic() - started
        assert health.json() == {"status": "ok"}
        answer = server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}])
        assert answer.message.content == "Hello! How can I help?"
        print(f"/health under 400 idle or trickling connections: {took * 1000:.0f} ms")
        assert len(idle) + len(trickling) == 400
    log = server.log()
    assert "Too many open files" not in log
    assert "Traceback" not in log


def _get_models(sock: socket.socket) -> bytes:
    sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode())
    return sock.recv(65536)


def test_at_the_cap_unauthenticated_connections_are_shed_first(
    start_server: StartServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    server = start_server("--api-key-file", str(key_file), "--max-connections", "20", api_key=KEY)
    with ExitStack() as stack:
        client = stack.enter_context(
            _connect(server)
        )  # the oldest, so the first to go if it counted for nothing
        assert _get_models(client).startswith(b"HTTP/1.1 200 ")
        strangers = list(_open(server, 40, stack))
        assert _get_models(client).startswith(b"HTTP/1.1 200 ")  # the same connection still answers
        assert _closed_by_server(strangers[0]) == b""
        assert _get_models(strangers[-1]).startswith(b"HTTP/1.1 200 ")
        metrics = server.http("GET", "/metrics").text  # one more connection, one more shed
    assert "\nrkllm_open_connections 20\n" in metrics
    assert "\nrkllm_shed_connections_total 22\n" in metrics  # 41 connections, then this one, for 20 places


def _deep_tool_body(shape: str, depth: int = 10_000) -> bytes:
    """A chat whose one tool's parameter schema nests ``depth`` levels deep (Ollama and OpenAI, or native)."""
    schema = '{"type": "object", "properties": {"a": ' * depth + "{}" + "}}" * depth
    user = '[{"role": "user", "content": "hi"}]'
    if shape == "request":
        tool = f'{{"name": "deep", "parameters": {schema}}}'
        return f'{{"model": "{MODEL}", "request": {{"messages": {user}, "tools": [{tool}]}}}}'.encode()
    tool = f'{{"type": "function", "function": {{"name": "deep", "parameters": {schema}}}}}'
    return f'{{"model": "{MODEL}", "messages": {user}, "tools": [{tool}], "stream": false}}'.encode()


@pytest.mark.parametrize(
    ("path", "request_", "status", "message"),
    [
        ("/v1/models", {"headers": {"Authorization": b"Bearer \xff\xfe"}}, 401, "a valid API key"),
        ("/api/chat", {"content": b"[" * 100_000 + b"]" * 100_000}, 400, "nested too deeply"),
        ("/v1/chat/completions",
         {"json": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                   "stream_options": "yes"}},
         400, '"stream_options" must be an object'),
        ("/v1/chat/completions",
         {"json": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
                   "response_format": "json"}},
         400, '"response_format" must be an object'),
        ("/api/chat", {"content": b"\xff{"}, 400, "not valid JSON"),
        # 10,000 levels: Python 3.11's parser gives up first (the body's JSON is too deep), 3.14's parses it.
        ("/api/chat", {"content": _deep_tool_body("messages")}, 400, "nested too deeply"),
        ("/api/chat", {"content": _deep_tool_body("messages", 200)}, 400, '"tools[0].function.parameters'),
        ("/v1/chat/completions", {"content": _deep_tool_body("messages", 200)}, 400,
         '"tools[0].function.parameters'),
        ("/rkllm/chat", {"content": _deep_tool_body("request", 200)}, 400, '"request.tools[0].parameters'),
        ("/rkllm/chat",
         {"json": {"model": MODEL, "request": {"messages": [{"role": "user", "content": "hi"}],
                                               "malformed_call_retries": -5}}},
         400, '"request.malformed_call_retries" must be between 0 and'),
    ],
    ids=["non-ascii-key", "deeply-nested-json", "stream-options-type", "response-format-type", "not-utf8",
         "ten-thousand-levels-deep-tool-schema",
         "ollama-deep-tool-schema", "openai-deep-tool-schema", "native-deep-tool-schema",
         "native-negative-retries"],
)  # fmt: skip
def test_malformed_requests_are_4xx_in_the_apis_shape_without_a_traceback(
    keyed: RunningServer, path: str, request_: dict[str, object], status: int, message: str
) -> None:
    headers = {"Content-Type": "application/json", **keyed.headers(), **request_.pop("headers", {})}
    response = httpx.post(keyed.url + path, headers=headers, timeout=30, **request_)
    if path == "/v1/models":
        response = httpx.get(keyed.url + path, headers=headers, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert message in (error["message"] if path.startswith("/v1/") else error)
    assert "Traceback" not in keyed.log()


BAD_HTTP = [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad\xffHeader: 1\r\n\r\n",
    b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\n\r\n",
]


def test_requests_http_cannot_parse_get_400_and_one_log_line_each(keyed: RunningServer) -> None:
    for raw in BAD_HTTP:
        with _connect(keyed) as sock:
            sock.sendall(raw)
            assert _closed_by_server(sock).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    keyed.stop()
    log = [line for line in keyed.log().splitlines() if not line.startswith("I rkllm")]
    assert sum('"UNKNOWN / HTTP/1.0" 400' in line for line in log) == len(BAD_HTTP)
    assert not [line for line in log if "aiohttp.server" in line or "Traceback" in line]
