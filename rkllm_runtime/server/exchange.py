"""What every chat endpoint does: read the body, start the chat, pass its events on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from rkllm_runtime.chat import (
    ChatEngine,
    ChatEvent,
    ChatRequest,
    ChatResult,
    ChatStream,
    Finished,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from rkllm_runtime.chat.structured import InvalidReplyError, answer
from rkllm_runtime.chat.tool_choice import MissingCallError, answer_with_call
from rkllm_runtime.types import TokenLogprob

from .config import ServerConfig
from .connections import ConnectionGuard
from .convert import MAX_NESTING, too_deep
from .errors import ApiError, bad_request
from .metrics import ServerMetrics
from .registry import ModelRegistry, ServedModel


@dataclass(frozen=True, slots=True)
class Server:
    """What the handlers share."""

    config: ServerConfig
    registry: ModelRegistry
    metrics: ServerMetrics
    started: float
    connections: ConnectionGuard


SERVER = web.AppKey("server", Server)
MODEL = web.RequestKey("model", str)
"""The model a request named, for the response metrics."""
ARRIVED = web.RequestKey("arrived", float)
"""Request key: when the request's headers were read (``time.monotonic()``)."""


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (413 beyond the size limit, 408 when slow, 400 when it is not JSON)."""
    limit = request.app[SERVER].config.body_timeout_s
    try:
        async with asyncio.timeout(limit):
            body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise
    except TimeoutError as err:
        raise ApiError(408, f"the request body did not arrive within {limit:g} s") from err
    except ValueError as err:
        raise bad_request(f"the body is not valid JSON: {err}") from err
    except RecursionError as err:
        raise bad_request("the body's JSON is nested too deeply") from err
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if (path := too_deep(body)) is not None:
        raise bad_request(f'"{path}" is nested too deeply (more than {MAX_NESTING} levels)')
    return body


class Chat:
    """One chat of a request, entered once its first event has come.

    An engine error before it is raised from ``async with`` as the engine raised it, typed: each
    API turns it into its response at its own edge.

    With a ``schema``, the reply is JSON that follows it (see :mod:`rkllm_runtime.chat.structured`);
    with ``must_call``, it calls one of these tools (see :mod:`rkllm_runtime.chat.tool_choice`),
    which then wins over the schema. Such a reply is checked whole before its first event.
    """

    def __init__(
        self,
        server: Server,
        model: ServedModel,
        request: ChatRequest,
        *,
        keep_alive: float | bool | None = False,
        arrived: float | None = None,
        schema: Mapping[str, Any] | None = None,
        must_call: Sequence[str] = (),
    ) -> None:
        self.model = model.name
        self.request = request
        self.started = time.monotonic() if arrived is None else arrived
        self.schema = schema
        self.must_call = tuple(must_call)
        self._server = server
        self._served = model
        self._keep_alive = keep_alive
        self._stream: ChatStream | None = None
        self._first: ChatEvent | None = None
        self._answered: list[ChatEvent] = []
        self.first_token_s: float | None = None
        """From the request's arrival (queue and prompt-cache load included) to its first token."""

    @property
    def checked(self) -> bool:
        """The reply is checked whole before it is passed on (each of its runs counted)."""
        return self.schema is not None or bool(self.must_call)

    async def __aenter__(self) -> Chat:
        engine = await self._server.registry.acquire(self._served, self._keep_alive)  # loaded on first use
        try:
            return await self._start(engine)
        except BaseException:
            self._server.registry.release(self._served)
            raise

    async def _start(self, engine: ChatEngine) -> Chat:
        self._engine: ChatEngine = engine
        if self.request.top_logprobs is not None and (why := await engine.why_not_decoded()):
            raise bad_request(f'"logprobs" cannot be honoured with this model: {why}')
        if self.checked:
            self._answered = await self._checked_reply()
            return self
        self._stream = engine.chat(self.request)
        try:
            self._first = await anext(self._stream)
        except BaseException:
            await self._stream.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._stream is not None:
                await self._stream.aclose()  # a client gone mid-stream aborts the run here
        finally:
            self._server.registry.release(self._served)

    async def _checked_reply(self) -> list[ChatEvent]:
        try:
            if self.must_call:
                result = await answer_with_call(self._ask, self.request, self.must_call)
                said: list[ChatEvent] = [TextDelta(result.text)] if result.text else []
                return [*said, *(ToolCallDelta(call) for call in result.tool_calls), Finished(result)]
            assert self.schema is not None
            result, data = await answer(self._ask, self.request, self.schema)
        except MissingCallError as err:
            raise ApiError(422, f'"tool_choice": {err}, even when asked again') from err
        except InvalidReplyError as err:
            raise ApiError(422, f"the model did not answer with JSON that follows the schema: {err}") from err
        if data is None:  # tool calls: the client runs them first
            return [*(ToolCallDelta(call) for call in result.tool_calls), Finished(result)]
        text = json.dumps(data, ensure_ascii=False)
        return [TextDelta(text), Finished(replace(result, text=text))]

    async def _ask(self, request: ChatRequest) -> ChatResult:
        async with self._engine.chat(request) as stream:
            async for _ in stream:
                pass
        assert stream.result is not None
        self._server.metrics.finished(self.model, stream.result)
        return stream.result

    async def events(self) -> AsyncIterator[ChatEvent]:
        """Every event, :class:`Finished` last (counted in the metrics)."""
        if self._answered:
            for event in self._answered:
                self._count(event)
                yield event
            return
        assert self._stream is not None
        assert self._first is not None
        event = self._first
        while True:
            self._count(event)
            yield event
            try:
                event = await anext(self._stream)
            except StopAsyncIteration:
                return

    def _count(self, event: ChatEvent) -> None:
        metrics = self._server.metrics
        if self.first_token_s is None and isinstance(event, TextDelta | ThinkingDelta | ToolCallDelta):
            self.first_token_s = time.monotonic() - self.started
        if isinstance(event, Finished):
            if not self.checked:  # a checked reply counted each of its runs already
                metrics.finished(self.model, event.result)
            waited = self.first_token_s if self.first_token_s is not None else time.monotonic() - self.started
            metrics.answered(self.model, waited)


async def collect(chat: Chat) -> list[ChatEvent]:
    """Every event of a chat that is answered in one response."""
    return [event async for event in chat.events()]


def dumps(data: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def iso_now() -> str:
    """The time now, as Ollama writes it."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error_body(err: ApiError, openai: bool) -> dict[str, Any]:
    """An error in the API's shape."""
    if openai:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
        default = "invalid_request_error" if err.status < 500 else "server_error"
        return {"error": {"message": err.message, "type": kind.get(err.status, default), "code": err.status}}
    return {"error": err.message}


def logprobs_content(logprobs: Sequence[TokenLogprob], top: bool) -> list[dict[str, Any]]:
    """Log-probabilities as both APIs write them: per token its text, log-probability and UTF-8 bytes.

    With ``top``, each also lists the likeliest tokens at its position, likewise.
    """

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return [
        entry(item.token, item.logprob)
        | ({"top_logprobs": [entry(t.token, t.logprob) for t in item.top]} if top else {})
        for item in logprobs
    ]
