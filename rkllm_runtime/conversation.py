"""Conversations as the engine sees them, and how they become RKLLM inputs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .types import Prompt, Role, Sampling

MessageRole = Literal["user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation (the system prompt is separate)."""

    role: MessageRole
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything one generation needs.

    ``messages`` is the whole conversation so far; the messages after the last
    assistant message are the new ones. The engine decides what must be sent.
    """

    system_prompt: str
    messages: Sequence[Message]
    tools: str = ""
    conversation_id: str | None = None
    enable_thinking: bool = False
    max_new_tokens: int = 0
    sampling: Sampling | None = None
    max_history_turns: int = 0  # 0: keep every turn that fits


@dataclass(frozen=True, slots=True)
class Split:
    """A conversation cut into the part already answered and the new messages."""

    history: Sequence[Message]
    new: Sequence[Message]


def split_new(messages: Sequence[Message]) -> Split:
    """The messages after the last assistant message are new."""
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return Split(messages[: last_assistant + 1], messages[last_assistant + 1 :])


def fingerprint(messages: Sequence[Message]) -> str:
    """Identity of a conversation prefix: its user and tool messages (assistant text may be rewritten)."""
    digest = hashlib.sha256()
    for message in messages:
        if message.role != "assistant":
            digest.update(f"{message.role}\0{message.content}\0".encode())
    return digest.hexdigest()


def trim_turns(history: Sequence[Message], max_turns: int) -> Sequence[Message]:
    """Keep the last ``max_turns`` user turns of the history (0: all)."""
    if max_turns <= 0:
        return history
    starts = [i for i, message in enumerate(history) if message.role == "user"]
    if len(starts) <= max_turns:
        return history
    return history[starts[-max_turns] :]


def _is_tool_results(new: Sequence[Message]) -> bool:
    return bool(new) and all(message.role == "tool" for message in new)


def _merged_results(new: Sequence[Message]) -> str:
    """Several tool results become one JSON array, as the chat template expects."""
    results = [json.loads(message.content) for message in new]
    return json.dumps(results[0] if len(results) == 1 else results, ensure_ascii=False)


def new_input(new: Sequence[Message], enable_thinking: bool) -> Prompt:
    """One RKLLM input for the new messages: the tool results, or the user text."""
    if _is_tool_results(new):
        return Prompt(_merged_results(new), Role.TOOL, enable_thinking)
    return Prompt("\n".join(message.content for message in new), Role.USER, enable_thinking)


HISTORY_LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool result"}


def rebuild_input(history: Sequence[Message], new: Sequence[Message], enable_thinking: bool) -> Prompt:
    """One input carrying earlier turns as text, for a KV cache that does not hold them.

    The RKLLM API has no way to insert an assistant turn, so the history is quoted
    ahead of the new messages; the input keeps the new messages' role (tool results
    stay a tool response, or the model would repeat its call).
    """
    if not history:
        return new_input(new, enable_thinking)
    quoted = "\n".join(
        ["Earlier in this conversation:", *(f"{HISTORY_LABELS[m.role]}: {m.content}" for m in history)]
    )
    latest = new_input(new, enable_thinking)
    return Prompt(f"{quoted}\n\n{latest.text}", latest.role, enable_thinking)


@dataclass(slots=True)
class CacheState:
    """What the runtime's KV cache holds, as far as the engine knows."""

    system_key: str | None = None
    system_in_kv: bool = False  # the system section is prefilled (after a clear, the next run does it)
    conversation_id: str | None = None  # the conversation of the last run
    consumed: int = 0  # messages of that conversation answered so far, its replies included
    history_fingerprint: str = ""
    history_start: int = 0  # leading messages of it no longer sent (context budget)
    in_kv: bool = False  # the KV cache holds that conversation's turns (keep_history runs)
    kv_tokens: int = 0  # tokens of the last run's context: prompt and reply

    def forget_conversation(self) -> None:
        """The cache no longer holds a known conversation (the system prompt stays)."""
        self.conversation_id = None
        self.consumed = 0
        self.history_fingerprint = ""
        self.history_start = 0
        self.in_kv = False


def system_key(system_prompt: str, tools: str) -> str:
    """Identity of a system prompt with its tools."""
    return hashlib.sha256(f"{system_prompt}\0{tools}".encode()).hexdigest()
