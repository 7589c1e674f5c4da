"""What entities talk to: one engine interface, answered in this process or by an rkllm-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatStream, EngineState, EngineStats
from rkllm_runtime.client import NPUReading
from rkllm_runtime.system import npu_load_percent, npu_temperature_celsius


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
    def model_file(self) -> str:
        """The model's file name."""

    @property
    def release(self) -> str:
        """The runtime release that runs it."""

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request: its events, :class:`~rkllm_runtime.chat.Finished` last."""

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` on every change of state, availability or stats; returns a remover."""

    async def read_npu(self) -> NPUReading:
        """The NPU's load and temperature."""

    def diagnostics(self) -> dict[str, Any]:
        """What a bug report needs."""

    async def aclose(self) -> None:
        """Stop answering and free what the engine holds."""


class LocalEngine(ChatEngine):
    """The chat engine with the runtime loaded into Home Assistant's own process."""

    @property
    def available(self) -> bool:
        """Until it is closed."""
        return not self.closed

    @property
    def model_file(self) -> str:
        """The model's file name."""
        return self.runtime.model_path.name

    @property
    def release(self) -> str:
        """The loaded library's release."""
        return self.runtime.library.release

    async def read_npu(self) -> NPUReading:
        """Read /sys in the executor."""
        loop = asyncio.get_running_loop()
        return NPUReading(
            await loop.run_in_executor(None, npu_load_percent),
            await loop.run_in_executor(None, npu_temperature_celsius),
        )

    def diagnostics(self) -> dict[str, Any]:
        """The library, the load parameters and the engine's queue."""
        library = self.runtime.library
        return {
            "runtime": {
                "release": library.release,
                "abi": library.abi_version,
                "functions": sorted(library.functions),
                "warning": library.warning,
                "default_params": self.runtime.default_param(),
                "params": asdict(self.runtime.params),
            },
            "engine": {"state": self.state.value, "kv_mode": self.kv_mode.value, "waiting": self.waiting},
        }
