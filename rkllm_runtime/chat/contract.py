"""What every engine offers, wherever its model runs: here, in a child process, or on a server.

The local :class:`~rkllm_runtime.chat.ChatEngine` (with the availability, NPU reading and
diagnostics its host adds, as the integration's ``LocalEngine`` does) and the remote
:class:`~rkllm_runtime.remote.client.RemoteEngine` implement :class:`ModelEngine`, and
raise the same errors: :class:`~rkllm_runtime.errors.ErrorKind` names each one so that it crosses
the wire whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rkllm_runtime.system import NPUReading

from .evaluate import EvaluationRequest, EvaluationResult
from .messages import ChatRequest
from .status import EngineState, EngineStats, EngineStatus
from .stream import ChatStream
from .warm import WarmOutcome


class ModelEngine(Protocol):
    """A model answering chat requests, wherever it runs."""

    @property
    def stats(self) -> EngineStats:
        """Counters and the last result."""

    @property
    def state(self) -> EngineState:
        """What the engine is doing."""

    @property
    def available(self) -> bool:
        """Whether requests can be answered now."""

    @property
    def closed(self) -> bool:
        """Whether the engine was closed (the entry unloaded)."""

    @property
    def status(self) -> EngineStatus:
        """What the engine says of itself: its model file, release, queue, load parameters."""

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request: its events, :class:`~rkllm_runtime.chat.Finished` last.

        Raises the errors :class:`~rkllm_runtime.errors.ErrorKind` names.
        """

    async def warm(self, request: ChatRequest) -> WarmOutcome:
        """Bring the request's system prompt and tools into the KV cache, ahead of the request itself.

        Does nothing while a request runs or waits. Raises the errors
        :class:`~rkllm_runtime.errors.ErrorKind` names.
        """

    async def evaluate(self, request: EvaluationRequest) -> EvaluationResult:
        """Answer questions about a state with probabilities read from the logits, nothing sampled.

        Queued like a chat. Raises the errors :class:`~rkllm_runtime.errors.ErrorKind` names.
        """

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on every change of state, availability or stats; returns a remover."""

    async def read_npu(self) -> NPUReading:
        """The NPU's load and temperature."""

    def diagnostics(self) -> dict[str, Any]:
        """What a bug report needs."""

    async def aclose(self) -> None:
        """Stop answering and free what the engine holds."""
