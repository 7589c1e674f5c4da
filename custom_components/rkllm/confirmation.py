"""Confirming a done action in Home Assistant's own words, without a second run of the model.

When every tool call of a turn was an intent that acted and succeeded (turn on, turn off, set a
light, add to a list, start a timer), the reply is the response Home Assistant's own agent gives
for that intent, in the conversation's language. Anything else (a query, a failure, another
tool) goes back to the model.
"""

from __future__ import annotations

from typing import Any

from homeassistant.components import conversation
from homeassistant.components.conversation.agent_manager import async_get_agent
from homeassistant.components.conversation.default_agent import DefaultAgent
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import TemplateError
from homeassistant.helpers import intent, template

from .const import LOGGER

DEFAULT_RESPONSE = "default"


def _turn_results(chat_log: conversation.ChatLog) -> list[conversation.ToolResultContent]:
    """The tool results that follow the last assistant message."""
    results: list[conversation.ToolResultContent] = []
    for content in reversed(chat_log.content):
        if not isinstance(content, conversation.ToolResultContent):
            break
        results.append(content)
    return results[::-1]


def _action_done(content: conversation.ToolResultContent) -> intent.IntentResponse | None:
    """The intent response of a call that acted and fully succeeded, else None."""
    response = getattr(content.result.data, "original", None)
    if (
        content.result.error
        or not isinstance(response, intent.IntentResponse)
        or response.response_type is not intent.IntentResponseType.ACTION_DONE
        or response.failed_results
        or response.intent is None
    ):
        return None
    return response


async def async_prepare(hass: HomeAssistant, language: str) -> None:
    """Load the default agent's responses for ``language`` before the first command needs them."""
    if isinstance(agent := async_get_agent(hass), DefaultAgent):
        await agent.async_get_or_load_intents(language)


async def intent_speech(hass: HomeAssistant, chat_log: conversation.ChatLog) -> str | None:
    """What Home Assistant says for the turn's done actions, or None when the model must answer."""
    results = _turn_results(chat_log)
    responses = [_action_done(content) for content in results]
    if not results or None in responses:
        return None
    speeches: list[str] = []
    for response in responses:
        assert response is not None
        speech = response.speech.get("plain", {}).get("speech") or await _template_speech(hass, response)
        if not speech:
            return None
        if speech not in speeches:
            speeches.append(speech)
    return " ".join(speeches)


def _response_template(templates: dict[str, str], done: intent.Intent, domain: str) -> str | None:
    """The response the default agent would choose for a call, which named no response.

    A domain with its own wording (cover, lock, scene, script, valve) has a response of its
    name; most intents have a ``default`` one. An intent without (setting a light, adding to a
    list) has one response per slot it sets (``brightness``, ``color``) or a single one
    (``item_added``).
    """
    named_for_slots = [key for key in templates if key in done.slots]
    for key in (domain, DEFAULT_RESPONSE, *named_for_slots):
        if key in templates:
            return templates[key]
    return next(iter(templates.values())) if len(templates) == 1 else None


async def _template_speech(hass: HomeAssistant, response: intent.IntentResponse) -> str | None:
    """The intent's response template of the default agent, rendered as that agent renders it."""
    agent = async_get_agent(hass)
    assert response.intent is not None
    if not isinstance(agent, DefaultAgent) or not (
        intents := await agent.async_get_or_load_intents(response.language)
    ):
        return None
    states = response.matched_states or response.unmatched_states
    templates: dict[str, str] = intents.intent_responses.get(response.intent.intent_type, {})
    if not (source := _response_template(templates, response.intent, states[0].domain if states else "")):
        return None
    variables: dict[str, Any] = {
        "slots": {
            **{key: slot["value"] for key, slot in response.intent.slots.items()},
            **response.speech_slots,
        },
        "state": template.TemplateState(hass, states[0]) if states else None,
        "query": {
            "matched": [template.TemplateState(hass, state) for state in response.matched_states],
            "unmatched": [template.TemplateState(hass, state) for state in response.unmatched_states],
        },
    }
    try:
        speech = str(template.Template(source, hass).async_render(variables, parse_result=False))
    except TemplateError as err:
        LOGGER.debug("Cannot render the %s response: %s", response.intent.intent_type, err)
        return None
    speech = " ".join(speech.split())
    return None if not speech or "None" in speech.split() else speech
