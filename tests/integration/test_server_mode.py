"""The model on an rkllm-server: setting it up, losing it, a refused key, discovery."""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from homeassistant.components import conversation
from homeassistant.config_entries import SOURCE_USER, SOURCE_ZEROCONF, ConfigEntryState
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL, STATE_UNAVAILABLE
from homeassistant.core import Context, HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import intent
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import CONF_MODE, DOMAIN, MODE_SERVER
from rkllm_runtime.chat import EngineState
from tests.integration.conftest import SERVER_KEY, SERVER_MODEL, until
from tests.server.conftest import RunningServer, launch

AGENT = "conversation.rkllm_conversation"
UNAVAILABLE = "The model is not available right now"
ANSWERED_WITHIN_S = 60  # a guard: without an end, an answer would hang the test
pytestmark = pytest.mark.parametrize("mode", [MODE_SERVER], indirect=True)


@pytest.fixture(autouse=True)
def quick_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("custom_components.rkllm.supervision.RECONNECT_S", (0.2,))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def converse(hass: HomeAssistant, text: str) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, None, Context(), agent_id=AGENT)


async def test_unreachable_server_at_setup_is_retried(
    hass: HomeAssistant, config_entry: MockConfigEntry, entry_data: dict[str, Any]
) -> None:
    hass.config_entries.async_update_entry(
        config_entry, data={**entry_data, CONF_URL: f"http://127.0.0.1:{free_port()}"}
    )
    await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_RETRY
    assert config_entry.error_reason_translation_key == "server_unavailable"
    assert "cannot be reached" in (config_entry.reason or "")


async def test_a_lost_server_is_unavailable_until_it_returns(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    rkllm_server: RunningServer,
    *,
    emulator_library: Path,
    model_path: Path,
    tmp_path: Path,
) -> None:
    engine = init_integration.runtime_data.engine
    result = await converse(hass, "please crash now")  # the server dies mid-answer
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert "The model is not available right now" in result.response.speech["plain"]["speech"]
    await hass.async_block_till_done()
    assert hass.states.get(AGENT).state == STATE_UNAVAILABLE
    assert hass.states.get("sensor.qwen_model_state").state == STATE_UNAVAILABLE
    assert rkllm_server.process.wait(30) != 0
    port = urlparse(rkllm_server.url).port
    returned = await hass.async_add_executor_job(
        lambda: launch(
            emulator_library,
            {SERVER_MODEL: model_path},
            ["--port", str(port)],
            tmp_path / "returned.log",
            env={"RKLLM_SERVER_API_KEY": SERVER_KEY},
        )
    )
    try:
        await until(lambda: engine.available)
        await hass.async_block_till_done()
        assert hass.states.get(AGENT).state != STATE_UNAVAILABLE
        again = await converse(hass, "hello there")
        assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"
    finally:
        returned.stop()
        returned.close()


async def test_a_request_while_the_server_is_away_asks_it_at_once(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    rkllm_server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    emulator_library: Path,
    model_path: Path,
    tmp_path: Path,
) -> None:
    """The server is back before the next status check: the next request finds it."""
    monkeypatch.setattr("custom_components.rkllm.supervision.RECONNECT_S", (3600.0,))
    engine = init_integration.runtime_data.engine
    await converse(hass, "please crash now")
    assert rkllm_server.process.wait(30) != 0
    await until(lambda: not engine.available)
    returned = await hass.async_add_executor_job(
        lambda: launch(
            emulator_library,
            {SERVER_MODEL: model_path},
            ["--port", str(urlparse(rkllm_server.url).port)],
            tmp_path / "returned.log",
            env={"RKLLM_SERVER_API_KEY": SERVER_KEY},
        )
    )
    try:
        again = await converse(hass, "hello there")
        assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"
        assert engine.available
    finally:
        returned.stop()
        returned.close()


@pytest.fixture
def slow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server, started after this, decodes at 200 tokens/s."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")


async def test_a_server_stopped_mid_answer_is_said_so(
    hass: HomeAssistant, slow_server: None, init_integration: MockConfigEntry, rkllm_server: RunningServer
) -> None:
    engine = init_integration.runtime_data.engine
    story = hass.async_create_task(converse(hass, "tell me a story"))
    await until(lambda: engine.state is EngineState.GENERATING)
    assert await hass.async_add_executor_job(rkllm_server.stop) == 0  # SIGTERM, as systemd stops it
    result = await story
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert result.response.speech["plain"]["speech"] == (
        "The model's server was stopped while it answered. Try again once it is back"
    )


@contextmanager
def paused(server: RunningServer) -> Iterator[None]:
    """The server's process stopped (SIGSTOP), as a board cut off: no close, no reset."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


async def answered[T](awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(ANSWERED_WITHIN_S):
        return await awaitable


@pytest.fixture
def no_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch does not read the status while the server is there (set before the entry starts)."""
    monkeypatch.setattr("custom_components.rkllm.supervision.STATUS_INTERVAL_S", 3600.0)


@pytest.fixture
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch reads the status every 0.2 s and gives up after 1 s (set before the entry starts)."""
    monkeypatch.setattr("custom_components.rkllm.supervision.STATUS_INTERVAL_S", 0.2)
    monkeypatch.setattr("rkllm_runtime.remote.client.STATUS_TIMEOUT_S", 1.0)


@pytest.mark.usefixtures("slow_server", "no_polls")
async def test_a_server_gone_silent_ends_the_answer_and_comes_back(
    hass: HomeAssistant,
    monkeypatch: pytest.MonkeyPatch,
    init_integration: MockConfigEntry,
    rkllm_server: RunningServer,
    model_path: Path,
) -> None:
    """Silent longer than any prefill: the answer ends in words, and so does the next request at once."""
    monkeypatch.setattr("rkllm_runtime.remote.client.STATUS_TIMEOUT_S", 3600.0)  # a read that never ends
    monkeypatch.setattr("rkllm_runtime.remote.silence.SILENCE_FLOOR_S", 2.0)  # the emulator's file is tiny
    engine = init_integration.runtime_data.engine
    size = await hass.async_add_executor_job(lambda: model_path.stat().st_size)
    assert engine.status.model_bytes == size  # what the bound is derived from
    assert engine.longest_silence_s == 2.0
    story = hass.async_create_task(converse(hass, "tell me a story"))
    await until(lambda: engine.state is EngineState.GENERATING)
    with paused(rkllm_server):
        result = await answered(story)
        assert result.response.response_type is intent.IntentResponseType.ERROR
        assert UNAVAILABLE in result.response.speech["plain"]["speech"]
        await hass.async_block_till_done()
        assert hass.states.get(AGENT).state == STATE_UNAVAILABLE
        hello = await answered(converse(hass, "hello"))  # away: asked briefly, not for the full timeout
        assert UNAVAILABLE in hello.response.speech["plain"]["speech"]
    await until(lambda: engine.available)  # the watch asks again within a pause, no request needed
    await hass.async_block_till_done()
    assert hass.states.get(AGENT).state != STATE_UNAVAILABLE
    again = await converse(hass, "hello there")
    assert again.response.speech["plain"]["speech"] == "Hello! How can I help?"


@pytest.mark.usefixtures("slow_server", "quick_polls")
async def test_requests_under_way_end_when_the_server_is_found_away(
    hass: HomeAssistant,
    monkeypatch: pytest.MonkeyPatch,
    init_integration: MockConfigEntry,
    rkllm_server: RunningServer,
) -> None:
    """The answer and the request waiting behind it end as soon as a status read finds the server gone."""
    monkeypatch.setattr("rkllm_runtime.remote.silence.SILENCE_FLOOR_S", 3600.0)  # only the watch can tell
    engine = init_integration.runtime_data.engine
    story = hass.async_create_task(converse(hass, "tell me a story"))
    await until(lambda: engine.state is EngineState.GENERATING)
    hello = hass.async_create_task(converse(hass, "hello"))

    def waiting() -> int:
        status = rkllm_server.http("GET", "/rkllm/status").json()
        return int(status["models"][SERVER_MODEL]["waiting"])

    async with asyncio.timeout(10):
        while await hass.async_add_executor_job(waiting) != 1:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.01)
    with paused(rkllm_server):
        results = [await answered(story), await answered(hello)]
        assert [UNAVAILABLE in r.response.speech["plain"]["speech"] for r in results] == [True, True]
        assert not engine.available


async def test_a_refused_key_starts_reauthentication(
    hass: HomeAssistant, config_entry: MockConfigEntry, entry_data: dict[str, Any]
) -> None:
    hass.config_entries.async_update_entry(config_entry, data={**entry_data, CONF_API_KEY: "wrong"})
    await hass.config_entries.async_setup(config_entry.entry_id)
    assert config_entry.state is ConfigEntryState.SETUP_ERROR
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["step_id"] for flow in flows] == ["reauth_confirm"]
    result = await hass.config_entries.flow.async_configure(
        flows[0]["flow_id"], {CONF_API_KEY: "still wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"], {CONF_API_KEY: SERVER_KEY})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert config_entry.data[CONF_API_KEY] == SERVER_KEY
    assert config_entry.state is ConfigEntryState.LOADED


async def test_a_key_changed_on_the_running_server_starts_reauthentication(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    engine = init_integration.runtime_data.engine
    engine.connect_to(init_integration.data[CONF_URL], "revoked")  # as if the server's key changed
    result = await converse(hass, "hello there")
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert "did not accept the API key" in result.response.speech["plain"]["speech"]
    assert not engine.available
    # The watch reads the status again at once, not at its next poll 30 s later.
    await until(lambda: bool(hass.config_entries.flow.async_progress_by_handler(DOMAIN)))
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert flows[0]["context"]["source"] == "reauth"


async def server_flow(hass: HomeAssistant, url: str, key: str) -> dict[str, Any]:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await hass.config_entries.flow.async_configure(result["flow_id"], {"next_step_id": MODE_SERVER})
    assert result["step_id"] == MODE_SERVER
    return dict(
        await hass.config_entries.flow.async_configure(result["flow_id"], {CONF_URL: url, CONF_API_KEY: key})
    )


async def test_flow_adds_a_server_model(hass: HomeAssistant, mode: str, rkllm_server: RunningServer) -> None:
    result = await server_flow(hass, rkllm_server.url + "/", SERVER_KEY)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {
        CONF_MODE: MODE_SERVER,
        CONF_URL: rkllm_server.url,
        CONF_API_KEY: SERVER_KEY,
        CONF_MODEL: SERVER_MODEL,
    }
    assert result["result"].unique_id == f"{rkllm_server.url}/{SERVER_MODEL}"
    await hass.async_block_till_done()
    assert result["result"].state is ConfigEntryState.LOADED
    answer = await converse(hass, "hello there")
    assert answer.response.speech["plain"]["speech"] == "Hello! How can I help?"
    assert await hass.config_entries.async_unload(result["result"].entry_id)


@pytest.mark.parametrize(
    ("url", "key", "error"),
    [("server", "wrong", "invalid_auth"), ("free", SERVER_KEY, "cannot_connect")],
)
async def test_flow_names_what_is_wrong(
    hass: HomeAssistant, mode: str, rkllm_server: RunningServer, *, url: str, key: str, error: str
) -> None:
    address = rkllm_server.url if url == "server" else f"http://127.0.0.1:{free_port()}"
    result = await server_flow(hass, address, key)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}


async def test_discovered_server_offers_its_models(
    hass: HomeAssistant, mode: str, rkllm_server: RunningServer
) -> None:
    address = urlparse(rkllm_server.url)
    assert address.hostname is not None
    assert address.port is not None
    info = ZeroconfServiceInfo(
        ip_address=ip_address(address.hostname),
        ip_addresses=[ip_address(address.hostname)],
        hostname="board.local.",
        name="board._rkllm._tcp.local.",
        port=address.port,
        type="_rkllm._tcp.local.",
        properties={"models": SERVER_MODEL, "auth": "bearer", "tls": "0"},
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == MODE_SERVER
    flow = hass.config_entries.flow.async_get(result["flow_id"])
    assert flow["context"]["title_placeholders"] == {"name": "board", "models": SERVER_MODEL}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: rkllm_server.url, CONF_API_KEY: SERVER_KEY}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    again = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info)
    assert again["type"] is FlowResultType.ABORT  # the server has an entry already
    assert await hass.config_entries.async_unload(result["result"].entry_id)


async def test_reconfigure_changes_the_key_in_place(
    hass: HomeAssistant, init_integration: MockConfigEntry, rkllm_server: RunningServer
) -> None:
    result = await init_integration.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: rkllm_server.url, CONF_API_KEY: "wrong"}
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_URL: rkllm_server.url, CONF_API_KEY: SERVER_KEY}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert len(hass.config_entries.async_entries(DOMAIN)) == 1
    assert init_integration.state is ConfigEntryState.LOADED
