"""The agent prepared while the user speaks: Home Assistant calls it when speech-to-text starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from homeassistant.components import ai_task, conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from rkllm_runtime.chat import EngineState
from rkllm_runtime.remote.client import RemoteEngine
from tests.integration.conftest import IN_EVERY_MODE, until

AGENT = "conversation.rkllm_conversation"
TASK = "ai_task.rkllm_ai_task"


@pytest.fixture
def device_in_the_kitchen(hass: HomeAssistant) -> str:
    """A voice satellite's device, in the kitchen."""
    satellite = MockConfigEntry(domain="satellite_maker")
    satellite.add_to_hass(hass)
    kitchen = ar.async_get(hass).async_create("Kitchen")
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=satellite.entry_id, identifiers={("x", "1")}
    )
    dr.async_get(hass).async_update_device(device.id, area_id=kitchen.id)
    return device.id


async def converse(hass: HomeAssistant, text: str) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, None, Context(), agent_id=AGENT)


async def kv_tokens(hass: HomeAssistant, entry: MockConfigEntry) -> int:
    """What the model's KV cache holds now (a remote engine asks its server)."""
    engine = entry.runtime_data.engine
    if isinstance(engine, RemoteEngine):
        await engine.refresh()
    return engine.stats.kv_tokens


@IN_EVERY_MODE
async def test_a_command_after_an_ai_task_prefills_only_its_words_when_prepared(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    """An automation's AI task ran first: the Assist prompt is read while the user speaks, not after."""
    engine = init_integration.runtime_data.engine
    await ai_task.async_generate_data(hass, task_name="greet", entity_id=TASK, instructions="Say hello")
    task_tokens = await kv_tokens(hass, init_integration)
    await conversation.async_prepare_agent(hass, AGENT, "en")
    assert await kv_tokens(hass, init_integration) > task_tokens + 500  # the Assist prompt and its tools
    result = await converse(hass, "hello there")
    assert result.response.speech["plain"]["speech"] == "Hello! How can I help?"
    assert engine.stats.last is not None
    assert engine.stats.last.cache_hit
    assert engine.stats.last.perf.prefill_tokens < 20
    assert engine.stats.requests == 2  # the task and the command: preparing is not a request


async def test_the_prompt_of_the_last_device_is_prepared(
    hass: HomeAssistant, config_entry: MockConfigEntry, kitchen_light: str, device_in_the_kitchen: str
) -> None:
    """A satellite's prompt names its area: the agent prepares the prompt of the last device that spoke.

    Storage that cannot be written keeps no prompt-cache file: only the KV cache can hold the prompt.
    """
    storage = Path(hass.config.path(".storage"))
    await hass.async_add_executor_job(lambda: storage.mkdir(parents=True, exist_ok=True))
    await hass.async_add_executor_job((storage / "rkllm").write_text, "not a directory")
    assert await async_setup_component(hass, "conversation", {})
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    engine = config_entry.runtime_data.engine
    satellite = {"agent_id": AGENT, "device_id": device_in_the_kitchen}
    await conversation.async_converse(hass, "hello there", None, Context(), **satellite)
    await ai_task.async_generate_data(hass, task_name="greet", entity_id=TASK, instructions="Say hello")
    await conversation.async_prepare_agent(hass, AGENT, "en")
    await conversation.async_converse(hass, "hello again", None, Context(), **satellite)
    assert engine.stats.last is not None
    assert engine.stats.last.cache_hit
    assert engine.stats.last.perf.prefill_tokens < 20
    assert await hass.config_entries.async_unload(config_entry.entry_id)


async def test_an_answer_under_way_is_left_alone(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preparing never delays a request: while the model answers, it does nothing."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    engine = init_integration.runtime_data.engine
    await ai_task.async_generate_data(hass, task_name="greet", entity_id=TASK, instructions="Say hello")
    task_tokens = engine.stats.kv_tokens
    story = hass.async_create_task(
        ai_task.async_generate_data(hass, task_name="story", entity_id=TASK, instructions="Tell me a story")
    )
    await until(lambda: engine.state is EngineState.GENERATING)
    await conversation.async_prepare_agent(hass, AGENT, "en")
    assert engine.state is EngineState.GENERATING
    assert (await story).data.startswith("Once upon a time")
    assert engine.stats.kv_tokens < task_tokens + 50  # the Assist prompt was never read
