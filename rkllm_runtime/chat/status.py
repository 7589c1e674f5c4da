"""What an engine tells of itself, wherever it runs: its state, its counters and its status.

Declared once for the local engine, the server that serves it and the remote engine that reads
it back (:mod:`rkllm_runtime.remote.wire` carries :class:`EngineStatus` as JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from rkllm_runtime.types import ModelParams

from .events import ChatResult
from .plan import KVMode


class EngineState(StrEnum):
    """What the engine is doing."""

    READY = "ready"
    PREFILLING = "prefilling"
    """Reading the prompt, before the first token."""
    GENERATING = "generating"
    CLOSED = "closed"


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine started."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    malformed_calls: int = 0
    kv_tokens: int = 0
    last: ChatResult | None = None
    last_error: str | None = None
    """Of the last request, None when it succeeded."""
    context_room: int | None = None
    """Tokens (estimated) the last request's system prompt and tools left in the context."""
    constrained: bool | None = None
    """Whether output that must follow a grammar is decoded under it (None: not needed yet)."""
    constrained_note: str = ""
    """Why not: then such output is checked and asked for again instead."""

    def count(self, result: ChatResult) -> None:
        """Count a finished request."""
        self.requests += 1
        if result.cache_hit:
            self.cache_hits += 1
        else:
            self.cache_misses += 1
        self.kv_tokens = result.kv_tokens
        self.last = result
        self.last_error = None


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """An engine's description of itself: what ``GET /rkllm/status`` reports for each model."""

    model_file: str
    """The model's file name."""
    release: str = "unknown"
    """The runtime release that runs it."""
    state: EngineState = EngineState.READY
    waiting: int = 0
    """Requests queued behind the running one."""
    stats: EngineStats = field(default_factory=EngineStats)
    kv_mode: KVMode = KVMode.CONSERVATIVE
    params: ModelParams = field(default_factory=ModelParams)
    """What the model was loaded with."""
    model_bytes: int = 0
    """The model file's size (0 when not told)."""


class Observed:
    """State and counters, with the listeners told of every change: what every engine keeps alike."""

    def __init__(self) -> None:
        self.stats = EngineStats()
        self.state = EngineState.READY
        self._listeners: list[Callable[[], None]] = []

    @property
    def closed(self) -> bool:
        """Whether the engine was closed."""
        return self.state is EngineState.CLOSED

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) whenever state or stats change; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        for listener in list(self._listeners):
            listener()

    def _set_state(self, state: EngineState) -> None:
        """Change the state (a closed engine stays closed) and tell the listeners."""
        if not self.closed:
            self.state = state
            self._changed()
