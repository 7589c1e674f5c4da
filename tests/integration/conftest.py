"""Fixtures for tests that run the integration in a real Home Assistant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import PropertyMock, patch

import pytest
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity import Entity
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.config_flow import default_ai_task_options, default_conversation_options
from custom_components.rkllm.const import (
    CONF_ADVANCED,
    CONF_LIBRARY_PATH,
    CONF_MAX_CONTEXT_LEN,
    CONF_MODEL_PATH,
    DOMAIN,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call

LIGHT = "light.kitchen_light"


# What the emulated model answers in these tests. A rule matches anywhere in the input, which
# carries the earlier turns when a conversation is re-sent: later steps of an exchange come first.
RULES = (
    Rule(role="user", match="kitchen light on", tools=True, reply=call("HassTurnOn", name="Kitchen light")),
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
def entry_data(request: pytest.FixtureRequest, emulator_library: Path, model_path: Path) -> dict[str, Any]:
    """The model entry; indirect parameters are its advanced settings."""
    return {
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
        unique_id=entry_data[CONF_MODEL_PATH],
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
