"""Home Assistant's tools as a small model handles them best: plain names, forgiving intent matches.

The model sees ``HassTurnOn``, not ``intent__HassTurnOn``: each tool keeps the shortest ending
of its ``__``-separated name that no other tool shares, and its calls are mapped back exactly.
An intent call whose targets do not match is tried once more, inside the same tool call,
without the slots the user did not say; when that fails too, the result names what exists.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, override

from homeassistant.components import conversation
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import area_registry as ar
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers import floor_registry as fr
from homeassistant.helpers import intent, llm
from homeassistant.util.json import JsonObjectType

from .const import LOGGER

NAMESPACE = "__"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolNames:
    """The model's plain tool names and Home Assistant's, both ways."""

    plain: dict[str, str]
    """Home Assistant's name -> the model's."""
    hass: dict[str, str]
    """The model's name -> Home Assistant's."""

    @classmethod
    def of(cls, names: Iterable[str]) -> ToolNames:
        """Plain names for ``names``: the shortest ending of each that no other name has."""
        parts = {name: name.split(NAMESPACE) for name in names}
        plain: dict[str, str] = {}
        for name, own in parts.items():
            endings = (NAMESPACE.join(own[-size:]) for size in range(1, len(own)))
            plain[name] = next(
                (
                    ending
                    for size, ending in enumerate(endings, 1)
                    if all(NAMESPACE.join(other[-size:]) != ending for o, other in parts.items() if o != name)
                ),
                name,
            )
        return cls(plain, {short: name for name, short in plain.items()})

    def to_plain(self, name: str) -> str:
        """The model's name of a tool (an unknown name is kept)."""
        return self.plain.get(name, name)

    def to_hass(self, name: str) -> str:
        """Home Assistant's name of a tool the model called (an unknown name is kept)."""
        return self.hass.get(name, name)

    def in_text(self, text: str) -> str:
        """``text`` with Home Assistant's tool names, as its prompts mention them, made plain."""
        renamed = {name: short for name, short in self.plain.items() if name != short}
        if not renamed:
            return text
        pattern = "|".join(re.escape(name) for name in sorted(renamed, key=len, reverse=True))
        return re.sub(rf"\b(?:{pattern})\b", lambda match: renamed[match.group()], text)


def api_names(api: llm.APIInstance | None) -> ToolNames:
    """The plain names of an LLM API's tools (none without an API)."""
    return ToolNames.of(tool.name for tool in api.tools) if api else ToolNames({}, {})


@contextmanager
def forgiving_intents(chat_log: conversation.ChatLog) -> Iterator[None]:
    """Within the block, the chat log's intent tools retry a failed match (:class:`RetryingIntentTool`)."""
    api = chat_log.llm_api
    if api is None:
        yield
        return
    said = next(
        (c.content for c in reversed(chat_log.content) if isinstance(c, conversation.UserContent)), ""
    )
    tools = [RetryingIntentTool(tool, said) if _is_intent(tool) else tool for tool in api.tools]
    chat_log.llm_api = dataclasses.replace(api, tools=tools)
    try:
        yield
    finally:
        chat_log.llm_api = api


def _is_intent(tool: llm.Tool) -> bool:
    while isinstance(tool, llm.NamespacedTool):
        tool = tool.tool
    return isinstance(tool, llm.IntentTool)


class RetryingIntentTool(llm.Tool):
    """An intent tool whose failed match is tried once more without the slots the user did not say.

    Small models add an area, a floor or a type to a name the user said alone, and Home
    Assistant's matcher then finds nothing (or the type is no valid value). The second try runs
    without another model run.
    """

    def __init__(self, tool: llm.Tool, said: str) -> None:
        """Wrap ``tool`` for a turn in which the user said ``said``."""
        self.tool = tool
        self.said = said
        self.name = tool.name
        self.title = tool.title
        self.description = tool.description
        self.parameters = tool.parameters
        self.annotations = tool.annotations
        self.integration = tool.integration

    @override
    async def async_call(
        self, hass: HomeAssistant, tool_input: llm.ToolInput, llm_context: llm.LLMContext
    ) -> llm.ToolResult | JsonObjectType:
        """Call the intent; on a failed match or an invalid slot, once more with the unsaid slots removed."""
        if (slots := without_echoed_command(tool_input.tool_args, self.said)) != tool_input.tool_args:
            tool_input = llm.ToolInput(tool_name=tool_input.tool_name, tool_args=slots, id=tool_input.id)
        try:
            return await self.tool.async_call(hass, tool_input, llm_context)
        except (intent.MatchFailedError, intent.InvalidSlotInfo) as err:
            failure: intent.IntentError = err
        slots = said_slots(hass, tool_input.tool_args, self.said, llm_context.assistant)
        if slots != tool_input.tool_args and {"name", "area", "floor"} & set(slots):
            LOGGER.debug("%s failed with %s (%s); trying %s", self.name, tool_input.tool_args, failure, slots)
            retry = llm.ToolInput(tool_name=tool_input.tool_name, tool_args=slots, id=tool_input.id)
            try:
                return await self.tool.async_call(hass, retry, llm_context)
            except (intent.MatchFailedError, intent.InvalidSlotInfo) as err:
                failure = err
        if isinstance(failure, intent.MatchFailedError):
            return failure_result(hass, failure, llm_context.assistant)
        raise failure


COMMAND_SLOT = "conversation_command"


def without_echoed_command(slots: dict[str, Any], said: str) -> dict[str, Any]:
    """``slots`` without a command to run later that is not one the user said.

    A timer runs its ``conversation_command`` when it ends. Small models fill it with the request
    itself ("set a timer for 5 minutes", which would start the timer again) or with words the user
    did not say; only a part of the sentence is a command for later.
    """
    command = slots.get(COMMAND_SLOT)
    if not isinstance(command, str):
        return slots
    if _words(command) != _words(said) and f" {_words(command)} " in f" {_words(said)} ":
        return slots
    return {slot: value for slot, value in slots.items() if slot != COMMAND_SLOT}


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.casefold()))


def said_slots(hass: HomeAssistant, slots: dict[str, Any], said: str, assistant: str) -> dict[str, Any]:
    """``slots`` without an area or floor the user did not say, nor a type the name makes needless.

    A floor given as the area (or an area as the floor) moves to its slot first. An area or
    floor counts as said when its name, an alias or the model's word for it is in the user's
    sentence; the domain and device class go when the name alone matches exactly one exposed
    entity.
    """
    kept = _in_their_slots(hass, slots)
    for slot, names in (("area", _area_names), ("floor", _floor_names)):
        value = kept.get(slot)
        if isinstance(value, str) and not any(_said(word, said) for word in [value, *names(hass, value)]):
            del kept[slot]
    name = kept.get("name")
    if isinstance(name, str) and {"domain", "device_class"} & set(kept):
        named = intent.async_match_targets(
            hass, intent.MatchTargetsConstraints(name=name, assistant=assistant)
        )
        if named.is_match and len(named.states) == 1:
            kept.pop("domain", None)
            kept.pop("device_class", None)
    return kept


def _in_their_slots(hass: HomeAssistant, slots: dict[str, Any]) -> dict[str, Any]:
    """``slots`` with an area that is no area but a floor given as the floor (and the other way round)."""
    kept = dict(slots)
    for slot, other, find, find_other in (
        ("area", "floor", _area_names, _floor_names),
        ("floor", "area", _floor_names, _area_names),
    ):
        value = kept.get(slot)
        if isinstance(value, str) and other not in kept and not find(hass, value) and find_other(hass, value):
            kept[other] = kept.pop(slot)
            break
    return kept


def _said(word: str, sentence: str) -> bool:
    return bool(word.strip()) and re.search(rf"\b{re.escape(word.strip())}\b", sentence, re.I) is not None


def _area_names(hass: HomeAssistant, value: str) -> list[str]:
    return [
        name for area in intent.find_areas(value, ar.async_get(hass)) for name in (area.name, *area.aliases)
    ]


def _floor_names(hass: HomeAssistant, value: str) -> list[str]:
    floors = intent.find_floors(value, fr.async_get(hass))
    return [name for floor in floors for name in (floor.name, *floor.aliases)]


# Exposed entities named in a failure's result: enough to choose from, few enough to read.
SUGGESTIONS = 5


def failure_result(hass: HomeAssistant, err: intent.MatchFailedError, assistant: str) -> llm.ToolResult:
    """A failed match's error, with the exposed entities that come closest to what was asked."""
    data: JsonObjectType = {"error": str(err)}
    if closest := _closest(hass, err.constraints, assistant):
        data["did_you_mean"] = [_described(hass, state) for state in closest[:SUGGESTIONS]]
    if err.result.no_match_reason is intent.MatchFailedReason.INVALID_AREA:
        data["areas"] = [area.name for area in ar.async_get(hass).async_list_areas()]
    if err.result.no_match_reason is intent.MatchFailedReason.INVALID_FLOOR:
        data["floors"] = [floor.name for floor in fr.async_get(hass).async_list_floors()]
    return llm.ToolResult(data=data, error=True)


def _closest(hass: HomeAssistant, asked: intent.MatchTargetsConstraints, assistant: str) -> list[State]:
    """Entities named like the one asked for; else those of the area, floor and type asked for."""
    exposed = intent.async_match_targets(
        hass, intent.MatchTargetsConstraints(assistant=assistant, allow_duplicate_names=True)
    ).states
    if asked.name:
        registry = er.async_get(hass)
        names = {
            alias.casefold(): state
            for state in exposed
            for alias in intent.async_get_entity_aliases(
                hass, registry.async_get(state.entity_id), state=state
            )
        }
        close = difflib.get_close_matches(asked.name.casefold(), names, n=SUGGESTIONS)
        if states := list({names[name].entity_id: names[name] for name in close}.values()):
            return states
    for area, floor in ((asked.area_name, asked.floor_name), (None, None)):
        nearby = intent.MatchTargetsConstraints(
            area_name=area,
            floor_name=floor,
            domains=asked.domains,
            device_classes=asked.device_classes,
            assistant=assistant,
            allow_duplicate_names=True,
        )
        if nearby.has_constraints and (found := intent.async_match_targets(hass, nearby)).is_match:
            return found.states
    return []


def _described(hass: HomeAssistant, state: State) -> str:
    """``Name (domain, area)``, as the prompt lists entities."""
    entry = er.async_get(hass).async_get(state.entity_id)
    area_id = entry and entry.area_id
    if (
        entry
        and not area_id
        and entry.device_id
        and (device := dr.async_get(hass).async_get(entry.device_id))
    ):
        area_id = dr.async_get_effective_area_id(hass, device)
    area = ar.async_get(hass).async_get_area(area_id) if area_id else None
    return f"{state.name} ({', '.join([state.domain, *([area.name] if area else [])])})"
