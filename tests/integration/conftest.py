"""Fixtures for tests that run the integration in a real Home Assistant."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
import pytest_socket
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_API_KEY, CONF_MODEL, CONF_URL
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity import Entity
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import (
    CONF_ADVANCED,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODE,
    CONF_MODEL_PATH,
    DOMAIN,
    MODE_IN_PROCESS,
    MODE_SERVER,
    MODES,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from custom_components.rkllm.schemas import default_ai_task_options, default_conversation_options
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call
from tests.server.conftest import RunningServer, launch

STRINGS = json.loads((Path(__file__).parents[2] / "custom_components/rkllm/strings.json").read_text())
"""The integration's English strings."""

LIGHT = "light.kitchen_light"
SERVER_MODEL = "qwen2.5:1.5b"
SERVER_KEY = "a-key-for-the-tests"

# Tests of behaviour every mode shares run in each: the model in Home Assistant, in its own
# process (an rkllm-server child the integration starts), and on an rkllm-server.
IN_EVERY_MODE = pytest.mark.parametrize("mode", MODES, indirect=True)


# What the emulated model answers in these tests. A rule matches anywhere in the input, which
# carries the earlier turns when a conversation is re-sent: later steps of an exchange come first.
WRITTEN_CALL = (
    "Sure, here is the call:\n```json\n"
    '{"name": "intent__HassTurnOn", "arguments": {"name": "Kitchen light"}}\n```\n'
    "This turns on the kitchen light."
)
RULES = (
    Rule(
        role="user",
        match="light on right now",
        tools=True,
        reply=call("GetLiveContext", name="Kitchen light"),
    ),
    Rule(role="user", match="kitchen light on", tools=True, reply=call("HassTurnOn", name="Kitchen light")),
    # A small model's call written as text: a line of lead, a fenced call, an explanation.
    Rule(role="user", match="turn on the kitchen light", tools=True, reply=WRITTEN_CALL),
    Rule(role="tool", match="live context", reply="It is off."),
    Rule(
        role="user",
        match="garden",
        tools=True,
        reply='<tool_call>\n{"name": HassTurnOn, arguments}\n</tool_call>',
    ),
    Rule(role="tool", match="success", reply="The kitchen light is on."),
    Rule(role="tool", match="malformedtoolcall", reply=call("HassTurnOn", name="Kitchen light")),
    Rule(match="weather", think="The user asks about the weather.", reply="It is sunny."),
    Rule(match="story", reply="Once upon a time " + "there was a light. " * 200),
    Rule(match="not valid", reply='{"items": ["milk", "bread"]}'),
    Rule(match="shopping list", reply='{"items": ["milk", "bread"]'),
    Rule(match="fail", reply="I was about to", error_after=3),
    Rule(match="crash now", crash=True),
    Rule(reply="Hello! How can I help?"),
)


@pytest.fixture(autouse=True)
async def setup_core(hass: HomeAssistant, enable_custom_integrations: None, tmp_path: Path) -> None:
    """Load custom_components/rkllm, with Home Assistant's core component, in every test.

    Each test gets its own configuration directory (prompt-cache files are written there).
    """
    hass.config.config_dir = str(tmp_path / "config")
    assert await async_setup_component(hass, "homeassistant", {})


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Create the entities that are disabled by default enabled (as HA core's own fixture does)."""
    with patch.object(
        Entity, "entity_registry_enabled_default", new_callable=PropertyMock, return_value=True
    ):
        yield


@pytest.fixture
def model_path(make_model: ModelFactory) -> Path:
    return make_model(*RULES, name="qwen2.5-1.5b-instruct-emulated")


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> str:
    """Where the model runs (in Home Assistant unless a test is parametrized over the modes)."""
    mode: str = getattr(request, "param", MODE_IN_PROCESS)
    if mode != MODE_IN_PROCESS:
        # Home Assistant talks to rkllm-server over loopback; nothing else is reachable.
        pytest_socket.enable_socket()
        pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)
    return mode


@pytest.fixture
def rkllm_server(emulator_library: Path, model_path: Path, tmp_path: Path) -> Iterator[RunningServer]:
    """An rkllm-server process with the test model, behind an API key."""
    server = launch(
        emulator_library,
        {SERVER_MODEL: model_path},
        ["--prompt-cache-dir", str(tmp_path / "server_caches")],
        tmp_path / "rkllm-server.log",
        env={"RKLLM_SERVER_API_KEY": SERVER_KEY},
        api_key=SERVER_KEY,
    )
    yield server
    server.stop()
    server.close()


@pytest.fixture
def entry_data(
    request: pytest.FixtureRequest, mode: str, emulator_library: Path, model_path: Path
) -> dict[str, Any]:
    """The model entry; indirect parameters are its advanced settings."""
    if mode == MODE_SERVER:
        server: RunningServer = request.getfixturevalue("rkllm_server")
        return {CONF_MODE: mode, CONF_URL: server.url, CONF_API_KEY: SERVER_KEY, CONF_MODEL: SERVER_MODEL}
    return {
        CONF_MODE: mode,
        CONF_LIBRARY_PATH: str(emulator_library),
        CONF_MODEL_PATH: str(model_path),
        CONF_MAX_CONTEXT_LEN: 4096,
        CONF_ADVANCED: getattr(request, "param", {}),
    }


@pytest.fixture
def conversation_options() -> dict[str, Any]:
    return default_conversation_options()


@pytest.fixture
def config_entry(
    hass: HomeAssistant, entry_data: dict[str, Any], conversation_options: dict[str, Any]
) -> MockConfigEntry:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="qwen",
        data=entry_data,
        minor_version=2,
        unique_id=entry_data.get(CONF_MODEL_PATH) or f"{entry_data[CONF_URL]}/{entry_data[CONF_MODEL]}",
        subentries_data=[
            {
                "data": conversation_options,
                "subentry_type": SUBENTRY_CONVERSATION,
                "title": "RKLLM conversation",
                "unique_id": None,
            },
            {
                "data": default_ai_task_options(),
                "subentry_type": SUBENTRY_AI_TASK,
                "title": "RKLLM AI task",
                "unique_id": None,
            },
        ],
    )
    entry.add_to_hass(hass)
    return entry


@pytest.fixture
async def kitchen_light(hass: HomeAssistant) -> str:
    """A real (template) light, exposed to Assist."""
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": {"kitchen": {}}})
    target = {"target": {"entity_id": "input_boolean.kitchen"}}
    light = {
        "name": "Kitchen light",
        "state": "{{ is_state('input_boolean.kitchen', 'on') }}",
        "turn_on": {"action": "input_boolean.turn_on", **target},
        "turn_off": {"action": "input_boolean.turn_off", **target},
    }
    assert await async_setup_component(hass, "template", {"template": [{"light": [light]}]})
    await hass.async_block_till_done()
    async_expose_entity(hass, "conversation", LIGHT, True)
    return LIGHT


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, config_entry: MockConfigEntry, kitchen_light: str
) -> AsyncIterator[MockConfigEntry]:
    """The integration set up with its default agent and AI task; unloaded afterwards."""
    assert await async_setup_component(hass, "conversation", {})
    assert await hass.config_entries.async_setup(config_entry.entry_id)
    await hass.async_block_till_done()
    assert config_entry.state is ConfigEntryState.LOADED
    yield config_entry
    if config_entry.state is ConfigEntryState.LOADED:
        assert await hass.config_entries.async_unload(config_entry.entry_id)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (it is state of other threads: polled, bounded)."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - no event to wait on across threads
            await asyncio.sleep(0.01)
