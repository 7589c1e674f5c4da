"""Home Assistant's own Ollama integration, pointed at rkllm-server: the warm KV path, structured AI tasks."""

from __future__ import annotations

from pathlib import Path

import probatio as vol
from homeassistant.components import ai_task, conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from rkllm_runtime.emulator import EmulatedModel, Rule
from tests.images import RED, write_encoder
from tests.ollama_entry import ollama_entry
from tests.server.conftest import MODEL, StartServer, generated_counts, prefill_counts

AGENT = "conversation.ollama_conversation"


async def test_ollama_integration_reuses_the_kv_cache(
    hass: HomeAssistant, start_server: StartServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("ha-key")
    server = start_server("--api-key-file", str(key_file), "--kv-strategy", "reuse", api_key="ha-key")
    assert await async_setup_component(hass, "homeassistant", {})
    entry = ollama_entry(server.url, "ha-key")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    first = await conversation.async_converse(hass, "hello there", None, Context(), agent_id=AGENT)
    assert first.response.speech["plain"]["speech"] == "Hello! How can I help?"
    again = await conversation.async_converse(
        hass, "hello again", first.conversation_id, Context(), agent_id=AGENT
    )
    assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"
    other = await conversation.async_converse(hass, "hi, new conversation", None, Context(), agent_id=AGENT)
    assert other.response.speech["plain"]["speech"] == "Hello! How can I help?"
    cold, follow_up, new = prefill_counts(server.log())
    assert cold > 300  # the Assist prompt with its tools
    assert follow_up < 20  # only the new turn
    assert new < 20  # a new conversation keeps the system prompt
    assert await hass.config_entries.async_unload(entry.entry_id)


def ollama_ai_task_entry(url: str, model: str = MODEL) -> MockConfigEntry:
    """Home Assistant's Ollama integration with one AI task for ``model``."""
    return MockConfigEntry(
        domain="ollama",
        data={"url": url},
        version=3,
        minor_version=3,
        subentries_data=[
            {
                "data": {
                    "model": model,
                    "max_history": 20,
                    "num_ctx": 8192,
                    "keep_alive": -1,
                    "think": False,
                },
                "subentry_type": "ai_task_data",
                "title": "Ollama AI Task",
                "unique_id": None,
            }
        ],
    )


async def test_ollama_ai_task_gets_structured_data(hass: HomeAssistant, start_server: StartServer) -> None:
    """The Ollama integration sends the structure as ``format`` and reads the reply as JSON."""
    server = start_server()
    assert await async_setup_component(hass, "homeassistant", {})
    entry = ollama_ai_task_entry(server.url)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    result = await ai_task.async_generate_data(
        hass,
        task_name="shopping",
        entity_id="ai_task.ollama_ai_task",
        instructions="Make a shopping list",
        structure=vol.Schema({vol.Required("items"): [cv.string]}),
    )
    assert result.data == {"items": ["milk", "bread"]}
    assert len(generated_counts(server.log())) == 2  # the cut-off answer was retried inside the server
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_ollama_ai_task_attachment_is_answered_about(
    hass: HomeAssistant, start_server: StartServer, tmp_path: Path
) -> None:
    """The Ollama integration sends an attached snapshot as ``images``; the vision model reads it."""
    model = EmulatedModel(rules=[Rule(image="red", reply="A red car is in the driveway.")], image_tokens=16)
    vision = {"qwen3-vl:2b": model.write(tmp_path / "qwen3-vl-2b.rkllm")}
    server = start_server(
        "--encoder", str(write_encoder(tmp_path)), models=vision, env={"RKLLM_EMU_TIME_SCALE": "0"}
    )
    media = tmp_path / "media"
    media.mkdir()
    (media / "driveway.jpg").write_bytes(RED)
    hass.config.media_dirs = {"local": str(media)}
    assert await async_setup_component(hass, "homeassistant", {})
    entry = ollama_ai_task_entry(server.url, "qwen3-vl:2b")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    result = await ai_task.async_generate_data(
        hass,
        task_name="driveway",
        entity_id="ai_task.ollama_ai_task",
        instructions="What is in the driveway?",
        attachments=[
            {
                "media_content_id": "media-source://media_source/local/driveway.jpg",
                "media_content_type": "image/jpeg",
            }
        ],
    )
    assert result.data == "A red car is in the driveway."
    assert await hass.config_entries.async_unload(entry.entry_id)
