"""Done actions confirmed in Home Assistant's words, for intents whose response is not its ``default`` one."""

from __future__ import annotations

from pathlib import Path

import pytest
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call
from tests.integration.conftest import LIGHT, RULES

AGENT = "conversation.rkllm_conversation"
RULES_HERE = (
    Rule(
        role="user", match="dim", tools=True, reply=call("HassLightSet", name="Kitchen light", brightness=40)
    ),
    Rule(
        role="user",
        match="add milk",
        tools=True,
        reply=call("HassListAddItem", item="milk", name="Shopping List"),
    ),
)


@pytest.fixture
def model_path(make_model: ModelFactory) -> Path:
    return make_model(*RULES_HERE, *RULES, name="qwen2.5-1.5b-instruct-emulated")


@pytest.fixture
async def kitchen_light(hass: HomeAssistant) -> str:
    """A real (template) dimmable light, exposed to Assist, and Home Assistant's shopping list."""
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": {"kitchen": {}}})
    level = {"min": 0, "max": 255, "initial": 255}
    assert await async_setup_component(hass, "input_number", {"input_number": {"kitchen_level": level}})
    target = {"target": {"entity_id": "input_boolean.kitchen"}}
    light = {
        "name": "Kitchen light",
        "state": "{{ is_state('input_boolean.kitchen', 'on') }}",
        "level": "{{ states('input_number.kitchen_level') | int }}",
        "turn_on": {"action": "input_boolean.turn_on", **target},
        "turn_off": {"action": "input_boolean.turn_off", **target},
        "set_level": {
            "action": "input_number.set_value",
            "target": {"entity_id": "input_number.kitchen_level"},
            "data": {"value": "{{ brightness }}"},
        },
    }
    assert await async_setup_component(hass, "template", {"template": [{"light": [light]}]})
    shopping = MockConfigEntry(domain="shopping_list")
    shopping.add_to_hass(hass)
    assert await hass.config_entries.async_setup(shopping.entry_id)
    await hass.async_block_till_done()
    async_expose_entity(hass, "conversation", LIGHT, True)
    async_expose_entity(hass, "conversation", "todo.shopping_list", True)
    return LIGHT


@pytest.mark.parametrize(
    ("text", "language", "speech"),
    [
        ("dim the kitchen light to 40", "en", "Brightness set"),
        ("dim the kitchen light to 40", "de", "Helligkeit eingestellt"),
        ("add milk to my shopping list", "en", "Added milk"),
        ("add milk to my shopping list", "de", "milk hinzugefügt"),
    ],
)
async def test_setting_and_adding_are_confirmed_in_home_assistants_words(
    hass: HomeAssistant, init_integration: MockConfigEntry, text: str, language: str, speech: str
) -> None:
    """HassLightSet answers by the slot it set, HassListAddItem by its one response: no second run."""
    engine = init_integration.runtime_data.engine
    result = await conversation.async_converse(hass, text, None, Context(), language=language, agent_id=AGENT)
    assert result.response.speech["plain"]["speech"] == speech
    assert engine.stats.requests == 1
    if "dim" in text:
        assert float(hass.states.get("input_number.kitchen_level").state) == 102  # type: ignore[union-attr]
    else:
        items = await hass.services.async_call(
            "todo",
            "get_items",
            target={"entity_id": "todo.shopping_list"},
            blocking=True,
            return_response=True,
        )
        assert [item["summary"] for item in items["todo.shopping_list"]["items"]] == ["Milk"]  # type: ignore[index,call-overload]
