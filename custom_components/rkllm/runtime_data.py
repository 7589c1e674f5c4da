"""Runtime data of a loaded model entry."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry

from rkllm_runtime.chat.contract import ModelEngine

from .supervision import ChildSupervisor


@dataclass(slots=True)
class RKLLMData:
    """What a loaded entry keeps: the engine its entities talk to, wherever the model runs."""

    engine: ModelEngine
    child: ChildSupervisor | None = None
    """The model's own process, in that mode (it stops itself with the entry)."""


type RKLLMConfigEntry = ConfigEntry[RKLLMData]
