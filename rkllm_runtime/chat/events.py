"""What a chat yields: typed events, and the result that closes them.

Every field is plain data so that a server can stream the events and a client
rebuild them (:meth:`ChatResult.as_dict`, :meth:`ChatResult.from_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rkllm_runtime.types import PerfStats, TokenLogprob, TopLogprob

from .messages import ToolCall


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Text to show and speak."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingDelta:
    """Reasoning, never spoken."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A complete call of one of the request's tools."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class MalformedToolCall:
    """Something meant as a tool call that cannot be read (the model is asked to retry)."""

    raw: str
    error: str


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A finished chat with its token accounting (over all its runs)."""

    text: str
    """The visible reply: no thinking, no tool-call markup."""
    tool_calls: Sequence[ToolCall]
    perf: PerfStats
    """The runtime's figures, summed over the runs (a malformed call adds one)."""
    prompt_tokens: int
    """Tokens of the prompt the first run answered, cached ones included."""
    cached_tokens: int
    """Of those, the tokens the KV cache (or a prompt-cache file) already held."""
    cache_hit: bool
    """Only the new messages were prefilled."""
    kv_tokens: int
    """Tokens in the KV cache afterwards."""
    runs: int = 1
    logprobs: tuple[TokenLogprob, ...] = ()
    """Per reply token, when the request asked for them (``top_logprobs``)."""
    constrained: bool = False
    """The reply was decoded under the request's grammar (JSON, schema or required call)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        data = asdict(self)
        data["tool_calls"] = [asdict(call) for call in self.tool_calls]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatResult:
        """The inverse of :meth:`as_dict`."""
        return cls(
            **{
                **data,
                "tool_calls": tuple(ToolCall(**call) for call in data["tool_calls"]),
                "perf": PerfStats(**data["perf"]),
                "logprobs": tuple(
                    TokenLogprob(
                        item["token"], item["logprob"], tuple(TopLogprob(**top) for top in item["top"])
                    )
                    for item in data.get("logprobs", ())
                ),
            }
        )


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a chat."""

    result: ChatResult


ChatEvent = TextDelta | ThinkingDelta | ToolCallDelta | MalformedToolCall | Finished
