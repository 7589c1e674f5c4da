"""Sensors follow the requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from homeassistant.components import conversation
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import entity_registry as er
from pytest_homeassistant_custom_component.common import MockConfigEntry


def state(hass: HomeAssistant, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", "rkllm", f"{hass.data['entry_id']}_{key}")
    assert entity_id is not None
    found = hass.states.get(entity_id)
    assert found is not None
    return found.state


@pytest.fixture
def entry_id(hass: HomeAssistant, init_integration: MockConfigEntry) -> str:
    hass.data["entry_id"] = init_integration.entry_id
    return init_integration.entry_id


async def test_sensors_update_after_a_request(hass: HomeAssistant, entry_id: str) -> None:
    assert state(hass, "model_state") == "ready"
    assert state(hass, "decode_speed") == "unknown"
    await conversation.async_converse(
        hass, "hello", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    await hass.async_block_till_done()
    assert float(state(hass, "decode_speed")) > 0
    assert float(state(hass, "prefill_speed")) > 0
    assert float(state(hass, "time_to_first_token")) >= 0
    assert float(state(hass, "peak_memory")) > 1
    assert int(state(hass, "prompt_tokens")) > 500
    assert int(state(hass, "prefilled_tokens")) == int(state(hass, "prompt_tokens"))
    assert int(state(hass, "kv_cache_tokens")) > 500
    assert state(hass, "cache_misses") == "1"
    assert state(hass, "model_state") == "ready"
    await conversation.async_converse(
        hass, "hello", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    await hass.async_block_till_done()
    assert state(hass, "cache_hits") == "1"
    assert int(state(hass, "prefilled_tokens")) < 20


async def test_model_state_after_an_error(hass: HomeAssistant, entry_id: str) -> None:
    await conversation.async_converse(
        hass, "fail please", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    await hass.async_block_till_done()
    assert state(hass, "model_state") == "error"
    await conversation.async_converse(
        hass, "hello", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    await hass.async_block_till_done()
    assert state(hass, "model_state") == "ready"


async def test_npu_sensors_unavailable_without_the_driver(hass: HomeAssistant, entry_id: str) -> None:
    assert state(hass, "npu_load") == STATE_UNAVAILABLE
    assert state(hass, "npu_temperature") == STATE_UNAVAILABLE


async def test_npu_sensors_read_the_board(
    hass: HomeAssistant, entry_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    load = tmp_path / "load"
    load.write_text("NPU load:  Core0: 40%, Core1: 20%, Core2:  0%,\n")
    zone = tmp_path / "thermal" / "thermal_zone3"
    zone.mkdir(parents=True)
    (zone / "type").write_text("npu-thermal\n")
    (zone / "temp").write_text("47250\n")
    monkeypatch.setattr("rkllm_runtime.system.NPU_LOAD_PATHS", (load,))
    monkeypatch.setattr("rkllm_runtime.system.THERMAL_ZONES", tmp_path / "thermal")
    await hass.config_entries.async_reload(entry_id)
    await hass.async_block_till_done()
    assert float(state(hass, "npu_load")) == 20.0
    assert float(state(hass, "npu_temperature")) == 47.25
