"""Runtime data of a loaded model entry."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry

from rkllm_runtime.chat import ChatEngine


@dataclass(slots=True)
class RKLLMData:
    """What a loaded entry keeps: the engine that owns the model's handle."""

    engine: ChatEngine


type RKLLMConfigEntry = ConfigEntry[RKLLMData]
