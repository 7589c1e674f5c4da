"""Chat requests, events, errors, statistics and status as JSON, for rkllm-server's native API.

Lossless both ways, unlike the Ollama and OpenAI shapes: the conversation id, the
history limit, the malformed-call retries, the full :class:`ChatResult`, an error's
kind with its figures, and the engine's counters and status survive (``POST /rkllm/chat``,
``GET /rkllm/status``).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any, TypeVar, cast, get_args

from rkllm_runtime.chat import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    EngineState,
    EngineStats,
    EngineStatus,
    Finished,
    KVMode,
    MalformedToolCall,
    Message,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.chat.messages import MessageRole
from rkllm_runtime.errors import ERRORS, ContextOverflowError, ErrorKind, RKLLMError, error_kind
from rkllm_runtime.types import ModelParams, Sampling

ROLES = frozenset(get_args(MessageRole))


class WireError(ValueError):
    """JSON that is not a chat request or event."""


def request_to_dict(request: ChatRequest) -> dict[str, Any]:
    """A request as plain data."""
    data = asdict(request)
    data["messages"] = [asdict(message) for message in request.messages]
    data["tools"] = [asdict(tool) for tool in request.tools]
    return data


def request_from_dict(data: object) -> ChatRequest:
    """The inverse of :func:`request_to_dict`; raises :class:`WireError` naming a field of the wrong type."""
    if not isinstance(data, dict):
        raise WireError("not a chat request: expected an object")
    sampling = _field(data, "sampling", dict, None)
    try:
        return ChatRequest(
            system_prompt=_field(data, "system_prompt", str, ""),
            messages=[_message(item) for item in _field(data, "messages", list)],
            tools=[_tool(item) for item in _field(data, "tools", list, [])],
            conversation_id=_field(data, "conversation_id", str, None),
            enable_thinking=_field(data, "enable_thinking", bool, False),
            max_new_tokens=_field(data, "max_new_tokens", int, 0),
            sampling=Sampling(**sampling) if sampling else None,
            max_history_turns=_field(data, "max_history_turns", int, 0),
            malformed_call_retries=_field(data, "malformed_call_retries", int, 1),
            stop=tuple(_strings(_field(data, "stop", list, []), "stop")),
            context=_field(data, "context", str, ""),
            output_schema=_field(data, "output_schema", dict, None),
            call_tools=tuple(_strings(_field(data, "call_tools", list, []), "call_tools")),
            top_logprobs=_field(data, "top_logprobs", int, None),
        )
    except TypeError as err:  # an unknown sampling field
        raise WireError(f"not a chat request: {err}") from err


_MISSING = object()
_T = TypeVar("_T")


def _field(data: dict[str, Any], key: str, kind: type[_T], default: object = _MISSING) -> _T:
    """``data[key]`` when it is a ``kind`` (a bool is no int); its default when absent or null."""
    value = data.get(key)
    if value is None:
        if default is _MISSING:
            raise WireError(f'not a chat request: "{key}" is missing')
        return default  # type: ignore[return-value]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise WireError(f'not a chat request: "{key}" must be of type {kind.__name__}')
    return value


def _strings(items: list[Any], key: str) -> list[str]:
    if not all(isinstance(item, str) for item in items):
        raise WireError(f'not a chat request: "{key}" must hold strings')
    return items


def _object(item: object, key: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise WireError(f'not a chat request: each of "{key}" must be an object')
    return item


def _message(item: object) -> Message:
    data = _object(item, "messages")
    role = _field(data, "role", str)
    if role not in ROLES:
        raise WireError("not a chat request: a message's role must be user, assistant or tool")
    calls = [_object(call, "tool_calls") for call in _field(data, "tool_calls", list, [])]
    return Message(
        role=cast("MessageRole", role),
        content=_field(data, "content", str, ""),
        tool_calls=tuple(_tool_call(call) for call in calls),
        name=_field(data, "name", str, ""),
    )


def _tool_call(data: dict[str, Any]) -> ToolCall:
    call = ToolCall(_field(data, "name", str), _field(data, "arguments", dict))
    call_id = _field(data, "id", str, None)
    return call if call_id is None else replace(call, id=call_id)


def _tool(item: object) -> ToolSpec:
    data = _object(item, "tools")
    return ToolSpec(
        _field(data, "name", str), _field(data, "parameters", dict), _field(data, "description", str, "")
    )


def event_to_dict(event: ChatEvent) -> dict[str, Any]:
    """One event as one JSON object, keyed by its kind."""
    match event:
        case TextDelta(text):
            return {"text": text}
        case ThinkingDelta(text):
            return {"thinking": text}
        case ToolCallDelta(call):
            return {"tool_call": asdict(call)}
        case MalformedToolCall(raw, error):
            return {"malformed_tool_call": {"raw": raw, "error": error}}
        case Finished(result):
            return {"finished": result.as_dict()}


def stats_to_dict(stats: EngineStats) -> dict[str, Any]:
    """An engine's counters and last result as plain data."""
    data = asdict(stats)
    data["last"] = stats.last.as_dict() if stats.last is not None else None
    return data


def stats_from_dict(data: dict[str, Any]) -> EngineStats:
    """The inverse of :func:`stats_to_dict` (missing counters are 0)."""
    last = data.get("last")
    return EngineStats(
        requests=int(data.get("requests", 0)),
        cache_hits=int(data.get("cache_hits", 0)),
        cache_misses=int(data.get("cache_misses", 0)),
        malformed_calls=int(data.get("malformed_calls", 0)),
        constrained=data.get("constrained"),
        constrained_note=str(data.get("constrained_note", "")),
        kv_tokens=int(data.get("kv_tokens", 0)),
        context_room=data.get("context_room"),
        last=ChatResult.from_dict(last) if last else None,
        last_error=data.get("last_error"),
    )


def status_to_dict(status: EngineStatus) -> dict[str, Any]:
    """An engine's status as plain data: its counters beside what it says of itself."""
    return stats_to_dict(status.stats) | {
        "engine_state": status.state,
        "waiting": status.waiting,
        "kv_mode": status.kv_mode,
        "runtime_release": status.release,
        "params": asdict(status.params),
        "model_file": status.model_file,
        "model_bytes": status.model_bytes,
    }


def status_from_dict(data: dict[str, Any]) -> EngineStatus:
    """The inverse of :func:`status_to_dict` (what is missing keeps its default)."""
    params = {f.name: data["params"][f.name] for f in fields(ModelParams) if f.name in data.get("params", {})}
    if params.get("sampling"):
        params["sampling"] = Sampling(**params["sampling"])
    return EngineStatus(
        model_file=str(data["model_file"]),
        release=str(data.get("runtime_release", "unknown")),
        state=EngineState(data.get("engine_state", EngineState.READY)),
        waiting=int(data.get("waiting", 0)),
        stats=stats_from_dict(data),
        kv_mode=KVMode(data.get("kv_mode", KVMode.CONSERVATIVE)),
        params=ModelParams(**params),
        model_bytes=int(data.get("model_bytes", 0)),
    )


def error_to_dict(err: RKLLMError, status: int, kind: ErrorKind | None = None) -> dict[str, Any]:
    """An engine error with its kind (by default: its class's) and its HTTP status."""
    data: dict[str, Any] = {"kind": kind or error_kind(err), "status": status, "message": str(err)}
    if isinstance(err, ContextOverflowError):
        data |= {"tokens": err.tokens, "limit": err.limit}
    return data


def error_from_dict(data: dict[str, Any]) -> RKLLMError | None:
    """The error :func:`error_to_dict` wrote, of the class its kind names; None without a known kind."""
    try:
        cls = ERRORS[ErrorKind(str(data.get("kind")))]
    except ValueError:
        return None
    message = str(data.get("message", ""))
    if issubclass(cls, ContextOverflowError):
        return cls(message, tokens=int(data.get("tokens", 0)), limit=int(data.get("limit", 0)))
    return cls(message)


def event_from_dict(data: dict[str, Any]) -> ChatEvent:
    """The inverse of :func:`event_to_dict`; raises :class:`WireError`."""
    try:
        if "text" in data:
            return TextDelta(str(data["text"]))
        if "thinking" in data:
            return ThinkingDelta(str(data["thinking"]))
        if "tool_call" in data:
            return ToolCallDelta(ToolCall(**data["tool_call"]))
        if "malformed_tool_call" in data:
            return MalformedToolCall(**data["malformed_tool_call"])
        if "finished" in data:
            return Finished(ChatResult.from_dict(data["finished"]))
    except (KeyError, TypeError, ValueError) as err:
        raise WireError(f"not a chat event: {err!r}") from err
    raise WireError(f"not a chat event: {sorted(data)}")
