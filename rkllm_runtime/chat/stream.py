"""The events of one request, as :meth:`~rkllm_runtime.chat.ChatEngine.chat` returns them."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Self

from rkllm_runtime.closing import AsyncClosing

from .events import ChatEvent, ChatResult, Finished


class ChatStream(AsyncClosing):
    """The events of one request; ``result`` is set once :class:`Finished` has passed.

    Use ``async with engine.chat(request) as stream: async for event in stream``.
    Raises :class:`BusyError` when the queue is full, :class:`RunError` on failure.
    """

    def __init__(self, events: AsyncGenerator[ChatEvent]) -> None:
        self.result: ChatResult | None = None
        self._events = events

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatEvent:
        event = await self._events.__anext__()
        if isinstance(event, Finished):
            self.result = event.result
        return event

    async def aclose(self) -> None:
        """Stop early: the run is aborted and the engine freed."""
        await self._events.aclose()
