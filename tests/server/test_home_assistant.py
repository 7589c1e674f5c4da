"""Home Assistant's own Ollama integration, pointed at rkllm-server, gets the warm KV path."""

from __future__ import annotations

from pathlib import Path

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from tests.server.conftest import MODEL, StartServer, prefill_counts

AGENT = "conversation.ollama_conversation"


async def test_ollama_integration_reuses_the_kv_cache(
    hass: HomeAssistant, start_server: StartServer, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("ha-key")
    server = start_server("--api-key-file", str(key_file), "--kv-strategy", "reuse", api_key="ha-key")
    assert await async_setup_component(hass, "homeassistant", {})
    entry = MockConfigEntry(
        domain="ollama",
        data={"url": server.url, "api_key": "ha-key"},
        version=3,
        minor_version=3,
        subentries_data=[
            {
                "data": {"model": MODEL, "prompt": "You are a voice assistant.", "llm_hass_api": ["assist"],
                         "max_history": 20, "num_ctx": 8192, "keep_alive": -1, "think": False},
                "subentry_type": "conversation",
                "title": "Ollama Conversation",
                "unique_id": None,
            }
        ],
    )  # fmt: skip
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
