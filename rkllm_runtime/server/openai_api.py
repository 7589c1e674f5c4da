"""The OpenAI API: /v1/chat/completions (SSE streaming, tools, usage) and /v1/models."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from rkllm_runtime.chat import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    Finished,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from rkllm_runtime.chat.structured import ANY_OBJECT
from rkllm_runtime.errors import RKLLMError

from . import convert, exchange
from .errors import bad_request, from_runtime
from .exchange import Chat, Server
from .images import fetch_remote
from .registry import ServedModel

# Fields that would change the answer in ways this server cannot: refused with a 400 naming them.
REFUSED = (
    "audio",
    "functions",
    "function_call",
    "logit_bias",
    "prediction",
    "web_search_options",
)


def _response_schema(value: object) -> dict[str, Any] | None:
    """The schema ``response_format`` asks for (None: text)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request('"response_format" must be an object with a "type"')
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT
    if kind == "json_schema" and isinstance(spec := value.get("json_schema"), dict):
        return convert.output_schema(spec.get("schema", {}), "response_format.json_schema.schema")
    raise bad_request('"response_format" must be of type "text", "json_object" or "json_schema"')


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise bad_request('"stream_options" must be an object such as {"include_usage": true}')
    return bool(options.get("include_usage"))


def _request(
    body: dict[str, Any], limit: int, fetched: dict[str, bytes]
) -> tuple[ChatRequest, tuple[str, ...]]:
    """The chat request, and the tools the reply must call one of (``tool_choice``)."""
    if body.get("n", 1) != 1:
        raise bad_request('only "n": 1 is supported')
    convert.refuse(body, REFUSED)
    if body.get("modalities") not in (None, ["text"]):
        raise bad_request('"modalities": only ["text"] is supported')
    system, messages = convert.parse_messages(body.get("messages"), fetched)
    tools, must_call = convert.choose_tools(convert.parse_tools(body.get("tools")), body.get("tool_choice"))
    effort = body.get("reasoning_effort")
    limit_field = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    asked = ChatRequest(
        system_prompt=system,
        messages=messages,
        tools=tools,
        enable_thinking=effort is not None and effort not in ("none", "minimal"),
        max_new_tokens=convert.max_tokens(body.get(limit_field), limit, limit_field),
        sampling=convert.sampling_of(body),
        stop=convert.stop_strings(body.get("stop"), "stop"),
        top_logprobs=convert.top_logprobs(body),
    )
    return asked, must_call


def _usage(result: ChatResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.perf.generate_tokens,
        "total_tokens": result.prompt_tokens + result.perf.generate_tokens,
        "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
    }


def _finish_reason(chat: Chat, result: ChatResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    limit = chat.request.max_new_tokens
    return "length" if limit and result.perf.generate_tokens >= limit else "stop"


def _tool_call(call: Any, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": exchange.dumps(call.arguments).decode()},
    }


class _Completion:
    """The ids and counters one completion's chunks share."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.calls = 0

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
        }

    def logprobs(self, result: ChatResult) -> dict[str, Any] | None:
        """``choices[].logprobs``: every token of the reply (streamed: with the last chunk), or None."""
        top = self.chat.request.top_logprobs
        if top is None:
            return None
        return {"content": exchange.logprobs_content(result.logprobs, top=True), "refusal": None}

    def stream_chunks(self, event: ChatEvent, include_usage: bool) -> list[dict[str, Any]]:
        match event:
            case TextDelta(text):
                return [self.chunk({"content": text})]
            case ThinkingDelta(text):
                return [self.chunk({"reasoning_content": text})]
            case ToolCallDelta(call):
                self.calls += 1
                return [self.chunk({"tool_calls": [_tool_call(call, self.calls - 1)]})]
            case Finished(result):
                last = self.chunk({}, _finish_reason(self.chat, result), self.logprobs(result))
                last["rkllm"] = result.as_dict()
                if not include_usage:
                    return [last]
                usage = {**self.chunk({}), "choices": [], "usage": _usage(result)}
                return [last, usage]
        return []

    def whole(self, events: list[ChatEvent]) -> dict[str, Any]:
        result = next(event.result for event in events if isinstance(event, Finished))
        thinking = "".join(event.text for event in events if isinstance(event, ThinkingDelta))
        message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
        if thinking:
            message["reasoning_content"] = thinking
        if result.tool_calls:
            message["tool_calls"] = [_tool_call(call, i) for i, call in enumerate(result.tool_calls)]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": self.logprobs(result),
                    "finish_reason": _finish_reason(self.chat, result),
                }
            ],
            "usage": _usage(result),
            "rkllm": result.as_dict(),
        }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions."""
    server, body = request.app[exchange.SERVER], await exchange.read_json(request)
    model = server.registry.get(body.get("model"))
    request[exchange.MODEL] = model.name
    schema = _response_schema(body.get("response_format"))
    include_usage = _include_usage(body)
    fetched = await fetch_remote(body.get("messages"), server.config)
    asked, must_call = _request(body, server.config.max_tokens, fetched)
    chat = Chat(server, model, asked, arrived=request[exchange.ARRIVED], schema=schema, must_call=must_call)
    try:
        async with chat:
            if not body.get("stream"):
                return web.json_response(_Completion(chat).whole(await exchange.collect(chat)))
            return await _stream(request, chat, include_usage)
    except RKLLMError as err:  # before the first event
        raise from_runtime(err) from err


async def _stream(request: web.Request, chat: Chat, include_usage: bool) -> web.StreamResponse:
    """Server-sent chunks; an engine error after the first one is the last chunk."""
    completion = _Completion(chat)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(
        b"data: " + exchange.dumps(completion.chunk({"role": "assistant", "content": ""})) + b"\n\n"
    )
    try:
        async for event in chat.events():
            for chunk in completion.stream_chunks(event, include_usage):
                await response.write(b"data: " + exchange.dumps(chunk) + b"\n\n")
    except RKLLMError as err:
        await response.write(
            b"data: " + exchange.dumps(exchange.error_body(from_runtime(err), openai=True)) + b"\n\n"
        )
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    """GET /v1/models."""
    server = request.app[exchange.SERVER]
    return web.json_response(
        {"object": "list", "data": [_model(server, m) for m in server.registry.models.values()]}
    )


def _model(server: Server, served: ServedModel) -> dict[str, Any]:
    return {
        "id": served.name,
        "object": "model",
        "created": int(served.loaded_at or server.started),
        "owned_by": "rkllm",
    }


async def model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}: one model as in the list; 404 for an unknown one."""
    server = request.app[exchange.SERVER]
    return web.json_response(_model(server, server.registry.get(request.match_info["model"])))


def routes() -> list[web.RouteDef]:
    """The OpenAI routes."""
    return [
        web.post("/v1/chat/completions", chat_completions),
        web.get("/v1/models", models),
        web.get("/v1/models/{model:.+}", model),  # pulled models are named hf.co/OWNER/REPO/FILE
    ]
