"""What every chat endpoint does: read the body, start the chat, pass its events on."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from rkllm_runtime.chat import ChatEngine, ChatEvent, ChatRequest, ChatStream, Finished
from rkllm_runtime.errors import RKLLMError

from .config import ServerConfig
from .errors import ApiError, bad_request, from_runtime
from .metrics import ServerMetrics
from .models import ModelRegistry, ServedModel


@dataclass(frozen=True, slots=True)
class Server:
    """What the handlers share."""

    config: ServerConfig
    registry: ModelRegistry
    metrics: ServerMetrics
    started: float


SERVER = web.AppKey("server", Server)
MODEL = web.RequestKey("model", str)
"""The model a request named, for the response metrics."""


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (413 beyond the size limit, 400 when it is not JSON)."""
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise
    except ValueError as err:
        raise bad_request(f"the body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body


class Chat:
    """One chat of a request: errors before the first event become the response's status."""

    def __init__(
        self,
        server: Server,
        model: ServedModel,
        request: ChatRequest,
        keep_alive: float | bool | None = False,
    ) -> None:
        self.model = model.name
        self.request = request
        self.started = time.monotonic()
        self._server = server
        self._served = model
        self._keep_alive = keep_alive
        self._stream: ChatStream | None = None
        self._first: ChatEvent | None = None

    async def __aenter__(self) -> Chat:
        engine = await self._server.registry.acquire(self._served, self._keep_alive)  # loaded on first use
        try:
            return await self._start(engine)
        except BaseException:
            self._server.registry.release(self._served)
            raise

    async def _start(self, engine: ChatEngine) -> Chat:
        self._stream = engine.chat(self.request)
        try:
            self._first = await anext(self._stream)
        except RKLLMError as err:
            await self._stream.aclose()
            raise from_runtime(err) from err
        except BaseException:
            await self._stream.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._stream is not None
        try:
            await self._stream.aclose()  # a client gone mid-stream aborts the run here
        finally:
            self._server.registry.release(self._served)

    async def events(self) -> AsyncIterator[ChatEvent]:
        """Every event, :class:`Finished` last (counted in the metrics)."""
        assert self._stream is not None
        assert self._first is not None
        event = self._first
        while True:
            if isinstance(event, Finished):
                self._server.metrics.finished(self.model, event.result)
            yield event
            try:
                event = await anext(self._stream)
            except StopAsyncIteration:
                return


async def collect(chat: Chat) -> list[ChatEvent]:
    """Every event of a chat that is answered in one response."""
    try:
        return [event async for event in chat.events()]
    except RKLLMError as err:
        raise from_runtime(err) from err


def dumps(data: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def iso_now() -> str:
    """The time now, as Ollama writes it."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error_body(err: ApiError, openai: bool) -> dict[str, Any]:
    """An error in the API's shape."""
    if openai:
        kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
        return {
            "error": {
                "message": err.message,
                "type": kind.get(err.status, "server_error"),
                "code": err.status,
            }
        }
    return {"error": err.message}
