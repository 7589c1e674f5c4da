"""Asking again: a whole reply that does not do what was asked is retried once, told why.

Structured output (:mod:`.structured`) and a required tool call (:mod:`.tool_choice`) both
check the finished reply; the model hears what was wrong and answers once more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from .events import ChatResult
from .messages import ChatRequest, Message

_T = TypeVar("_T")

ATTEMPTS = 2
"""The first answer, then one retry told what was wrong."""


class UnfitReplyError(ValueError):
    """The reply does not do what the request asked."""

    def correction(self) -> str:
        """The user turn that asks again, saying what was wrong."""
        raise NotImplementedError


async def ask_fit(
    ask: Callable[[ChatRequest], Awaitable[ChatResult]],
    request: ChatRequest,
    check: Callable[[ChatResult], _T],
) -> tuple[ChatResult, _T]:
    """The last result and what ``check`` makes of it; raises its last :class:`UnfitReplyError`."""
    attempt = 1
    while True:
        result = await ask(request)
        try:
            return result, check(result)
        except UnfitReplyError as err:
            if attempt == ATTEMPTS:
                raise
            attempt += 1
            retry = [Message("assistant", result.text), Message("user", err.correction())]
            request = replace(request, messages=[*request.messages, *retry])
