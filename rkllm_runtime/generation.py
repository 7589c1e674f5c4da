"""A run's cancel token, and its chunks iterated from a worker thread (the blocking ``aio``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from .closing import Closing
from .types import Input, RunOptions, RunResult


class CancelToken(threading.Event):
    """Set to cancel one run, whether it is running yet or still waiting for the handle."""

    ended_early = False
    """Set by :meth:`RKLLMRuntime.end_early`: the run ends as a completed one."""


class Runner(Protocol):
    """What a generation drives: :class:`~rkllm_runtime.runtime.RKLLMRuntime`."""

    def run(
        self,
        input_: Input,
        options: RunOptions | None,
        on_text: Callable[[str], None] | None,
        token: CancelToken | None,
    ) -> RunResult: ...

    def abort(self, token: CancelToken | None = None) -> bool: ...


class Generation(Iterator[str], Closing):
    """Decoded chunks of a run on a worker thread; ``result`` is set once exhausted.

    Closing it early (or leaving a ``with`` block) aborts the run.
    """

    _DONE = object()

    def __init__(
        self, runtime: Runner, input_: Input, options: RunOptions | None, token: CancelToken
    ) -> None:
        self.result: RunResult | None = None
        self._runtime = runtime
        self._token = token
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(input_, options), name="rkllm-generate", daemon=True
        )
        self._thread.start()

    def _work(self, input_: Input, options: RunOptions | None) -> None:
        try:
            self.result = self._runtime.run(input_, options, self._queue.put, self._token)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._error = err
        finally:
            self._queue.put(self._DONE)

    def __next__(self) -> str:
        item = self._queue.get()
        if item is self._DONE:
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        assert isinstance(item, str)
        return item

    def close(self) -> None:
        """Abort the run if it is still going and wait for the worker thread."""
        self._token.set()
        while self._thread.is_alive():
            self._runtime.abort(self._token)
            self._thread.join(0.05)
