"""The server's own stream, ``POST /rkllm/chat``: chat requests and events as the engine has them.

Body: ``{"model": NAME, "request": <ChatRequest as JSON>}``. Answer: NDJSON, one event per
line (see :mod:`rkllm_runtime.chat.wire`); an error after the first event is a last line
``{"error": {"status": …, "message": …}}``.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from rkllm_runtime.chat.wire import WireError, event_to_dict, request_from_dict
from rkllm_runtime.errors import RKLLMError

from .convert import max_tokens
from .errors import bad_request, from_runtime
from .exchange import SERVER, Chat, dumps, read_json
from .ollama_api import NDJSON


async def chat(request: web.Request) -> web.StreamResponse:
    """POST /rkllm/chat."""
    server, body = request.app[SERVER], await read_json(request)
    model = server.registry.get(body.get("model"))
    request["model"] = model.name
    try:
        chat_request = request_from_dict(body.get("request"))
    except WireError as err:
        raise bad_request(str(err)) from err
    if not chat_request.messages:
        raise bad_request("the request has no messages")
    limit = max_tokens(chat_request.max_new_tokens or None, server.config.max_tokens)
    async with Chat(server, model, replace(chat_request, max_new_tokens=limit)) as chat_:
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        try:
            async for event in chat_.events():
                await response.write(dumps(event_to_dict(event)) + b"\n")
        except RKLLMError as err:
            failure = from_runtime(err)
            error = {"status": failure.status, "message": failure.message}
            await response.write(dumps({"error": error}) + b"\n")
        await response.write_eof()
        return response


def routes() -> list[web.RouteDef]:
    """The native routes."""
    return [web.post("/rkllm/chat", chat)]
