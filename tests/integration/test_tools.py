"""Tools as the model sees them: plain names mapped back exactly, intent matches that forgive unsaid slots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.components.conversation import chat_log as chat_log_module
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.guidance import tool_guidance
from custom_components.rkllm.schemas import default_conversation_options
from custom_components.rkllm.tools import ToolNames, without_echoed_command
from rkllm_runtime.chat import ChatRequest, ChatStream
from rkllm_runtime.chat.messages import render_tools
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call
from tests.integration.conftest import LIGHT, RULES

AGENT = "conversation.rkllm_conversation"
GARAGE = "light.garage_light"

# The calls of a small model, as recorded with a real one, and what the tests tell it afterwards.
TOOL_RULES = (
    Rule(role="tool", match="Garage Light (light, Garage)", reply=call("HassTurnOn", name="Garage Light")),
    Rule(
        role="user",
        match="turn off the garage light",
        tools=True,
        reply=call(
            "HassTurnOff", name="Garage Light", area="Living Room", floor="Ground Floor", domain=["light"]
        ),
    ),
    Rule(
        role="user",
        match="garage light in the living room",
        tools=True,
        reply=call("HassTurnOn", name="Garage Light", area="Living Room"),
    ),
    Rule(role="user", match="garge", tools=True, reply=call("HassTurnOn", name="Garge light")),
    Rule(
        role="user",
        match="kitchen lamp",
        tools=True,
        reply=call("HassTurnOn", name="Kitchen light", device_class="light"),
    ),
    Rule(
        role="user",
        match="lights in the living room",
        tools=True,
        reply=call("HassTurnOn", area="Living Room", domain=["light"]),
    ),
    Rule(
        role="user",
        match="lights in the attic",
        tools=True,
        reply=call("HassTurnOn", area="Attic", domain="light"),
    ),
    Rule(
        role="user",
        match="lights on the ground floor",
        tools=True,
        reply=call("HassTurnOn", area="Ground Floor", domain="light"),
    ),
    Rule(
        role="user",
        match="switch the kitchen light on",
        tools=True,
        reply=call("intent__HassTurnOn", name="Kitchen light"),
    ),
)


@pytest.fixture
def model_path(make_model: ModelFactory) -> Path:
    return make_model(*TOOL_RULES, *RULES, name="qwen2.5-1.5b-instruct-emulated")


def template_light(name: str, switch: str) -> dict[str, Any]:
    """A light that follows an input boolean."""
    target = {"target": {"entity_id": f"input_boolean.{switch}"}}
    return {
        "name": name,
        "unique_id": switch,
        "state": f"{{{{ is_state('input_boolean.{switch}', 'on') }}}}",
        "turn_on": {"action": "input_boolean.turn_on", **target},
        "turn_off": {"action": "input_boolean.turn_off", **target},
    }


@pytest.fixture
async def kitchen_light(hass: HomeAssistant) -> str:
    """The kitchen light, and a light in the Garage on the Ground Floor; the Living Room is an area too."""
    floor = fr.async_get(hass).async_create("Ground Floor")
    garage = ar.async_get(hass).async_create("Garage", floor_id=floor.floor_id)
    ar.async_get(hass).async_create("Living Room", floor_id=floor.floor_id)
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {"kitchen": {}, "garage": {}}}
    )
    lights = [template_light("Kitchen light", "kitchen"), template_light("Garage Light", "garage")]
    assert await async_setup_component(hass, "template", {"template": [{"light": lights}]})
    await hass.async_block_till_done()
    er.async_get(hass).async_update_entity(GARAGE, area_id=garage.id)
    for light in (LIGHT, GARAGE):
        async_expose_entity(hass, "conversation", light, True)
    return LIGHT


@pytest.fixture
def home(init_integration: MockConfigEntry) -> MockConfigEntry:
    """The integration, with the kitchen and garage lights."""
    return init_integration


async def converse(hass: HomeAssistant, text: str) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, None, Context(), agent_id=AGENT)


def tool_results(hass: HomeAssistant, conversation_id: str) -> list[conversation.ToolResultContent]:
    log = hass.data[chat_log_module.DATA_CHAT_LOGS][conversation_id]
    return [c for c in log.content if isinstance(c, conversation.ToolResultContent)]


# Home Assistant's tool names: 2026.10 prefixes each with its integration, and with its API's
# when several APIs are merged; 2026.11 prefixes a merged API's tools only where two clash.
@pytest.mark.parametrize(
    ("names", "plain"),
    [
        (
            [
                "homeassistant__GetLiveContext",
                "intent__HassTurnOn",
                "light__HassLightSet",
                "llm__GetDateTime",
            ],
            ["GetLiveContext", "HassTurnOn", "HassLightSet", "GetDateTime"],
        ),
        (
            ["assist__intent__HassTurnOn", "assist__llm__GetDateTime", "homeassistant__llm__GetDateTime"],
            ["HassTurnOn", "assist__llm__GetDateTime", "homeassistant__llm__GetDateTime"],
        ),
        (
            [
                "intent__HassTurnOn",
                "assist__llm__GetDateTime",
                "homeassistant__llm__GetDateTime",
                "config__get_config_entries",
            ],
            [
                "HassTurnOn",
                "assist__llm__GetDateTime",
                "homeassistant__llm__GetDateTime",
                "get_config_entries",
            ],
        ),
        (
            ["HassTurnOn", "script__HassTurnOn", "a__b__c", "b__c"],
            ["HassTurnOn", "script__HassTurnOn", "a__b__c", "b__c"],
        ),
        (["GetDateTime", "llm__GetDateTime"], ["GetDateTime", "llm__GetDateTime"]),
    ],
    ids=["2026.10", "2026.10-merged", "2026.11-merged", "clashing-endings", "bare-and-prefixed"],
)
def test_plain_names_are_unique_and_map_back_exactly(names: list[str], plain: list[str]) -> None:
    mapping = ToolNames.of(names)
    assert [mapping.to_plain(name) for name in names] == plain
    assert [mapping.to_hass(short) for short in plain] == names


def test_prompts_mention_the_plain_names() -> None:
    mapping = ToolNames.of(["intent__HassTurnOn", "intent__HassTurnOff", "homeassistant__GetLiveContext"])
    text = "Use intent__HassTurnOn to lock and intent__HassTurnOff to unlock. Not my_intent__HassTurnOnce."
    assert (
        mapping.in_text(text)
        == "Use HassTurnOn to lock and HassTurnOff to unlock. Not my_intent__HassTurnOnce."
    )


async def test_the_model_sees_plain_names_and_its_calls_reach_home_assistants_tools(
    hass: HomeAssistant, home: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = home.runtime_data.engine
    requests: list[ChatRequest] = []
    chat = engine.chat

    def recording(request: ChatRequest) -> ChatStream:
        requests.append(request)
        return chat(request)

    monkeypatch.setattr(engine, "chat", recording)
    result = await converse(hass, "please switch the kitchen light on")  # called as intent__HassTurnOn
    assert hass.states.get(LIGHT).state == "on"
    assert [tool.name for tool in requests[0].tools] == [
        "GetLiveContext", "HassTurnOn", "HassTurnOff", "HassCancelAllTimers", "HassLightSet", "GetDateTime",
    ]  # fmt: skip
    assert "__" not in render_tools(requests[0].tools) + requests[0].system_prompt
    assert "Use HassTurnOn to lock" in requests[0].system_prompt
    assert requests[0].system_prompt.endswith(tool_guidance({tool.name for tool in requests[0].tools}))
    (result_content,) = tool_results(hass, result.conversation_id)
    assert result_content.tool_name == "intent__HassTurnOn"
    assert not result_content.result.error


@pytest.mark.parametrize("conversation_options", [{**default_conversation_options(), "action_speech": False}])
async def test_the_history_quotes_calls_by_their_plain_names(
    hass: HomeAssistant, home: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = home.runtime_data.engine
    requests: list[ChatRequest] = []
    chat = engine.chat

    def recording(request: ChatRequest) -> ChatStream:
        requests.append(request)
        return chat(request)

    monkeypatch.setattr(engine, "chat", recording)
    await converse(hass, "Please turn the kitchen light on")
    assert len(requests) == 2  # the call, then the answer to its result
    call_message, result_message = requests[1].messages[-2:]
    assert [c.name for c in call_message.tool_calls] == ["HassTurnOn"]
    assert result_message.name == "HassTurnOn"


async def test_a_call_with_unsaid_slots_is_retried_without_them(
    hass: HomeAssistant, home: MockConfigEntry
) -> None:
    """The area, floor and domain the model added are dropped; the name alone finds the light."""
    await hass.services.async_call(
        "input_boolean", "turn_on", {"entity_id": "input_boolean.garage"}, blocking=True
    )
    assert hass.states.get(GARAGE).state == "on"
    result = await converse(hass, "turn off the garage light")
    assert hass.states.get(GARAGE).state == "off"
    assert home.runtime_data.engine.stats.requests == 1  # no second run of the model
    assert result.response.speech["plain"]["speech"] == "Turned off the light"
    (result_content,) = tool_results(hass, result.conversation_id)
    assert not result_content.result.error


async def test_a_type_that_is_no_device_class_is_dropped_when_the_name_is_enough(
    hass: HomeAssistant, home: MockConfigEntry
) -> None:
    """The schema lists no device classes; a made-up one costs no second run of the model."""
    result = await converse(hass, "turn on the kitchen lamp")
    assert hass.states.get(LIGHT).state == "on"
    (result_content,) = tool_results(hass, result.conversation_id)
    assert not result_content.result.error
    assert home.runtime_data.engine.stats.requests == 1


async def test_a_floor_given_as_the_area_is_tried_as_the_floor(
    hass: HomeAssistant, home: MockConfigEntry
) -> None:
    """Small models put every place in "area"; the Ground Floor is a floor."""
    result = await converse(hass, "turn on the lights on the ground floor")
    assert hass.states.get(GARAGE).state == "on"
    (result_content,) = tool_results(hass, result.conversation_id)
    assert not result_content.result.error
    assert home.runtime_data.engine.stats.requests == 1


async def test_a_slot_the_user_said_is_kept(hass: HomeAssistant, home: MockConfigEntry) -> None:
    """The user said the Living Room: no second try without it; the model is told where the light is."""
    result = await converse(hass, "turn on the garage light in the living room")
    first, second = tool_results(hass, result.conversation_id)
    assert first.result.error
    assert dict(first.result.data)["did_you_mean"] == ["Garage Light (light, Garage)"]
    assert not second.result.error  # the model's own second call, by the name alone


async def test_a_failure_names_what_would_work(hass: HomeAssistant, home: MockConfigEntry) -> None:
    """A name that does not exist: the result names the close one, and the model's next call works."""
    result = await converse(hass, "turn on the garge light")
    first, second = tool_results(hass, result.conversation_id)
    assert first.result.error
    assert dict(first.result.data) == {
        "error": "No entities matched the name (given name 'Garge light')",
        "did_you_mean": ["Garage Light (light, Garage)"],
    }
    assert not second.result.error
    assert hass.states.get(GARAGE).state == "on"


@pytest.mark.parametrize(
    ("text", "told"),
    [
        (
            "turn on the lights in the living room",
            {
                "error": "No entities were in the area (given area 'Living Room', domains light)",
                "did_you_mean": ["Kitchen light (light)", "Garage Light (light, Garage)"],
            },
        ),
        (
            "turn on the lights in the attic",
            {
                "error": "The area does not exist (given area 'Attic', domains light)",
                "did_you_mean": ["Kitchen light (light)", "Garage Light (light, Garage)"],
                "areas": ["Garage", "Living Room"],
            },
        ),
    ],
    ids=["empty-area", "unknown-area"],
)
async def test_a_failure_in_an_area_names_the_entities_of_the_type_asked_for(
    hass: HomeAssistant, home: MockConfigEntry, text: str, told: dict[str, Any]
) -> None:
    result = await converse(hass, text)
    first = tool_results(hass, result.conversation_id)[0]
    assert first.result.error
    assert dict(first.result.data) == told


@pytest.mark.parametrize(
    ("command", "kept"),
    [
        ("Set a timer for 5 minutes", False),  # the request itself: it would start the timer again
        ("start timer", False),  # words the user did not say
        ("turn off the oven", True),
        ("Turn off the OVEN.", True),
        (None, False),
    ],
)
def test_a_timers_command_is_kept_only_when_the_user_said_it_for_later(
    command: str | None, kept: bool
) -> None:
    said = "Set a timer for 5 minutes and then turn off the oven"
    slots = {"minutes": 5} | ({"conversation_command": command} if command else {})
    if command == "Set a timer for 5 minutes":
        said = command
    assert ("conversation_command" in without_echoed_command(slots, said)) is kept
    assert without_echoed_command(slots, said)["minutes"] == 5
