"""Chat requests and events as JSON, for rkllm-server's native stream (``POST /rkllm/chat``).

Lossless both ways, unlike the Ollama and OpenAI shapes: the conversation id, the
history limit, the malformed-call retries and the full :class:`ChatResult` survive.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, get_args

from rkllm_runtime.types import Sampling

from .events import (
    ChatEvent,
    ChatResult,
    Finished,
    MalformedToolCall,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from .messages import ChatRequest, Message, MessageRole, ToolCall, ToolSpec

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
    """The inverse of :func:`request_to_dict`; raises :class:`WireError`."""
    if not isinstance(data, dict):
        raise WireError("not a chat request: expected an object")
    try:
        if any(item["role"] not in ROLES for item in data["messages"]):
            raise WireError("not a chat request: a message's role must be user, assistant or tool")
        sampling = data.get("sampling")
        return ChatRequest(
            system_prompt=str(data.get("system_prompt", "")),
            messages=[
                Message(
                    role=item["role"],
                    content=str(item.get("content", "")),
                    tool_calls=tuple(ToolCall(**call) for call in item.get("tool_calls") or ()),
                    name=str(item.get("name", "")),
                )
                for item in data["messages"]
            ],
            tools=[ToolSpec(**tool) for tool in data.get("tools") or ()],
            conversation_id=data.get("conversation_id"),
            enable_thinking=bool(data.get("enable_thinking", False)),
            max_new_tokens=int(data.get("max_new_tokens", 0)),
            sampling=Sampling(**sampling) if sampling else None,
            max_history_turns=int(data.get("max_history_turns", 0)),
            malformed_call_retries=int(data.get("malformed_call_retries", 1)),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise WireError(f"not a chat request: {err!r}") from err


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
