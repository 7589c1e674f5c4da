"""The Ollama API: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from rkllm_runtime.chat import ChatRequest, Message, ToolCall, events
from rkllm_runtime.chat.structured import ANY_OBJECT
from rkllm_runtime.errors import RKLLMError

from . import convert, exchange
from .config import package_version
from .errors import bad_request, from_runtime
from .exchange import Chat, Server
from .registry import ModelState, ServedModel

NDJSON = "application/x-ndjson"
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def keep_alive(value: object) -> float | bool | None:
    """``keep_alive`` in seconds: how long an idle model stays loaded (None: for ever; False: not given)."""
    seconds: float | None = None
    if value is None:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise bad_request('"keep_alive" must be a duration such as "5m", a number of seconds, or -1')
    return None if seconds < 0 else seconds


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"name": call.name, "arguments": call.arguments}}


# Options that would change the answer in ways the runtime cannot: refused with a 400 naming them.
REFUSED_OPTIONS = ("min_p", "typical_p", "repeat_last_n", "penalize_newline", "num_keep")


def _schema(value: object) -> dict[str, Any] | None:
    """The schema ``format`` asks for (None: free text)."""
    if value in (None, ""):
        return None
    if value == "json":
        return ANY_OBJECT
    if isinstance(value, dict):
        return convert.output_schema(value, "format")
    raise bad_request('"format" must be "json" or a JSON schema')


def _request(body: dict[str, Any], server: Server, messages: list[Message], system: str) -> ChatRequest:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad_request('"options" must be an object')
    convert.refuse(options, REFUSED_OPTIONS, "options.")
    return ChatRequest(
        system_prompt=system,
        messages=messages,
        tools=convert.parse_tools(body.get("tools")),
        enable_thinking=convert.flag(body.get("think"), "think"),
        max_new_tokens=convert.max_tokens(
            options.get("num_predict"), server.config.max_tokens, "options.num_predict"
        ),
        sampling=convert.sampling_of(options),
        stop=convert.stop_strings(options.get("stop"), "options.stop"),
        top_logprobs=convert.top_logprobs(body),
    )


def _chat(
    request: web.Request, server: Server, model: ServedModel, asked: ChatRequest, body: dict[str, Any]
) -> Chat:
    return Chat(
        server,
        model,
        asked,
        keep_alive=keep_alive(body.get("keep_alive")),
        arrived=request[exchange.ARRIVED],
        schema=_schema(body.get("format")),
    )


def _final(chat: Chat, result: events.ChatResult) -> dict[str, Any]:
    """The figures of Ollama's last record, and this engine's own (``rkllm``).

    Asked for, the log-probabilities of every token of the reply come with it (streamed too).
    """
    perf = result.perf
    limit = chat.request.max_new_tokens
    top = chat.request.top_logprobs
    logprobs = {} if top is None else {"logprobs": exchange.logprobs_content(result.logprobs, top=top > 0)}
    return logprobs | {
        "done": True,
        "done_reason": "length" if limit and perf.generate_tokens >= limit else "stop",
        "total_duration": int((time.monotonic() - chat.started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": perf.prefill_tokens,
        "prompt_eval_duration": int(perf.prefill_time_ms * 1e6),
        "eval_count": perf.generate_tokens,
        "eval_duration": int(perf.generate_time_ms * 1e6),
        "rkllm": result.as_dict(),
    }


async def _respond(request: web.Request, chat: Chat, stream: bool, *, generate: bool) -> web.StreamResponse:
    """Stream NDJSON records, or answer with one; an engine error is an error response, or the last record."""
    try:
        async with chat:
            if not stream:
                received = await exchange.collect(chat)
                return web.json_response(_record(chat, received, generate=generate))
            response = web.StreamResponse(headers={"Content-Type": NDJSON})
            await response.prepare(request)
            try:
                async for event in chat.events():
                    if not isinstance(event, events.MalformedToolCall):  # retried inside: nothing to show
                        await response.write(
                            exchange.dumps(_record(chat, [event], generate=generate)) + b"\n"
                        )
            except RKLLMError as err:
                await response.write(
                    exchange.dumps(exchange.error_body(from_runtime(err), openai=False)) + b"\n"
                )
            await response.write_eof()
            return response
    except RKLLMError as err:  # before the first event
        raise from_runtime(err) from err


def _record(chat: Chat, received: list[events.ChatEvent], *, generate: bool) -> dict[str, Any]:
    """One record of /api/chat (the text in ``message``) or /api/generate (in ``response``)."""
    body: dict[str, Any] = {"content": ""} if generate else {"role": "assistant", "content": ""}
    record: dict[str, Any] = {"model": chat.model, "created_at": exchange.iso_now(), "done": False}
    for event in received:
        match event:
            case events.TextDelta(text):
                body["content"] += text
            case events.ThinkingDelta(text):
                body["thinking"] = body.get("thinking", "") + text
            case events.ToolCallDelta(call):
                body.setdefault("tool_calls", []).append(_tool_call(call))
            case events.Finished(result):
                record.update(_final(chat, result))
    if generate:
        record["response"] = body.pop("content")
        record.update(body)
    else:
        record["message"] = body
    return record


async def _loaded(server: Server, model: ServedModel, body: dict[str, Any], field: str) -> web.Response:
    """Ollama's answer to a request without input: load the model (``keep_alive`` 0: unload it)."""
    await server.registry.acquire(model, keep_alive(body.get("keep_alive")))
    server.registry.release(model)
    empty: dict[str, Any] | str = {"role": "assistant", "content": ""} if field == "message" else ""
    return web.json_response(
        {
            "model": model.name,
            "created_at": exchange.iso_now(),
            field: empty,
            "done": True,
            "done_reason": "load",
        }
    )


async def chat(request: web.Request) -> web.StreamResponse:
    """POST /api/chat."""
    server, body = request.app[exchange.SERVER], await exchange.read_json(request)
    model = server.registry.get(body.get("model"))
    request[exchange.MODEL] = model.name
    if body.get("messages") in (None, []):
        return await _loaded(server, model, body, "message")
    system, messages = convert.parse_messages(body.get("messages"))
    chat_ = _chat(request, server, model, _request(body, server, messages, system), body)
    return await _respond(request, chat_, body.get("stream", True) is not False, generate=False)


async def generate(request: web.Request) -> web.StreamResponse:
    """POST /api/generate (no history: ``context`` is not supported)."""
    server, body = request.app[exchange.SERVER], await exchange.read_json(request)
    model = server.registry.get(body.get("model"))
    request[exchange.MODEL] = model.name
    prompt = body.get("prompt")
    if not prompt:
        return await _loaded(server, model, body, "response")
    if not isinstance(prompt, str):
        raise bad_request('"prompt" must be a string')
    if body.get("raw") or body.get("context"):
        raise bad_request('"raw" and "context" are not supported')
    # The runtime applies the model's own chat template, and has no fill-in-the-middle.
    convert.refuse(body, ("template", "suffix"))
    system = body.get("system") or ""
    if not isinstance(system, str):
        raise bad_request('"system" must be a string')
    images = convert.images_of(body.get("images"), "images")
    asked = _request(body, server, [Message("user", prompt, images=images)], system)
    chat_ = _chat(request, server, model, asked, body)
    return await _respond(request, chat_, body.get("stream", True) is not False, generate=True)


DETAILS = {
    "format": "rkllm",
    "family": "rkllm",
    "families": ["rkllm"],
    "parameter_size": "",
    "quantization_level": "",
}


def _entry(model: ServedModel) -> dict[str, Any]:
    modified = datetime.fromtimestamp(model.path.stat().st_mtime if model.path.exists() else 0, UTC)
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": modified.isoformat().replace("+00:00", "Z"),
        "size": model.size,
        "digest": "",
        "details": DETAILS,
    }


async def tags(request: web.Request) -> web.Response:
    """GET /api/tags: every model this server has."""
    registry = request.app[exchange.SERVER].registry
    return web.json_response({"models": [_entry(m) for m in registry.models.values()]})


async def running(request: web.Request) -> web.Response:
    """GET /api/ps: the loaded models, and when each is unloaded if it stays idle."""
    server = request.app[exchange.SERVER]
    models = [
        {**_entry(m), "expires_at": _expiry(m), "size_vram": m.size,
         "context_length": server.config.context_length}
        for m in server.registry.models.values()
        if m.state is ModelState.READY
    ]  # fmt: skip
    return web.json_response({"models": models})


def _expiry(model: ServedModel) -> str:
    """When an idle model will be unloaded, as Ollama says it (far away: never)."""
    at = model.expires_at
    if at is None:
        return "2999-12-31T23:59:59Z"
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


async def show(request: web.Request) -> web.Response:
    """POST /api/show: what a model can do."""
    server, body = request.app[exchange.SERVER], await exchange.read_json(request)
    model = server.registry.get(body.get("model") or body.get("name"))
    engine = model.engine
    return web.json_response(
        {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": DETAILS,
            "model_info": {
                "general.architecture": "rkllm",
                "rkllm.context_length": server.config.context_length,
                "rkllm.runtime_release": engine.runtime.library.release if engine else None,
            },
            "capabilities": ["completion", "tools", "thinking"]
            + (["vision"] if model.encoder is not None else []),
            "modified_at": _entry(model)["modified_at"],
        }
    )


async def version_(request: web.Request) -> web.Response:
    """GET /api/version."""
    return web.json_response({"version": package_version()})


async def root(request: web.Request) -> web.Response:
    """GET /: what Ollama answers, so clients that probe it find a server."""
    return web.Response(text="Ollama is running (rkllm-server)")


def routes() -> list[web.RouteDef]:
    """The Ollama routes."""
    return [
        web.get("/", root),
        web.post("/api/chat", chat),
        web.post("/api/generate", generate),
        web.get("/api/tags", tags),
        web.get("/api/ps", running),
        web.post("/api/show", show),
        web.get("/api/version", version_),
    ]
