"""Diagnostics: the configuration (prompts redacted), the runtime and the engine's figures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.const import CONF_API_KEY, CONF_PROMPT, CONF_URL
from homeassistant.core import HomeAssistant

from .runtime_data import RKLLMConfigEntry

# Instructions, what the model last said, the server's key and address.
TO_REDACT = {CONF_PROMPT, "text", CONF_API_KEY, CONF_URL}


async def async_get_config_entry_diagnostics(hass: HomeAssistant, entry: RKLLMConfigEntry) -> dict[str, Any]:
    """Return diagnostics of a model entry."""
    engine = entry.runtime_data.engine
    details = engine.diagnostics()
    last = engine.stats.last
    details["engine"] = {
        **details.get("engine", {}),
        "available": engine.available,
        "stats": async_redact_data(asdict(engine.stats), TO_REDACT),
        # The prompt's size and what was prefilled of it differ by what the KV cache already held.
        "last_request": None
        if last is None
        else {
            "prompt_tokens": last.prompt_tokens,
            "cached_tokens": last.cached_tokens,
            "prefilled_tokens": last.perf.prefill_tokens,
            "generated_tokens": last.perf.generate_tokens,
            "runs": last.runs,
            "cache_hit": last.cache_hit,
        },
    }
    return {
        "entry": {"data": async_redact_data(dict(entry.data), TO_REDACT), "title": entry.title},
        "subentries": [
            {
                "type": subentry.subentry_type,
                "title": subentry.title,
                "data": async_redact_data(dict(subentry.data), TO_REDACT),
            }
            for subentry in entry.subentries.values()
        ],
        **details,
    }
