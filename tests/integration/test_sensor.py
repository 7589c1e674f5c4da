"""Sensors follow the requests."""

from __future__ import annotations

import logging
from itertools import groupby
from pathlib import Path

import pytest
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_should_expose
from homeassistant.const import STATE_UNAVAILABLE, EntityCategory
from homeassistant.core import Context, Event, EventStateChangedData, HomeAssistant, State, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import llm
from homeassistant.helpers.entity_component import async_update_entity
from homeassistant.helpers.event import async_track_state_change_event
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)

from custom_components.rkllm.const import DOMAIN
from tests.integration.conftest import IN_EVERY_MODE


def state(hass: HomeAssistant, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", "rkllm", f"{hass.data['entry_id']}_{key}")
    assert entity_id is not None
    found = hass.states.get(entity_id)
    assert found is not None
    return found.state


@pytest.fixture
def entry_id(
    hass: HomeAssistant, entity_registry_enabled_by_default: None, init_integration: MockConfigEntry
) -> str:
    hass.data["entry_id"] = init_integration.entry_id
    return init_integration.entry_id


@IN_EVERY_MODE
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


async def test_model_state_reads_the_prompt_then_generates(hass: HomeAssistant, entry_id: str) -> None:
    entity_id = er.async_get(hass).async_get_entity_id("sensor", "rkllm", f"{entry_id}_model_state")
    assert entity_id is not None
    seen: list[str] = []

    @callback
    def changed(event: Event[EventStateChangedData]) -> None:
        if (new := event.data["new_state"]) is not None:
            seen.append(new.state)

    async_track_state_change_event(hass, [entity_id], changed)
    await conversation.async_converse(
        hass, "hello", None, Context(), agent_id="conversation.rkllm_conversation"
    )
    await hass.async_block_till_done()
    assert [value for value, _ in groupby(seen)] == ["prefilling", "generating", "ready"]


@IN_EVERY_MODE
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


async def test_token_sensors_are_diagnostic_and_disabled_by_default(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    registry = er.async_get(hass)
    for key in ("prompt_tokens", "prefilled_tokens", "kv_cache_tokens", "cache_hits", "cache_misses"):
        entity_id = registry.async_get_entity_id("sensor", "rkllm", f"{init_integration.entry_id}_{key}")
        assert entity_id is not None
        entry = registry.async_get(entity_id)
        assert entry is not None
        assert entry.entity_category is EntityCategory.DIAGNOSTIC
        assert entry.disabled_by is er.RegistryEntryDisabler.INTEGRATION
    speed = registry.async_get_entity_id("sensor", "rkllm", f"{init_integration.entry_id}_decode_speed")
    assert speed is not None
    assert registry.async_get(speed).disabled_by is None  # type: ignore[union-attr]


async def test_figures_survive_a_restart(
    hass: HomeAssistant, config_entry: MockConfigEntry, kitchen_light: str
) -> None:
    mock_restore_cache_with_extra_data(
        hass,
        [
            (
                State("sensor.qwen_generation_speed", "12.5"),
                {"native_value": 12.5, "native_unit_of_measurement": "tokens/s"},
            ),
            (State("sensor.qwen_model_state", "generating"), {"native_value": "generating"}),
        ],
    )
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert hass.states.get("sensor.qwen_generation_speed").state == "12.5"  # type: ignore[union-attr]
    assert hass.states.get("sensor.qwen_model_state").state == "ready"  # type: ignore[union-attr]
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_unloaded_model_is_logged_once(
    hass: HomeAssistant, entry_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    entry = hass.config_entries.async_get_entry(entry_id)
    assert entry is not None
    caplog.set_level(logging.INFO, logger="custom_components.rkllm")
    await entry.runtime_data.engine.aclose()  # as on shutdown, before the entities go
    await hass.async_block_till_done()
    assert state(hass, "decode_speed") == STATE_UNAVAILABLE
    assert state(hass, "model_state") == STATE_UNAVAILABLE
    assert len([r for r in caplog.records if "was unloaded" in r.getMessage()]) == 1


async def test_npu_sensor_logs_once_when_unavailable_and_once_when_back(
    hass: HomeAssistant,
    entry_id: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="custom_components.rkllm")
    load = tmp_path / "load"
    reading = "NPU load:  Core0: 30%, Core1: 30%, Core2: 30%,\n"
    await hass.async_add_executor_job(load.write_text, reading)
    monkeypatch.setattr("rkllm_runtime.system.NPU_LOAD_PATHS", (load,))
    assert await hass.config_entries.async_reload(entry_id)
    entity_id = er.async_get(hass).async_get_entity_id("sensor", "rkllm", f"{entry_id}_npu_load")
    assert entity_id is not None
    assert float(state(hass, "npu_load")) == 30.0
    caplog.clear()

    await hass.async_add_executor_job(load.unlink)
    for _ in range(2):
        await async_update_entity(hass, entity_id)
    assert state(hass, "npu_load") == STATE_UNAVAILABLE
    await hass.async_add_executor_job(load.write_text, reading)
    for _ in range(2):
        await async_update_entity(hass, entity_id)
    assert float(state(hass, "npu_load")) == 30.0
    messages = [r.getMessage() for r in caplog.records if "npu_load" in r.getMessage()]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert len([m for m in messages if "again" in m]) == 1


async def test_no_sensor_is_exposed_to_assist(
    hass: HomeAssistant, entry_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The board's figures are diagnostics: Assist's prompt never lists them, not even the NPU's heat."""
    zone = tmp_path / "thermal" / "thermal_zone3"
    zone.mkdir(parents=True)
    (zone / "type").write_text("npu-thermal\n")
    (zone / "temp").write_text("47250\n")
    monkeypatch.setattr("rkllm_runtime.system.THERMAL_ZONES", tmp_path / "thermal")
    assert await hass.config_entries.async_reload(entry_id)
    await hass.async_block_till_done()
    assert float(state(hass, "npu_temperature")) == 47.25
    sensors = er.async_entries_for_config_entry(er.async_get(hass), entry_id)
    assert len([entry for entry in sensors if entry.domain == "sensor"]) == 12
    context = llm.LLMContext(DOMAIN, None, "en", conversation.DOMAIN, None)
    prompt = (await llm.async_get_api(hass, llm.LLM_API_ASSIST, context)).api_prompt
    assert "Kitchen light" in prompt
    assert "NPU" not in prompt
    assert not [entry for entry in sensors if async_should_expose(hass, conversation.DOMAIN, entry.entity_id)]
    assert {entry.entity_category for entry in sensors if entry.domain == "sensor"} == {
        EntityCategory.DIAGNOSTIC
    }
