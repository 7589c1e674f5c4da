"""The chat engine with the runtime loaded into Home Assistant's own process."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from rkllm_runtime.chat import ChatEngine
from rkllm_runtime.system import NPUReading, npu_load_percent, npu_temperature_celsius


class LocalEngine(ChatEngine):
    """The chat engine with the runtime loaded into Home Assistant's own process."""

    @property
    def available(self) -> bool:
        """Until it is closed."""
        return not self.closed

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
