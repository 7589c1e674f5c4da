"""How a conversation turn ends: always in words, even when the model leaves it without any.

Home Assistant refuses a turn whose last content is not the assistant's ("Unable to get
response"). A turn whose tool rounds run out, whose model repeats a call it already made
or says nothing ends with the integration's own words instead, in the conversation's
language: what the last failed call reported, or that the model gave no answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from enum import StrEnum
from typing import Any

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant
from homeassistant.helpers import llm, translation

from .const import DOMAIN


class Ending(StrEnum):
    """How the tool loop of a turn ended (recorded in the conversation's trace)."""

    ANSWERED = "answered"
    CONFIRMED = "confirmed"
    """In Home Assistant's words, for calls that acted (see :mod:`.confirmation`)."""
    NO_WORDS = "no_words"
    REPEATED_CALL = "repeated_call"
    OUT_OF_ROUNDS = "out_of_rounds"


CallKey = tuple[str, str]


def call_key(name: str, arguments: dict[str, Any]) -> CallKey:
    """What makes two calls the same call."""
    return name, json.dumps(arguments, sort_keys=True, default=str)


def _this_turn(chat_log: conversation.ChatLog) -> list[conversation.Content]:
    """The content after the user's latest message."""
    content = list(chat_log.content)
    start = max(
        (i for i, item in enumerate(content) if isinstance(item, conversation.UserContent)), default=0
    )
    return content[start + 1 :]


def calls_made(chat_log: conversation.ChatLog) -> set[CallKey]:
    """The tool calls made so far in the current turn."""
    return {
        call_key(call.tool_name, call.tool_args)
        for item in _this_turn(chat_log)
        if isinstance(item, conversation.AssistantContent)
        for call in item.tool_calls or ()
    }


async def unrepeated(
    deltas: AsyncIterator[conversation.AssistantContentDeltaDict], made: set[CallKey]
) -> AsyncGenerator[conversation.AssistantContentDeltaDict]:
    """The deltas without the calls already made in this turn: their results are known."""
    async for delta in deltas:
        if not (calls := delta.get("tool_calls")):
            yield delta
            continue
        new = [call for call in calls if call_key(call.tool_name, call.tool_args) not in made]
        made.update(call_key(call.tool_name, call.tool_args) for call in new)
        kept = conversation.AssistantContentDeltaDict(**delta)
        del kept["tool_calls"]
        if new:
            kept["tool_calls"] = new
        if kept:
            yield kept


def spoken(chat_log: conversation.ChatLog) -> bool:
    """Whether the chat log ends with something the assistant said."""
    last = chat_log.content[-1]
    return isinstance(last, conversation.AssistantContent) and not last.tool_calls and bool(last.content)


def _failure(result: llm.ToolResult) -> str | None:
    """What a failed call reported (Home Assistant's error, as it gave it to the model), else None."""
    if not result.error:
        return None
    data: Any = result.data
    return str(data.get("error_text") or data.get("error") or "") if isinstance(data, dict) else str(data)


def _latest_failure(content: Iterable[conversation.Content]) -> str | None:
    """What the last round's last failed call reported, when the turn ends on tool results."""
    failures: list[str] = []
    for item in reversed(list(content)):
        if not isinstance(item, conversation.ToolResultContent):
            break
        if (failure := _failure(item.result)) is not None:
            failures.append(failure)
    return failures[0] if failures else None


async def closing_words(hass: HomeAssistant, chat_log: conversation.ChatLog, language: str) -> str:
    """The integration's words for a turn the model left without any, in ``language``."""
    failure = _latest_failure(_this_turn(chat_log))
    key, placeholders = ("tool_failed", {"error": failure}) if failure else ("no_answer", {})
    translations = await translation.async_get_translations(hass, language, "exceptions", [DOMAIN])
    return translations[f"component.{DOMAIN}.exceptions.{key}.message"].format(**placeholders)
