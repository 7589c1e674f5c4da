"""One round of a turn: a run's text parsed into events, and an unreadable call told back to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from rkllm_runtime.types import PerfStats, TokenLogprob

from .events import ChatEvent, MalformedToolCall, TextDelta, ToolCallDelta
from .messages import ChatRequest, Message, ToolCall
from .parser import StreamParser
from .plan import Plan
from .prepare import Prepared
from .stop import StopFilter
from .tool_calls import MALFORMED_CALL_TOOL, malformed_call_result


@dataclass(slots=True)
class Round:
    """One run of a chat: its plan, what it said and what it cost."""

    step: Plan
    prepared: Prepared
    parser: StreamParser
    stop: StopFilter
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    malformed: MalformedToolCall | None = None
    perf: PerfStats = field(default_factory=PerfStats)
    prompt_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    constrained: bool = False
    """Decoded under the request's grammar."""
    decoding: bool = False
    """A token came: the runtime read the whole input (what it says may still be held back)."""

    @classmethod
    def of(cls, request: ChatRequest, step: Plan, prepared: Prepared) -> Round:
        """A round of a request, reading the request's tools and stop strings."""
        return cls(
            step, prepared, StreamParser([tool.name for tool in request.tools]), StopFilter(request.stop)
        )

    @property
    def system_warm(self) -> bool:
        """The run found the system section prefilled, in the KV cache or from its file."""
        return self.step.system_cached or self.prepared.loaded_prompt_cache

    def read(self, chunk: str) -> Iterator[ChatEvent]:
        """The events of a chunk of the run's text, kept as they pass."""
        for event in self.stop.events(self.parser.feed(chunk)):
            yield self._noted(event)

    def finish(self) -> Iterator[ChatEvent]:
        """The events the parser and the stop filter held back, once the run has ended."""
        for event in self.stop.events([*self.parser.finish(), TextDelta(self.stop.flush())]):
            yield self._noted(event)

    def reply(self) -> Message:
        """What the model said, as it stays in the conversation (an unreadable call included)."""
        unread = f"<tool_call>\n{self.malformed.raw}\n</tool_call>" if self.malformed else ""
        return Message("assistant", "".join(self.text) + unread, tool_calls=tuple(self.calls))

    def to_ask_again(self, request: ChatRequest) -> MalformedToolCall | None:
        """The unreadable call to ask again: only in a round that called nothing (its calls are run)."""
        return self.malformed if request.tools and not self.calls else None

    def correction(self, malformed: MalformedToolCall) -> list[Message]:
        """The round and what was wrong with its call, for the model to answer again."""
        error = json.dumps(malformed_call_result(malformed.error))
        return [self.reply(), Message("tool", error, name=MALFORMED_CALL_TOOL)]

    def _noted(self, event: ChatEvent) -> ChatEvent:
        """Pass an event on, keeping what the round said."""
        match event:
            case TextDelta(text):
                self.text.append(text)
            case ToolCallDelta(call):
                self.calls.append(call)
            case MalformedToolCall():
                self.malformed = event
        return event
