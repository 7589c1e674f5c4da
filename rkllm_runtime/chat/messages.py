"""Conversations as the engine sees them, and how they become RKLLM inputs."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rkllm_runtime.types import Prompt, Role, Sampling

MessageRole = Literal["user", "assistant", "tool"]


def compact_json(value: Any) -> str:
    """JSON without the spaces ``json.dumps`` puts after separators (fewer tokens, same meaning)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def new_call_id() -> str:
    """A fresh tool-call id, in the form OpenAI clients expect."""
    return f"call_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call of one of the request's tools, its name resolved and its arguments repaired."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)
    """Links the call to its result (clients send it back with the result)."""

    def as_text(self) -> str:
        """The call in the model's markup, compact, as a re-sent history quotes it."""
        return f"<tool_call>{compact_json({'name': self.name, 'arguments': self.arguments})}</tool_call>"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call."""

    name: str
    parameters: dict[str, Any]
    """JSON schema of the arguments."""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation (the system prompt is separate)."""

    role: MessageRole
    content: str
    tool_calls: Sequence[ToolCall] = ()
    """Calls an assistant message made."""
    name: str = ""
    """The tool a tool message answers."""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything one generation needs.

    ``messages`` is the whole conversation so far; the messages after the last
    assistant message are the new ones. The engine decides what must be sent.
    """

    system_prompt: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()
    conversation_id: str | None = None
    """Set by callers that track conversations; stateless callers leave it out."""
    enable_thinking: bool = False
    max_new_tokens: int = 0
    """0: the model's limit."""
    sampling: Sampling | None = None
    max_history_turns: int = 0
    """User turns of history kept when a conversation is rebuilt (0: every turn that fits)."""
    malformed_call_retries: int = 1
    """Times a malformed tool call is answered with an error so the model can try again."""
    stop: Sequence[str] = ()
    """The reply ends where one of these strings starts (the run is aborted there)."""
    context: str = ""
    """Volatile text (the current time) sent ahead of the new user messages, never cached with
    the system prompt."""
    output_schema: Mapping[str, Any] | None = None
    """The reply must be JSON that follows this schema (or, with tools, call one of them)."""
    call_tools: Sequence[str] = ()
    """The reply must call one of these tools (OpenAI's ``tool_choice`` required or named)."""
    top_logprobs: int | None = None
    """Report each reply token's log-probability with this many alternatives (None: none)."""

    @property
    def constrained(self) -> bool:
        """Whether the reply is best decoded from logits: under a grammar, or with log-probabilities."""
        return self.output_schema is not None or bool(self.call_tools) or self.top_logprobs is not None


def lean_schema(schema: Any) -> Any:
    """A JSON schema without what tells the model nothing (``additionalProperties: false``, no properties)."""
    if isinstance(schema, list):
        return [lean_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    return {
        key: lean_schema(value)
        for key, value in schema.items()
        if not (key == "additionalProperties" and value is False) and not (key == "properties" and not value)
    }


def render_tools(tools: Sequence[ToolSpec]) -> str:
    """The tools as the OpenAI-style JSON array ``rkllm_set_function_tools`` takes ("" without tools).

    Compact JSON with lean schemas: the same tools in about a quarter fewer tokens.
    """
    if not tools:
        return ""
    specs = []
    for tool in tools:
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["parameters"] = lean_schema(tool.parameters)
        specs.append({"type": "function", "function": spec})
    return compact_json(specs)


def system_key(system_prompt: str, tools: str) -> str:
    """Identity of a system prompt with its rendered tools."""
    return hashlib.sha256(f"{system_prompt}\0{tools}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Split:
    """A conversation cut into the part already answered and the new messages."""

    history: Sequence[Message]
    new: Sequence[Message]


def split_new(messages: Sequence[Message]) -> Split:
    """The messages after the last assistant message are new."""
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return Split(messages[: last_assistant + 1], messages[last_assistant + 1 :])


def current_turn_start(split: Split) -> int:
    """Where the turn being answered starts in the history.

    A new user message starts a turn of its own; tool results answer calls of the turn that
    starts with the history's last user message, which must be sent along with them.
    """
    if any(message.role == "user" for message in split.new):
        return len(split.history)
    return max(user_turn_starts(split.history), default=0)


def fingerprint(messages: Sequence[Message], start: str = "") -> str:
    """Identity of a conversation prefix, extendable by passing an earlier result as ``start``.

    Assistant text is compared with its whitespace collapsed (clients may trim it);
    thinking never comes back and is not part of it.
    """
    digest = start
    for message in messages:
        text = " ".join(message.content.split()) if message.role == "assistant" else message.content
        calls = [(call.name, json.dumps(call.arguments, sort_keys=True)) for call in message.tool_calls]
        part = json.dumps([digest, message.role, text, calls, message.name])
        digest = hashlib.sha256(part.encode()).hexdigest()
    return digest


def user_turn_starts(history: Sequence[Message]) -> list[int]:
    """Indexes of the user messages: where each turn starts."""
    return [i for i, message in enumerate(history) if message.role == "user"]


def trim_turns(history: Sequence[Message], max_turns: int) -> Sequence[Message]:
    """Keep the last ``max_turns`` user turns of the history (0: all)."""
    starts = user_turn_starts(history)
    if max_turns <= 0 or len(starts) <= max_turns:
        return history
    return history[starts[-max_turns] :]


# A typical token is a few bytes of text (once whitespace runs are collapsed): the estimate that
# decides how much history is sent along, since the runtime has no tokenizer call.
TYPICAL_BYTES_PER_TOKEN = 4


def estimated_tokens(*texts: str) -> int:
    """A typical token count of ``texts`` (neither bound: see :data:`TYPICAL_BYTES_PER_TOKEN`)."""
    collapsed = sum(len(" ".join(text.split()).encode(errors="replace")) for text in texts)
    return collapsed // TYPICAL_BYTES_PER_TOKEN


def fit_history(history: Sequence[Message], budget: int) -> Sequence[Message]:
    """The latest turns of the history whose estimated tokens stay within ``budget``."""
    sizes = [estimated_tokens(history_text(message)) for message in history]
    for start in (0, *user_turn_starts(history)):
        if sum(sizes[start:]) <= budget:
            return history[start:]
    return []


def drop_oldest_half(history: Sequence[Message]) -> Sequence[Message]:
    """The later half of the history's turns (nothing when only one turn remains)."""
    starts = user_turn_starts(history)
    if len(starts) < 2:
        return []
    return history[starts[len(starts) // 2] :]


def _tool_result(message: Message) -> Any:
    try:
        return json.loads(message.content)
    except ValueError:
        return message.content


def _is_tool_results(new: Sequence[Message]) -> bool:
    return bool(new) and all(message.role == "tool" for message in new)


def _merged_results(new: Sequence[Message]) -> str:
    """One result as it is; several as one JSON array in the order of the calls (the chat template's form)."""
    if len(new) == 1:
        return new[0].content
    return compact_json([_tool_result(message) for message in new])


def new_input(new: Sequence[Message], enable_thinking: bool, context: str = "") -> Prompt:
    """One RKLLM input for the new messages: the tool results, or the user text after ``context``."""
    if _is_tool_results(new):
        return Prompt(_merged_results(new), Role.TOOL, enable_thinking)
    text = "\n".join(message.content for message in new)
    return Prompt(f"{context}\n{text}" if context else text, Role.USER, enable_thinking)


HISTORY_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


def history_text(message: Message) -> str:
    """A message as a re-sent history quotes it: its text and its calls."""
    if message.role == "tool":
        return message.content
    return "".join([message.content, *(call.as_text() for call in message.tool_calls)])


def rebuild_input(
    history: Sequence[Message], new: Sequence[Message], enable_thinking: bool, context: str = ""
) -> Prompt:
    """One input carrying earlier turns as text, for a KV cache that does not hold them.

    The RKLLM API has no way to insert an assistant turn, so the history is quoted
    compactly ahead of the new messages; the input keeps the new messages' role (tool
    results stay a tool response, or the model would repeat its call).
    """
    if not history:
        return new_input(new, enable_thinking, context)
    quoted = "\n".join(
        ["Earlier in this conversation:", *(f"{HISTORY_LABELS[m.role]}: {history_text(m)}" for m in history)]
    )
    latest = new_input(new, enable_thinking, context)
    return Prompt(f"{quoted}\n\n{latest.text}", latest.role, enable_thinking)
