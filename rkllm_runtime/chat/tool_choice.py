"""A reply that must call a tool (OpenAI's ``tool_choice`` "required" or a named tool).

The system prompt asks for the call and the request names the tools, so an engine that can decode
under a grammar makes the reply that call (:mod:`.constrained`). Otherwise a reply without it is
retried once, told so (:mod:`.retry`), and :class:`MissingCallError` is raised when the retry has
none either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from .events import ChatResult
from .messages import ChatRequest
from .retry import UnfitReplyError, ask_fit


class MissingCallError(UnfitReplyError):
    """The reply calls none of the tools it had to call."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(f"the reply did not call {_which(self.names)}")

    def correction(self) -> str:
        """The user turn that asks again, saying what was wrong."""
        return f"That answer did not call {_which(self.names)}. Answer again by calling it."


def _which(names: Sequence[str]) -> str:
    return f"the tool {names[0]}" if len(names) == 1 else f"one of the tools {', '.join(names)}"


def instruction(names: Sequence[str]) -> str:
    """What the system prompt gains so that the model calls one of ``names``."""
    return f"\n\nAnswer this message by calling {_which(names)}."


async def answer_with_call(
    ask: Callable[[ChatRequest], Awaitable[ChatResult]], request: ChatRequest, names: Sequence[str]
) -> ChatResult:
    """Ask for a reply that calls one of ``names`` (the request's tools), retrying once."""

    def check(result: ChatResult) -> None:
        if not any(call.name in names for call in result.tool_calls):
            raise MissingCallError(names)

    asked = replace(
        request, system_prompt=request.system_prompt + instruction(names), call_tools=tuple(names)
    )
    result, _ = await ask_fit(ask, asked, check)
    return result
