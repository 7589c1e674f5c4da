"""The config flow downloads a model behind Home Assistant's progress screen, driven over REST as the UI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import pytest_socket
from homeassistant.core import Event, HomeAssistant
from homeassistant.data_entry_flow import EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE
from homeassistant.setup import async_setup_component

from custom_components.rkllm.const import CONF_MODEL_PATH, DOMAIN
from rkllm_runtime.emulator import build_cached
from rkllm_runtime.models.download import read_records
from tests.hub_server import Hub, model_bytes, running_hub

CATALOG_ID = "qwen2.5-1.5b-rk3588-1.2.1"  # fits runtime 1.2.3
OLD = "qwen2.5-0.5b-rk3588-1.1.4"  # needs runtime 1.1.x
CATALOG_REPO = "Azurastar2903/Qwen2.5-1.5B-Instruct-rk3588-1.2.1"
CATALOG_FILE = "Qwen2.5-1.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.rkllm"
FLOWS = "/api/config/config_entries/flow"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    """The hub on loopback, where HF_ENDPOINT sends the downloads."""
    pytest_socket.enable_socket()
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    with running_hub() as running:
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        yield running


@pytest.fixture
async def client(hass: HomeAssistant, hass_client: Any) -> Any:
    """A client of Home Assistant's REST API (what an entry sets up comes first: the router then freezes)."""
    for component in (DOMAIN, "ai_task"):
        assert await async_setup_component(hass, component, {})
    assert await async_setup_component(hass, "config", {})
    return await hass_client()


async def post(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status == HTTPStatus.OK, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def to_download_form(client: Any, mode: str = "in_process") -> dict[str, Any]:
    flow = await post(client, FLOWS, {"handler": DOMAIN})
    flow = await post(client, f"{FLOWS}/{flow['flow_id']}", {"next_step_id": mode})
    assert flow["menu_options"] == [f"{mode}_file", "download"]
    flow = await post(client, f"{FLOWS}/{flow['flow_id']}", {"next_step_id": "download"})
    assert flow["type"] == "form"
    assert flow["step_id"] == "download"
    return flow


async def follow(client: Any, flow: dict[str, Any]) -> dict[str, Any]:
    """Read the flow (GET) until its progress screens are over, as the frontend does."""
    for _ in range(600):
        if flow.get("type") not in ("progress", "progress_done"):
            return flow
        await asyncio.sleep(0.05)
        response = await client.get(f"{FLOWS}/{flow['flow_id']}")
        if response.status == HTTPStatus.NOT_FOUND:
            return {"type": "gone"}
        flow = await response.json()
    pytest.fail("the flow never left its progress screen")


def partials(folder: Path) -> list[Path]:
    """The hub client's partial downloads left in the folder."""
    return list(folder.rglob("*.incomplete"))


def options(flow: dict[str, Any]) -> list[dict[str, str]]:
    field = next(field for field in flow["data_schema"] if field["name"] == "catalog_model")
    return list(field["selector"]["select"]["options"])


@pytest.mark.parametrize("mode", ["in_process", "child"])
async def test_a_catalog_model_is_downloaded_with_progress_checked_and_added(
    hass: HomeAssistant, client: Any, hub: Hub, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mode == "child":
        pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    hub.add(CATALOG_REPO, CATALOG_FILE, model_bytes(padding_mb=25))
    progress: list[float] = []

    def on_progress(event: Event) -> None:
        progress.append(event.data["progress"])

    hass.bus.async_listen(EVENT_DATA_ENTRY_FLOW_PROGRESS_UPDATE, on_progress)
    library = build_cached("1.2")  # runtime 1.2.3, where a board keeps it
    monkeypatch.setattr("custom_components.rkllm.loader.find_library", lambda: library)
    flow = await to_download_form(client, mode)
    offered = [option["value"] for option in options(flow)]
    labels = {option["value"]: option["label"] for option in options(flow)}
    assert "needs runtime 1.1.x (converted with toolkit 1.1.4); this runtime is 1.2.3" in labels[OLD]
    assert offered.index(CATALOG_ID) < offered.index(OLD)  # what fits comes first
    assert offered[-1] == "other"

    flow = await post(
        client,
        f"{FLOWS}/{flow['flow_id']}",
        {"library_path": str(library), "catalog_model": CATALOG_ID, "max_context_len": 2048},
    )
    assert flow["type"] == "progress"
    assert flow["progress_action"] == "download_model"
    assert flow["description_placeholders"]["model"] == f"{CATALOG_REPO}/{CATALOG_FILE}"
    flow = await follow(client, flow)

    assert flow["type"] == "create_entry", flow
    entry = hass.config_entries.async_entries(DOMAIN)[0]
    folder = Path(hass.config.path("models"))
    assert entry.data[CONF_MODEL_PATH] == str(folder / CATALOG_FILE)
    assert read_records(folder)[CATALOG_FILE]["repo"] == CATALOG_REPO
    assert len(progress) >= 3
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    await hass.async_block_till_done()
    await hass.config_entries.async_unload(entry.entry_id)


async def test_any_file_on_the_hub_can_be_chosen_and_one_for_another_release_is_refused(
    hass: HomeAssistant, client: Any, hub: Hub
) -> None:
    hub.add("someone/old-model-rk3588-1.1.4", "old.rkllm", model_bytes(toolkit_version="1.1.4"))
    flow = await to_download_form(client)
    answer = {"library_path": str(build_cached("1.2")), "catalog_model": "other", "max_context_len": 2048}
    flow = await post(client, f"{FLOWS}/{flow['flow_id']}", answer)
    assert flow["errors"] == {"base": "repo_and_file_required"}

    flow = await post(
        client,
        f"{FLOWS}/{flow['flow_id']}",
        answer | {"repo": "someone/old-model-rk3588-1.1.4", "file": "old.rkllm"},
    )
    flow = await follow(client, flow)

    assert flow["type"] == "form"
    assert flow["step_id"] == "download"
    assert flow["errors"] == {"base": "model_incompatible"}
    assert "needs runtime 1.1.x" in flow["description_placeholders"]["error"]
    assert hass.config_entries.async_entries(DOMAIN) == []


async def test_closing_the_dialog_cancels_the_download(hass: HomeAssistant, client: Any, hub: Hub) -> None:
    hub.add(CATALOG_REPO, CATALOG_FILE, model_bytes(padding_mb=40), delay_s=0.02)
    flow = await to_download_form(client)
    flow = await post(
        client,
        f"{FLOWS}/{flow['flow_id']}",
        {"library_path": str(build_cached("1.2")), "catalog_model": CATALOG_ID, "max_context_len": 2048},
    )
    assert flow["type"] == "progress"
    assert flow["description_placeholders"]["size"] == "1.66 GB"  # the catalog's figure, approximate
    for _ in range(100):  # once the transfer is under way, the hub's figure replaces it
        await asyncio.sleep(0.05)
        response = await client.get(f"{FLOWS}/{flow['flow_id']}")
        if (size := (await response.json())["description_placeholders"]["size"]) != "1.66 GB":
            break
    assert size == "40 MB"

    response = await client.delete(f"{FLOWS}/{flow['flow_id']}")
    assert response.status == HTTPStatus.OK

    folder = Path(hass.config.path("models"))
    for _ in range(200):
        if not await hass.async_add_executor_job(partials, folder):
            break
        await asyncio.sleep(0.05)
    assert await hass.async_add_executor_job(partials, folder) == []
    assert not await hass.async_add_executor_job((folder / CATALOG_FILE).exists)
    assert len(hub.gets(CATALOG_FILE)) == 1
