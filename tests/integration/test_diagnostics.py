"""Diagnostics: configuration with prompts redacted, runtime and engine figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from custom_components.rkllm.diagnostics import async_get_config_entry_diagnostics
from tests.integration.conftest import IN_EVERY_MODE


def stable(value: Any, paths: dict[str, str]) -> Any:
    """Replace what differs between runs and machines (paths, timings, memory)."""
    if isinstance(value, dict):
        return {
            key: "<measured>" if key.endswith(("_ms", "_mb")) else stable(item, paths)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [stable(item, paths) for item in value]
    if isinstance(value, str):
        for path, placeholder in paths.items():
            value = value.replace(path, placeholder)
    return value


@IN_EVERY_MODE
async def test_diagnostics(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    emulator_library: Path,
    model_path: Path,
    snapshot: SnapshotAssertion,
) -> None:
    await conversation.async_converse(
        hass, "hello", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    diagnostics = await async_get_config_entry_diagnostics(hass, init_integration)
    conversation_data = next(s for s in diagnostics["subentries"] if s["type"] == "conversation")["data"]
    assert conversation_data["prompt"] == "**REDACTED**"
    assert diagnostics["entry"]["data"].get("api_key", "**REDACTED**") == "**REDACTED**"
    paths = {str(emulator_library): "<library>", str(model_path.parent): "<tmp>"}
    assert stable(diagnostics, paths) == snapshot
