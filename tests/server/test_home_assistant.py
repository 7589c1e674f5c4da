"""Home Assistant's own Ollama integration, pointed at rkllm-server, gets the warm KV path."""

from __future__ import annotations

from pathlib import Path

from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component

from tests.server.conftest import StartServer, ollama_entry, prefill_counts

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
