"""Repair issues of a model entry, tied to the entry where Home Assistant supports it."""

from __future__ import annotations

import inspect
from typing import Any

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from rkllm_runtime.chat import TURN_TOKENS
from rkllm_runtime.chat.contract import ModelEngine

from .const import DOMAIN

RUNTIME_UNUSABLE = "runtime_unusable"
RUNTIME_RELEASE_WARNING = "runtime_release_warning"
RUNTIME_CRASHING = "runtime_crashing"
CONTEXT_TOO_SMALL = "context_too_small"


@callback
def async_create_entry_issue(hass: HomeAssistant, entry: ConfigEntry, issue_id: str, **details: Any) -> None:
    """Raise an issue of the entry (``issue_id`` is suffixed with the entry id).

    From Home Assistant 2026.11 the issue carries the entry, which clears it when the
    entry is removed; before, the entry's unload and setup clear it.
    """
    if "config_entry_id" in inspect.signature(ir.async_create_issue).parameters:
        details["config_entry_id"] = entry.entry_id
    ir.async_create_issue(hass, DOMAIN, f"{issue_id}_{entry.entry_id}", is_fixable=False, **details)


@callback
def async_delete_entry_issue(hass: HomeAssistant, entry: ConfigEntry, issue_id: str) -> None:
    """Clear an issue :func:`async_create_entry_issue` raised."""
    ir.async_delete_issue(hass, DOMAIN, f"{issue_id}_{entry.entry_id}")


@callback
def async_watch_context_room(hass: HomeAssistant, entry: ConfigEntry, engine: ModelEngine) -> None:
    """Raise an issue while the prompt and tools leave less of the engine's context than a turn needs."""

    @callback
    def _changed() -> None:
        room = engine.stats.context_room
        if room is None or room >= TURN_TOKENS:
            async_delete_entry_issue(hass, entry, CONTEXT_TOO_SMALL)
            return
        async_create_entry_issue(
            hass,
            entry,
            CONTEXT_TOO_SMALL,
            severity=ir.IssueSeverity.WARNING,
            translation_key=CONTEXT_TOO_SMALL,
            translation_placeholders={
                "title": entry.title,
                "room": str(max(room, 0)),
                "needed": str(TURN_TOKENS),
            },
        )

    entry.async_on_unload(engine.add_listener(_changed))
