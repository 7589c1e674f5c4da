"""The server's own API, ``POST /rkllm/chat``: chat requests, events and errors as the engine has them.

Body: ``{"model": NAME, "request": <ChatRequest as JSON>}``. Answer: NDJSON, one event per
line (see :mod:`rkllm_runtime.remote.wire`). An engine error is ``{"error": {"kind": …,
"status": …, "message": …}}``: the body of an error response, or the last line once events
were sent, so that a client raises the very error the engine raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from rkllm_runtime.chat import ChatEngine, ChatRequest
from rkllm_runtime.chat.evaluate import EvaluationRequest
from rkllm_runtime.errors import AbortedError, ClosedError, ErrorKind, RKLLMError
from rkllm_runtime.remote.wire import WireError, error_to_dict, event_to_dict, request_from_dict

from .convert import C_INT_MAX, MAX_MALFORMED_CALL_RETRIES, check_sampling, integer, max_tokens, stop_strings
from .errors import ApiError, bad_request, from_runtime
from .exchange import MODEL, SERVER, Chat, Server, dumps, read_json
from .ollama_api import NDJSON
from .registry import ModelState, ServedModel


def _error(err: RKLLMError, model: ServedModel) -> tuple[ApiError, bytes]:
    """The response of an engine error and its JSON line (a run ended by a stopping server says so)."""
    failure = from_runtime(err)
    stopping = model.state is ModelState.CLOSED and isinstance(err, AbortedError | ClosedError)
    kind = ErrorKind.SERVER_STOPPED if stopping else None
    return failure, dumps({"error": error_to_dict(err, failure.status, kind)})


async def _body(request: web.Request) -> tuple[Server, ServedModel, dict[str, Any]]:
    """The server, the model a native request names, and the request's body."""
    server, body = request.app[SERVER], await read_json(request)
    model = server.registry.get(body.get("model"))
    request[MODEL] = model.name
    return server, model, body


async def _answer(
    server: Server, model: ServedModel, key: str, call: Callable[[ChatEngine], Awaitable[object]]
) -> web.Response:
    """``{key: answer}`` from a call on the model's engine, held for the call; an engine error as its line."""
    engine = await server.registry.acquire(model)
    try:
        answer = await call(engine)
    except RKLLMError as err:
        failure, line = _error(err, model)
        return web.Response(body=line, status=failure.status, content_type="application/json")
    finally:
        server.registry.release(model)
    return web.json_response({key: answer})


async def _read(request: web.Request) -> tuple[Server, ServedModel, ChatRequest]:
    """The server, the model a native request names, and its chat request."""
    server, model, body = await _body(request)
    try:
        return server, model, request_from_dict(body.get("request"))
    except WireError as err:
        raise bad_request(str(err)) from err


async def chat(request: web.Request) -> web.StreamResponse:
    """POST /rkllm/chat."""
    server, model, chat_request = await _read(request)
    if not chat_request.messages:
        raise bad_request("the request has no messages")
    if chat_request.sampling is not None:
        check_sampling(chat_request.sampling)
    stop_strings(list(chat_request.stop), "request.stop")  # and their limit on stop strings
    limit = max_tokens(
        chat_request.max_new_tokens or None, server.config.max_tokens, "request.max_new_tokens"
    )
    integer(chat_request.max_history_turns, "request.max_history_turns", 0, C_INT_MAX)
    integer(
        chat_request.malformed_call_retries, "request.malformed_call_retries", 0, MAX_MALFORMED_CALL_RETRIES
    )
    try:
        async with Chat(server, model, replace(chat_request, max_new_tokens=limit)) as chat_:
            return await _stream(request, chat_, model)
    except RKLLMError as err:  # before the first event
        failure, line = _error(err, model)
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after else None
        return web.Response(
            body=line, status=failure.status, content_type="application/json", headers=headers
        )


async def _stream(request: web.Request, chat_: Chat, model: ServedModel) -> web.StreamResponse:
    """The events as NDJSON; an error after the first one is the last line."""
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    try:
        async for event in chat_.events():
            await response.write(dumps(event_to_dict(event)) + b"\n")
    except RKLLMError as err:
        await response.write(_error(err, model)[1] + b"\n")
    await response.write_eof()
    return response


async def warm(request: web.Request) -> web.Response:
    """POST /rkllm/warm: the KV cache warmed with a chat request's system prompt and tools.

    Same body as ``/rkllm/chat`` (its messages are not read); the model is loaded if need be.
    Answer: ``{"outcome": …}`` (see :class:`~rkllm_runtime.chat.WarmOutcome`).
    """
    server, model, chat_request = await _read(request)
    return await _answer(server, model, "outcome", lambda engine: engine.warm(chat_request))


async def evaluate(request: web.Request) -> web.Response:
    """POST /rkllm/evaluate: questions about a state answered with probabilities, nothing sampled.

    Body: ``{"model": NAME, "request": <EvaluationRequest as JSON>}``. Answer: ``{"result": …}``
    (see :mod:`rkllm_runtime.chat.evaluate`); an engine error as ``/rkllm/warm`` answers one.
    """
    server, model, body = await _body(request)
    try:
        asked = EvaluationRequest.from_dict(body.get("request") or {})
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise bad_request(f'"request" is not an evaluation request: {err!r}') from err

    async def answer(engine: ChatEngine) -> object:
        return (await engine.evaluate(asked)).as_dict()

    return await _answer(server, model, "result", answer)


def routes() -> list[web.RouteDef]:
    """The native routes."""
    return [
        web.post("/rkllm/chat", chat),
        web.post("/rkllm/warm", warm),
        web.post("/rkllm/evaluate", evaluate),
    ]
