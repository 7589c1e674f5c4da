"""Every turn ends in words: whatever the model does after a failed call, the user hears what happened."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from homeassistant.components import conversation
from homeassistant.components.conversation import trace
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import translation
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.rkllm.const import MAX_TOOL_ITERATIONS
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call
from tests.integration.conftest import LIGHT, RULES, STRINGS

AGENT = "conversation.rkllm_conversation"
PORCH = ("light.porch_light", "switch.porch_switch")


def message(key: str) -> str:
    return str(STRINGS["exceptions"][key]["message"])


def calls_forever() -> list[Rule]:
    """A new guess after every failure: porch lamp 1, 2, 3, … (later steps first)."""
    return [
        Rule(role="tool", match=f'Porch lamp {n}"', reply=call("HassTurnOn", name=f"Porch lamp {n + 1}"))
        for n in range(MAX_TOOL_ITERATIONS + 1, 0, -1)
    ]


# Three ways to ask for the porch light, which is not exposed; after the failed call the model
# calls again (the same call), keeps guessing, or says nothing.
PORCH_RULES = (
    *calls_forever(),
    Rule(role="tool", match='"light.porch_light"', reply=call("HassTurnOn", name="Porch lamp 1")),
    Rule(role="tool", match='"domain":["switch"]', reply=""),
    Rule(role="tool", match="Porch light", reply=call("HassTurnOn", name="Porch light")),
    Rule(role="user", match="porch light by name", tools=True, reply=call("HassTurnOn", name="Porch light")),
    Rule(
        role="user",
        match="light.turn_on service",
        tools=True,
        reply=call("HassTurnOn", name="light.porch_light"),
    ),
    Rule(role="user", match="every switch", tools=True, reply=call("HassTurnOn", domain=["switch"])),
    Rule(role="user", match="silence", tools=True, reply=""),
)


@pytest.fixture
def model_path(make_model: ModelFactory) -> Path:
    return make_model(*PORCH_RULES, *RULES, name="qwen2.5-1.5b-instruct-emulated")


@pytest.fixture
async def kitchen_light(hass: HomeAssistant) -> str:
    """The exposed kitchen light; a porch light and switch that are not exposed (real template entities)."""
    helpers = {name: {} for name in ("kitchen", "porch", "porch_switch")}
    assert await async_setup_component(hass, "input_boolean", {"input_boolean": helpers})

    def entity(name: str, helper: str) -> dict[str, Any]:
        target = {"target": {"entity_id": f"input_boolean.{helper}"}}
        return {
            "name": name,
            "state": f"{{{{ is_state('input_boolean.{helper}', 'on') }}}}",
            "turn_on": {"action": "input_boolean.turn_on", **target},
            "turn_off": {"action": "input_boolean.turn_off", **target},
        }

    lights = [entity("Kitchen light", "kitchen"), entity("Porch light", "porch")]
    switches = [entity("Porch switch", "porch_switch")]
    assert await async_setup_component(
        hass, "template", {"template": [{"light": lights, "switch": switches}]}
    )
    await hass.async_block_till_done()
    async_expose_entity(hass, "conversation", LIGHT, True)
    for hidden in PORCH:
        async_expose_entity(hass, "conversation", hidden, False)
    return LIGHT


async def converse(
    hass: HomeAssistant, text: str, language: str | None = None
) -> conversation.ConversationResult:
    return await conversation.async_converse(hass, text, None, Context(), language=language, agent_id=AGENT)


def rounds_traced() -> list[dict]:
    events = trace.async_get_traces()[-1].as_dict()["events"]
    return [
        event["data"]["tool_rounds"]
        for event in events
        if event["event_type"] == trace.ConversationTraceEventType.AGENT_DETAIL
        and "tool_rounds" in event["data"]
    ]


EXPOSED_TO_NONE = "No matching entities are exposed to the assistant"


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        (
            "turn on the porch light by name",
            (2, "repeated_call", f"{EXPOSED_TO_NONE} (given name 'Porch light')"),
        ),
        (
            "use the light.turn_on service on the porch",
            (
                MAX_TOOL_ITERATIONS,
                "out_of_rounds",
                "No entities matched the name (given name 'Porch lamp 9')",
            ),
        ),
        ("turn on every switch on the porch", (2, "no_words", f"{EXPOSED_TO_NONE} (given domains switch)")),
    ],
    ids=["by name, the same call again", "through a service, calls forever", "by domain, then nothing"],
)
async def test_a_turn_that_fails_its_calls_ends_in_words(
    hass: HomeAssistant,
    init_integration: MockConfigEntry,
    caplog: pytest.LogCaptureFixture,
    text: str,
    outcome: tuple[int, str, str],
) -> None:
    """The user hears what the last failed call reported; the rounds are in the trace and the log."""
    engine_runs, ending, reported = outcome
    engine = init_integration.runtime_data.engine
    result = await converse(hass, text)
    assert [hass.states.get(entity_id).state for entity_id in PORCH] == ["off", "off"]
    assert engine.stats.requests == engine_runs
    speech = result.response.speech["plain"]["speech"]
    assert speech == message("tool_failed").format(error=reported)
    log = hass.data[conversation.chat_log.DATA_CHAT_LOGS][result.conversation_id].content
    assert isinstance(log[-1], conversation.AssistantContent)
    assert log[-1].content == speech
    calls = [c for c in log if isinstance(c, conversation.AssistantContent) and c.tool_calls]
    assert len(calls) == engine_runs - (ending != "out_of_rounds")  # a repeated call is never run again
    assert rounds_traced() == [{"used": engine_runs, "limit": MAX_TOOL_ITERATIONS, "ending": ending}]
    assert any(f"after {engine_runs} rounds ({ending})" in record.getMessage() for record in caplog.records)


async def test_a_model_that_says_nothing_is_not_silence(
    hass: HomeAssistant, init_integration: MockConfigEntry
) -> None:
    result = await converse(hass, "silence please")
    assert result.response.speech["plain"]["speech"] == message("no_answer")
    assert rounds_traced() == [{"used": 1, "limit": MAX_TOOL_ITERATIONS, "ending": "no_words"}]


async def test_the_words_are_in_the_conversations_language(
    hass: HomeAssistant, init_integration: MockConfigEntry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The integration's words are looked up in the conversation's language (English where it has none)."""
    asked: list[str] = []
    original = translation.async_get_translations

    async def recording(hass: HomeAssistant, language: str, category: str, *args: object) -> dict[str, str]:
        if category == "exceptions":
            asked.append(language)
        return await original(hass, language, category, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(translation, "async_get_translations", recording)
    result = await converse(hass, "silence please", language="de")
    assert asked == ["de"]
    assert result.response.speech["plain"]["speech"] == message("no_answer")
