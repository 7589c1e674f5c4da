"""Home Assistant's prompt, tool schemas and tool results made lean: real shapes."""

from __future__ import annotations

import pytest
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component

from custom_components.rkllm.prompt import compact_entities, lean_prompt, lean_tool_result, tool_schema

STATIC = (
    "Static Context: An overview of the areas and the devices in this smart home:\n"
    "- names: Kitchen light\n  domain: light\n  areas: Kitchen\n"
    "- names: ''\n  domain: input_boolean\n"
    "\nWhen controlling Home Assistant always call the intent tools."
)
LIVE = (
    "Live Context: An overview of the areas and the devices in this smart home:\n"
    "- names: Kitchen temperature\n  domain: sensor\n  state: '21'\n"
    "  attributes:\n    unit_of_measurement: °C\n    device_class: temperature\n"
)


def test_entities_become_one_line_each() -> None:
    assert compact_entities(STATIC) == (
        "Static Context: An overview of the areas and the devices in this smart home:\n"
        "- Kitchen light (light, areas: Kitchen)\n"
        "- (input_boolean)\n"
        "\nWhen controlling Home Assistant always call the intent tools."
    )
    assert compact_entities(LIVE).endswith(
        "- Kitchen temperature (sensor): 21; unit_of_measurement: °C, device_class: temperature\n"
    )


def test_text_without_entities_is_unchanged() -> None:
    text = "Answer briefly.\n- a list: that is not\n  about devices"
    assert compact_entities(text) == text


def test_the_date_and_time_leave_the_cached_prompt() -> None:
    prompt = "Be brief.\nCurrent time is 09:41:07. Today's date is 2026-12-03.\nExtra instructions."
    assert lean_prompt(prompt) == (
        "Be brief.\nExtra instructions.",
        "Current time is 09:41:07. Today's date is 2026-12-03.",
    )


@pytest.mark.parametrize(
    ("data", "error", "lean"),
    [
        (
            {
                "speech": {},
                "response_type": "action_done",
                "data": {
                    "success": [{"name": "Kitchen light", "type": "entity", "id": "light.kitchen_light"}],
                    "failed": [],
                },
            },
            False,
            '{"success":["Kitchen light"]}',
        ),
        (
            {"speech": {}, "response_type": "error", "data": {"code": "no_valid_targets"}},
            False,
            '{"error":"no_valid_targets"}',
        ),
        (
            {
                "speech": {"plain": {"speech": "21 °C", "extra_data": None}},
                "response_type": "query_answer",
                "data": {"success": [{"name": "Kitchen", "type": "area", "id": "kitchen"}], "failed": []},
            },
            False,
            '{"success":["Kitchen"],"speech":"21 °C"}',
        ),
        ({"result": LIVE}, False, compact_entities(LIVE)),
        ({"error": "Unknown", "error_text": "", "details": None}, True, '{"error":"Unknown"}'),
    ],
    ids=["action", "intent-error", "query", "live-context", "tool-error"],
)
def test_tool_results_keep_only_what_the_model_needs(data: dict, error: bool, lean: str) -> None:
    assert lean_tool_result(llm.ToolResult(data=data, error=error)) == lean


async def test_tool_schemas_keep_names_types_and_what_the_tool_does_not_say(
    hass: HomeAssistant, kitchen_light: str
) -> None:
    """Home Assistant's own tools: single values for lists, no long enums, no descriptions said twice."""
    script = {
        "description": "Waters the garden",
        "fields": {
            "minutes": {"description": "How long to water", "required": True, "selector": {"number": {}}}
        },
        "sequence": [],
    }
    assert await async_setup_component(hass, "script", {"script": {"water": script}})
    assert await async_setup_component(hass, "conversation", {})
    async_expose_entity(hass, "conversation", "script.water", True)
    context = llm.LLMContext(
        platform="rkllm", context=None, language="en", assistant="conversation", device_id=None
    )
    api = await llm.async_get_api(hass, "assist", context)
    schemas = {tool.name: tool_schema(tool, api.custom_serializer) for tool in api.tools}
    place = {"name": {"type": "string"}, "area": {"type": "string"}, "floor": {"type": "string"}}
    assert schemas["intent__HassTurnOn"]["properties"] == {
        **place, "domain": {"type": "string"}, "device_class": {"type": "string"},
    }  # fmt: skip
    assert schemas["light__HassLightSet"]["properties"] == {
        **place,
        "domain": {"type": "string", "enum": ["light"]},
        "color": {"type": "string"},
        "temperature": {"type": "integer", "minimum": 0},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
    }
    assert schemas["homeassistant__GetLiveContext"]["properties"] == {
        "name": {"type": "string"}, "domain": {"type": "string"}, "area": {"type": "string"},
    }  # fmt: skip
    assert schemas["script__water"]["properties"] == {
        "minutes": {"type": "number", "description": "How long to water"}
    }
    assert schemas["script__water"]["required"] == ["minutes"]
