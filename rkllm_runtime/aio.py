"""The asyncio bridge: stream a run's text to a coroutine without blocking the loop.

The run executes on an executor thread; chunks reach the event loop with
``loop.call_soon_threadsafe`` (no executor hop per token), one wake-up per burst:
while the loop has not drained what arrived, further chunks just join the batch. Cancelling the consumer,
or closing the stream early, aborts the run and waits until the handle is free.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Self

from .closing import AsyncClosing
from .generation import CancelToken
from .runtime import RKLLMRuntime, TextCallback
from .types import Input, RunOptions, RunResult

RunCall = Callable[[Input, RunOptions | None, TextCallback, CancelToken], RunResult]
"""What runs the input: ``RKLLMRuntime.run`` or a drop-in (the constrained decoder)."""

_DONE = object()
ABORT_RETRY_S = 0.05


class AsyncStream(AsyncClosing):
    """Async iterator over a run's decoded chunks; ``result`` is set when it ends.

    Use as ``async with AsyncStream(...) as stream: async for chunk in stream: ...``.
    """

    def __init__(
        self,
        runtime: RKLLMRuntime,
        input_: Input,
        options: RunOptions | None = None,
        executor: Executor | None = None,
        runner: RunCall | None = None,
    ) -> None:
        self.result: RunResult | None = None
        self._runtime = runtime
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._arrived: deque[str] = deque()
        self._wakeup_pending = False
        self._token = CancelToken()
        self._future = self._loop.run_in_executor(
            executor, runner or runtime.run, input_, options, self._push, self._token
        )
        self._future.add_done_callback(lambda _: self._queue.put_nowait(_DONE))

    def _push(self, text: str) -> None:
        """Hand a chunk over; runs on the runtime thread."""
        self._arrived.append(text)
        if not self._wakeup_pending:
            self._wakeup_pending = True
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """Move the arrived chunks to the queue; runs on the loop."""
        self._wakeup_pending = False  # cleared first: a chunk arriving now schedules another drain
        while self._arrived:
            self._queue.put_nowait(self._arrived.popleft())

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            await self.aclose()
            raise
        if item is _DONE:
            self.result = self._future.result()
            raise StopAsyncIteration
        assert isinstance(item, str)
        return item

    def end_early(self) -> None:
        """Stop decoding: the stream ends as if the run had completed (see :meth:`RKLLMRuntime.end_early`)."""
        self._runtime.end_early(self._token)

    async def aclose(self) -> None:
        """Abort the run if it is still going and wait until it has ended."""
        if self._future.done():
            return
        self._token.set()
        while not self._future.done():
            # Repeated: the run may still be waiting for the handle when first asked.
            self._runtime.abort(self._token)
            await asyncio.wait([self._future], timeout=ABORT_RETRY_S)
        self._future.exception()  # retrieved: an AbortedError here is expected
