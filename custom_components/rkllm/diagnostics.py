"""Diagnostics: the configuration (prompts redacted), the runtime and the engine's figures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_PROMPT
from homeassistant.core import HomeAssistant

from .models import RKLLMConfigEntry

TO_REDACT = {CONF_PROMPT, "text"}  # instructions, and what the model last said


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: RKLLMConfigEntry) -> dict[str, Any]:
    """Return diagnostics of a model entry."""
    engine = entry.runtime_data.engine
    runtime = engine.runtime
    stats = async_redact_data(asdict(engine.stats), TO_REDACT)
    return {
        "entry": {"data": dict(entry.data), "title": entry.title},
        "subentries": [
            {
                "type": subentry.subentry_type,
                "title": subentry.title,
                "data": async_redact_data(dict(subentry.data), TO_REDACT),
            }
            for subentry in entry.subentries.values()
        ],
        "runtime": {
            "release": runtime.library.release,
            "abi": runtime.library.abi_version,
            "functions": sorted(runtime.library.functions),
            "warning": runtime.library.warning,
            "default_params": runtime.default_param(),
            "params": asdict(runtime.params),
        },
        "engine": {
            "state": engine.state.value,
            "kv_mode": engine.kv_mode.value,
            "waiting": engine.waiting,
            "stats": stats,
        },
    }
