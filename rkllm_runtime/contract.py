"""What every engine offers, wherever its model runs: here, in a child process, or on a server.

The local :class:`~rkllm_runtime.chat.ChatEngine` and the remote
:class:`~rkllm_runtime.client.RemoteEngine` both implement :class:`ModelEngine`, and
raise the same errors: :class:`ErrorKind` names each one so that it crosses the wire whole.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from .chat import ChatRequest, ChatStream, EngineState, EngineStats, WarmOutcome
from .chat.evaluate import EvaluationRequest, EvaluationResult
from .errors import (
    AbortedError,
    AuthenticationError,
    BusyError,
    ClosedError,
    ContextOverflowError,
    InvalidTextError,
    RKLLMError,
    RunError,
    ServerStoppedError,
    ServerUnavailableError,
    UnknownModelError,
)
from .system import NPUReading


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
    def waiting(self) -> int:
        """Requests queued behind the running one."""

    @property
    def model_file(self) -> str:
        """The model's file name."""

    @property
    def release(self) -> str:
        """The runtime release that runs it."""

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request: its events, :class:`~rkllm_runtime.chat.Finished` last.

        Raises the errors :class:`ErrorKind` names.
        """

    async def warm(self, request: ChatRequest) -> WarmOutcome:
        """Bring the request's system prompt and tools into the KV cache, ahead of the request itself.

        Does nothing while a request runs or waits. Raises the errors :class:`ErrorKind` names.
        """

    async def evaluate(self, request: EvaluationRequest) -> EvaluationResult:
        """Answer questions about a state with probabilities read from the logits, nothing sampled.

        Queued like a chat. Raises the errors :class:`ErrorKind` names.
        """

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on every change of state, availability or stats; returns a remover."""

    async def read_npu(self) -> NPUReading:
        """The NPU's load and temperature."""

    def diagnostics(self) -> dict[str, Any]:
        """What a bug report needs."""

    async def aclose(self) -> None:
        """Stop answering and free what the engine holds."""


class ErrorKind(StrEnum):
    """What went wrong with a request, in every mode alike (most specific first)."""

    CONTEXT_OVERFLOW = "context_overflow"
    INVALID_TEXT = "invalid_text"
    BUSY = "busy"
    ABORTED = "aborted"
    CLOSED = "closed"
    SERVER_STOPPED = "server_stopped"
    UNAVAILABLE = "unavailable"
    AUTHENTICATION = "authentication"
    UNKNOWN_MODEL = "unknown_model"
    RUN = "run"
    """The runtime failed: the model's fault, shown on its state sensor."""


ERRORS: dict[ErrorKind, type[RKLLMError]] = {
    ErrorKind.CONTEXT_OVERFLOW: ContextOverflowError,
    ErrorKind.INVALID_TEXT: InvalidTextError,
    ErrorKind.BUSY: BusyError,
    ErrorKind.ABORTED: AbortedError,
    ErrorKind.CLOSED: ClosedError,
    ErrorKind.SERVER_STOPPED: ServerStoppedError,
    ErrorKind.UNAVAILABLE: ServerUnavailableError,
    ErrorKind.AUTHENTICATION: AuthenticationError,
    ErrorKind.UNKNOWN_MODEL: UnknownModelError,
    ErrorKind.RUN: RunError,
}


def error_kind(err: RKLLMError) -> ErrorKind:
    """The kind of an error (an unknown one is a failed run)."""
    return next((kind for kind, cls in ERRORS.items() if isinstance(err, cls)), ErrorKind.RUN)
