"""A model on an rkllm-server: errors by kind or by status, the silence bound, the headers sent.

The server is a small aiohttp application on loopback that answers as rkllm-server does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_socket
from aiohttp import web
from aiohttp.test_utils import TestServer

from rkllm_runtime.chat import ChatRequest, ChatResult, EngineStatus, Finished, Message
from rkllm_runtime.errors import (
    AuthenticationError,
    BusyError,
    ContextOverflowError,
    RKLLMError,
    RunError,
    ServerUnavailableError,
    UnknownModelError,
)
from rkllm_runtime.remote import client, silence
from rkllm_runtime.remote.client import RemoteEngine, auth_headers
from rkllm_runtime.remote.silence import longest_prefill_s
from rkllm_runtime.remote.wire import event_to_dict, status_to_dict
from rkllm_runtime.types import ModelParams, PerfStats

MODEL = "qwen2.5:1.5b"
RESULT = ChatResult("Hi", (), PerfStats(1.0, 5, 2.0, 1, 100.0), 5, 0, False, 6)
REQUEST = ChatRequest("You are a voice assistant.", [Message("user", "Hello")], conversation_id="kitchen-1")
QWEN25_1_5B = 1_700_000_000  # bytes of the w8a8 file, about
QWEN3_0_6B = 952_996_582
PARAMS = ModelParams(max_context_len=4096)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_body(**fields: Any) -> dict[str, Any]:
    """``/rkllm/status`` with the model ready."""
    status = status_to_dict(EngineStatus("qwen2.5-1.5b.rkllm", **fields))
    return {"models": {MODEL: {"state": "ready", "error": None} | status}, "npu": {}}


@pytest.fixture(autouse=True)
def allow_sockets() -> None:
    """The client talks HTTP to a server on loopback."""
    pytest_socket.enable_socket()


class Peer:
    """A server answering ``/rkllm/status`` and ``/rkllm/chat`` with what a test sets."""

    def __init__(self) -> None:
        self.status: Handler = self._ready
        self.chat: Handler = self._finished
        self.seen: list[web.Request] = []

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response(status_body())

    async def _finished(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(event_to_dict(Finished(RESULT))) + "\n")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        return await (self.status if request.path == "/rkllm/status" else self.chat)(request)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    peer = Peer()
    app = web.Application()
    app.add_routes([web.get("/rkllm/status", peer.handle), web.post("/rkllm/chat", peer.handle)])
    async with TestServer(app, host="127.0.0.1") as server:
        yield peer, str(server.make_url("/"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def answer(engine: RemoteEngine) -> list[object]:
    async with engine.chat(REQUEST) as stream:
        return [event async for event in stream]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, AuthenticationError),
        (404, UnknownModelError),
        (429, BusyError),
        (502, ServerUnavailableError),
        (503, ServerUnavailableError),
        (504, ServerUnavailableError),
        (500, RunError),
    ],
)
async def test_a_status_without_an_error_kind_stands_for_its_error(
    peer: tuple[Peer, str], session: aiohttp.ClientSession, status: int, error: type[RKLLMError]
) -> None:
    server, url = peer

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=status, text="no")

    server.status = refuse
    engine = RemoteEngine(session, url, MODEL, None)
    with pytest.raises(error) as raised:
        await engine.refresh()
    assert type(raised.value) is error
    assert str(raised.value) == f"HTTP {status} {web.Response(status=status).reason}"


async def test_an_error_kind_wins_over_the_status_and_keeps_its_figures(
    peer: tuple[Peer, str], session: aiohttp.ClientSession
) -> None:
    server, url = peer

    async def overflow(request: web.Request) -> web.Response:
        error = {"kind": "context_overflow", "status": 400, "message": "too long", "tokens": 9, "limit": 4}
        return web.Response(text=json.dumps({"error": error}) + "\n")

    server.chat = overflow
    engine = RemoteEngine(session, url, MODEL, None)
    with pytest.raises(ContextOverflowError) as raised:
        await answer(engine)
    assert (str(raised.value), raised.value.tokens, raised.value.limit) == ("too long", 9, 4)
    assert engine.stats.last_error is None  # the request's fault, not the model's
    assert engine.available


async def test_after_a_failed_run_the_counters_are_read_again_and_a_cut_answer_marks_the_server_away(
    peer: tuple[Peer, str], session: aiohttp.ClientSession
) -> None:
    server, url = peer

    async def fail(request: web.Request) -> web.Response:
        return web.json_response({"error": {"kind": "run", "message": "rkllm_run failed"}}, status=500)

    server.chat = fail
    engine = RemoteEngine(session, url, MODEL, None)
    with pytest.raises(RunError):
        await answer(engine)
    assert engine.available
    # The counters are read again, with the error as the server's engine recorded it.
    assert [request.path for request in server.seen] == ["/rkllm/status", "/rkllm/chat", "/rkllm/status"]

    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        return response  # no Finished

    server.chat = cut
    with pytest.raises(ServerUnavailableError, match="ended the answer early"):
        await answer(engine)
    assert not engine.available


async def test_the_key_and_the_conversation_are_sent_as_headers(
    peer: tuple[Peer, str], session: aiohttp.ClientSession
) -> None:
    server, url = peer
    engine = RemoteEngine(session, url, MODEL, "s3cret")
    assert [event async for event in engine.chat(REQUEST)] == [Finished(RESULT)]
    status, chat, *_ = server.seen
    assert status.headers["Authorization"] == chat.headers["Authorization"] == "Bearer s3cret"
    assert chat.headers[client.CONVERSATION_HEADER] == "kitchen-1"
    assert "X-RKLLM-Conversation" not in status.headers
    assert auth_headers(None) == {}


async def test_a_server_silent_longer_than_the_longest_prefill_is_unavailable(
    peer: tuple[Peer, str], session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, url = peer
    monkeypatch.setattr(silence, "SILENCE_FLOOR_S", 0.2)
    bound = longest_prefill_s(QWEN25_1_5B, 4096)

    async def big(request: web.Request) -> web.Response:
        return web.json_response(status_body(model_bytes=QWEN25_1_5B, params=PARAMS))

    server.status = big
    engine = RemoteEngine(session, url, MODEL, None)
    await engine.refresh()
    assert engine.longest_silence_s == bound

    async def small(request: web.Request) -> web.Response:
        return web.json_response(status_body(model_bytes=0, params=PARAMS))

    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(3600)
        return response

    server.status, server.chat = small, silent
    await engine.refresh()
    assert engine.longest_silence_s == 0.2
    with pytest.raises(ServerUnavailableError, match="said nothing for 0 s, longer than the longest prefill"):
        await answer(engine)
    assert not engine.available
