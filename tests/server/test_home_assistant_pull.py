"""Home Assistant's own Ollama integration downloads a catalog model through rkllm-server from its flow."""

from __future__ import annotations

import asyncio
from pathlib import Path

from homeassistant.components import conversation
from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from rkllm_runtime.emulator import build_cached
from tests.hub_server import model_bytes, running_hub
from tests.server.conftest import StartServer

# What the catalog gives "qwen2.5" (offered as "qwen2.5:latest" by the Ollama flow) on runtime 1.2.3.
REPO = "Azurastar2903/Qwen2.5-1.5B-Instruct-rk3588-1.2.1"
FILE = "Qwen2.5-1.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.rkllm"


async def test_the_ollama_flow_pulls_a_model_and_talks_to_it(
    hass: HomeAssistant, start_server: StartServer, tmp_path: Path
) -> None:
    with running_hub() as hub:
        hub.add(REPO, FILE, model_bytes(padding_mb=12))
        server = start_server(
            "--models-dir", str(tmp_path / "models"),
            library=build_cached("1.2"), models={}, env={"HF_ENDPOINT": hub.url},
        )  # fmt: skip
        assert await async_setup_component(hass, "homeassistant", {})
        entry = MockConfigEntry(domain="ollama", data={"url": server.url}, version=3, minor_version=3)
        entry.add_to_hass(hass)
        assert await hass.config_entries.async_setup(entry.entry_id)

        result = await hass.config_entries.subentries.async_init(
            (entry.entry_id, "conversation"), context={"source": SOURCE_USER}
        )
        assert result["type"] is FlowResultType.FORM
        offered = {option["value"] for option in _model_options(result)}
        assert "qwen2.5:latest" in offered
        result = await hass.config_entries.subentries.async_configure(
            result["flow_id"], {"name": "NPU assistant", "model": "qwen2.5:latest"}
        )
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        assert result["progress_action"] == "download"
        for _ in range(300):
            result = await hass.config_entries.subentries.async_configure(result["flow_id"])
            if result["type"] is not FlowResultType.SHOW_PROGRESS:
                break
            await asyncio.sleep(0.1)
        if result["type"] is FlowResultType.SHOW_PROGRESS_DONE:
            result = await hass.config_entries.subentries.async_configure(result["flow_id"])
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        assert (tmp_path / "models" / FILE).is_file()
        assert len(hub.gets(FILE)) == 1

        await hass.config_entries.async_reload(entry.entry_id)
        await hass.async_block_till_done()
        reply = await conversation.async_converse(
            hass, "hello", None, Context(), agent_id="conversation.npu_assistant"
        )
        assert reply.response.speech["plain"]["speech"] == "Hello from the hub."
        assert await hass.config_entries.async_unload(entry.entry_id)


def _model_options(result: object) -> list[dict[str, str]]:
    schema = result["data_schema"].schema  # type: ignore[index]
    selector = next(value for key, value in schema.items() if str(key) == "model")
    return list(selector.config["options"])
