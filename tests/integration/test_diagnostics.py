"""Diagnostics: configuration with prompts redacted, runtime and engine figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry
from syrupy.assertion import SnapshotAssertion

from custom_components.rkllm.const import CONF_ENCODER_FILE
from custom_components.rkllm.diagnostics import async_get_config_entry_diagnostics
from rkllm_runtime.chat import ChatRequest, Message
from tests.images import RED, write_encoder
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


async def test_diagnostics_name_the_vision_encoder(
    hass: HomeAssistant, config_entry: MockConfigEntry, tmp_path: Path
) -> None:
    encoder = write_encoder(tmp_path, memory_mb=800)
    hass.config_entries.async_update_entry(
        config_entry, data={**config_entry.data, CONF_ENCODER_FILE: str(encoder)}
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    before = await async_get_config_entry_diagnostics(hass, config_entry)
    assert before["vision_encoder"] == {"file": encoder.name, "loaded": False}
    request = ChatRequest("You describe snapshots.", [Message("user", "what is this?", images=(RED,))])
    async with config_entry.runtime_data.engine.chat(request) as stream:
        async for _event in stream:
            pass
    after = (await async_get_config_entry_diagnostics(hass, config_entry))["vision_encoder"]
    assert after["loaded"]
    assert (after["family"], after["tokens"], after["memory_mb"]) == ("qwen3-vl", 16, 800)
    assert await hass.config_entries.async_unload(config_entry.entry_id)
