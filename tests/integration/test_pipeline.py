"""A text run of an Assist pipeline, over the websocket API as the frontend does it."""

from __future__ import annotations

from typing import Any

import pytest
from homeassistant import block_async_io
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline, async_update_pipeline
from homeassistant.const import MATCH_ALL
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from tests.integration.conftest import IN_EVERY_MODE

AGENT = "conversation.rkllm_conversation"


async def run_text(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator, text: str
) -> list[dict[str, Any]]:
    assert await async_setup_component(hass, "assist_pipeline", {})
    await async_update_pipeline(
        hass, async_get_pipeline(hass), conversation_engine=AGENT, conversation_language=MATCH_ALL
    )
    client = await hass_ws_client(hass)
    await client.send_json_auto_id(
        {
            "type": "assist_pipeline/run",
            "start_stage": "intent",
            "end_stage": "intent",
            "input": {"text": text},
        }
    )
    assert (await client.receive_json())["success"]
    events = []
    while True:
        event = (await client.receive_json())["event"]
        events.append(event)
        if event["type"] == "run-end":
            return events


@IN_EVERY_MODE
async def test_pipeline_streams_the_agent_reply(
    hass: HomeAssistant, init_integration: MockConfigEntry, hass_ws_client: WebSocketGenerator
) -> None:
    events = await run_text(hass, hass_ws_client, "tell me a story")
    kinds = [event["type"] for event in events]
    assert kinds[:2] == ["run-start", "intent-start"]
    assert kinds[-2:] == ["intent-end", "run-end"]
    assert events[1]["data"]["engine"] == AGENT
    deltas = [e["data"]["chat_log_delta"] for e in events if e["type"] == "intent-progress"]
    pieces = [delta["content"] for delta in deltas if "content" in delta]
    assert len(pieces) > 100  # token by token, as the model produced them
    speech = events[-2]["data"]["intent_output"]["response"]["speech"]["plain"]["speech"]
    assert "".join(pieces) == speech
    assert speech.startswith("Once upon a time there was a light.")


@IN_EVERY_MODE
async def test_pipeline_controls_the_home(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    kitchen_light: str,
) -> None:
    events = await run_text(hass, hass_ws_client, "turn the kitchen light on")
    assert hass.states.get(kitchen_light).state == "on"
    deltas = [e["data"]["chat_log_delta"] for e in events if e["type"] == "intent-progress"]
    assert any("tool_calls" in delta for delta in deltas)
    assert any(delta.get("role") == "tool_result" for delta in deltas)
    speech = events[-2]["data"]["intent_output"]["response"]["speech"]["plain"]["speech"]
    assert speech == "Turned on the light"  # Home Assistant's words for the done action, no second run
    assert deltas[-1] == {"content": "Turned on the light"}  # streamed to the pipeline as the model's text


@pytest.fixture
def detect_blocking_calls(monkeypatch: pytest.MonkeyPatch, disable_block_async_io: None) -> None:
    """Home Assistant's own detection of blocking calls in the event loop, file access included.

    (Under tests it leaves file access out; a real instance checks it.)
    """
    monkeypatch.setattr(block_async_io, "_IN_TESTS", False)
    block_async_io.enable()


async def test_a_session_makes_no_blocking_call_in_the_event_loop(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    hass_ws_client: WebSocketGenerator,
    caplog: pytest.LogCaptureFixture,
    detect_blocking_calls: None,
) -> None:
    """First request (saves the prompt-cache file), reload (loads it), follow-ups: nothing blocks."""
    await run_text(hass, hass_ws_client, "turn the kitchen light on")
    assert await hass.config_entries.async_reload(init_integration.entry_id)
    await hass.async_block_till_done()
    for text in ("tell me a story", "hello there"):
        events = await run_text(hass, hass_ws_client, text)
        assert events[-1]["type"] == "run-end"
    assert init_integration.runtime_data.engine.stats.cache_hits >= 1  # the file was read back
    assert [r.getMessage() for r in caplog.records if "Detected blocking call" in r.getMessage()] == []
