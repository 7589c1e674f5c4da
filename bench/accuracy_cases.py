"""The accuracy benchmark's requests, in the categories of home-assistant-datasets' assist set, and the judge.

A request that acts is judged by the state it leaves: every entity it names must end as expected,
and nothing else may change. A question is judged by its reply (a pattern it must match, one it
must not) and must change nothing. The shopping list and timers are judged by what they hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from accuracy_home import DEVICES, SPEAKER, TRACK, Timers
from homeassistant.core import HomeAssistant

Expected = dict[str, Any]  # attribute -> value, or (">" | "<", value)
TOLERANCE = 0.5


@dataclass(frozen=True)
class Case:
    """One request and what makes it done."""

    category: str
    text: str
    expect: dict[str, Expected] = field(default_factory=dict)
    may_change: tuple[str, ...] = ()
    reply: str = ""  # a regular expression the reply must match (questions)
    not_reply: str = ""  # one it must not match
    item: str = ""  # a word the new shopping-list item must hold
    timer: int = 0  # seconds of the timer that must start
    timer_name: str = ""

    @property
    def acts(self) -> bool:
        """Whether the request asks for an action (a tool call is the right first move)."""
        return not self.reply


def _on(entity_id: str, **attributes: Any) -> dict[str, Expected]:
    return {entity_id: {"state": "on", **attributes}}


def _off(*entity_ids: str) -> dict[str, Expected]:
    return {entity_id: {"state": "off"} for entity_id in entity_ids}


def _lights_on(*entity_ids: str) -> dict[str, Expected]:
    return {entity_id: {"state": "on"} for entity_id in entity_ids}


def _set(entity_id: str, **attributes: Any) -> dict[str, Expected]:
    return {entity_id: attributes}


L = "light."
CASES = (
    # on/off by name
    Case("on/off by name", "Turn on the porch light", _on(L + "porch_light")),
    Case("on/off by name", "Switch off the hallway light", _off(L + "hallway_light")),
    Case("on/off by name", "Turn on the coffee machine", _on("switch.coffee_machine")),
    Case("on/off by name", "Turn the desk lamp on", _on(L + "desk_lamp")),
    Case("on/off by name", "Turn off the bedside lamp", _off(L + "bedside_lamp")),
    Case("on/off by name", "Turn on the Christmas tree", _on("switch.christmas_tree")),
    Case("on/off by name", "Switch on the garage light", _on(L + "garage_light")),
    Case("on/off by name", "Turn off the office fan", _off("fan.office_fan")),
    Case("on/off by name", "Turn on the bedroom ceiling fan", _on("fan.bedroom_ceiling_fan")),
    Case("on/off by name", "Start the sprinkler", _on("switch.sprinkler")),
    Case("on/off by name", "Turn off the bathroom light", _off(L + "bathroom_light")),
    Case("on/off by name", "Turn on the dining table light", _on(L + "dining_table_light")),
    # on/off by area
    Case("on/off by area", "Turn on the lights in the kitchen", _lights_on(L + "kitchen_ceiling_light"),
         may_change=(L + "kitchen_counter_lights",)),
    Case("on/off by area", "Turn off the lights in the living room", _off(L + "living_room_lamp")),
    Case("on/off by area", "Turn on the light in the kids room", _on(L + "kids_room_light")),
    Case("on/off by area", "Switch off the bedroom lights", _off(L + "bedside_lamp")),
    Case("on/off by area", "Turn on the garage lights", _on(L + "garage_light")),
    Case("on/off by area", "Turn off the lights in the bathroom", _off(L + "bathroom_light")),
    Case("on/off by area", "Turn on the office light", _on(L + "desk_lamp")),
    Case("on/off by area", "Turn on the dining room lights", _on(L + "dining_table_light")),
    # on/off by floor
    Case("on/off by floor", "Turn off the lights on the first floor",
         _off(L + "bedside_lamp", L + "bathroom_light")),
    Case("on/off by floor", "Turn on the lights on the ground floor",
         _lights_on(L + "kitchen_ceiling_light", L + "living_room_ceiling_light", L + "dining_table_light",
                    L + "garage_light"),
         may_change=(L + "kitchen_counter_lights", L + "living_room_lamp", L + "hallway_light")),
    Case("on/off by floor", "Switch off all the lights downstairs",
         _off(L + "kitchen_counter_lights", L + "living_room_lamp", L + "hallway_light")),
    Case("on/off by floor", "Turn on the lights upstairs",
         _lights_on(L + "bedroom_light", L + "kids_room_light", L + "desk_lamp"),
         may_change=(L + "bedside_lamp", L + "bathroom_light")),
    Case("on/off by floor", "Turn off the ground floor lights",
         _off(L + "kitchen_counter_lights", L + "living_room_lamp", L + "hallway_light")),
    Case("on/off by floor", "Turn off all the lights upstairs",
         _off(L + "bedside_lamp", L + "bathroom_light")),
    # brightness
    Case("brightness", "Set the living room lamp to 20%", _on(L + "living_room_lamp", brightness=20)),
    Case("brightness", "Dim the bedside lamp to 10 percent", _on(L + "bedside_lamp", brightness=10)),
    Case("brightness", "Set the kitchen ceiling light to 50% brightness",
         _on(L + "kitchen_ceiling_light", brightness=50)),
    Case("brightness", "Set the hallway light brightness to 75%", _on(L + "hallway_light", brightness=75)),
    Case("brightness", "Make the bathroom light 40 percent", _on(L + "bathroom_light", brightness=40)),
    Case("brightness", "Set the desk lamp to full brightness", _on(L + "desk_lamp", brightness=100)),
    Case("brightness", "Set the kitchen counter lights to 30%",
         _on(L + "kitchen_counter_lights", brightness=30)),
    # climate
    Case("climate", "Set the thermostat to 22 degrees", _set("climate.thermostat", temperature=22)),
    Case("climate", "Set the temperature to 18", _set("climate.thermostat", temperature=18)),
    Case("climate", "Change the heating to 21.5 degrees", _set("climate.thermostat", temperature=21.5)),
    Case("climate", "Turn the thermostat up to 23", _set("climate.thermostat", temperature=23)),
    Case("climate", "Set the thermostat to 19 degrees", _set("climate.thermostat", temperature=19)),
    Case("climate", "Turn off the heating", _set("climate.thermostat", state="off")),
    # covers
    Case("covers", "Open the bedroom curtains", _set("cover.bedroom_curtains", position=100)),
    Case("covers", "Close the living room blinds", _set("cover.living_room_blinds", position=0)),
    Case("covers", "Open the garage door", _set("cover.garage_door", position=100)),
    Case("covers", "Set the living room blinds to 50%", _set("cover.living_room_blinds", position=50)),
    Case("covers", "Open the bedroom curtains halfway", _set("cover.bedroom_curtains", position=50)),
    Case("covers", "Close the blinds in the living room", _set("cover.living_room_blinds", position=0)),
    Case("covers", "Set the bedroom curtains to 30 percent", _set("cover.bedroom_curtains", position=30)),
    # locks
    Case("locks", "Lock the back door", _set("lock.back_door", state="locked")),
    Case("locks", "Unlock the front door", _set("lock.front_door", state="unlocked")),
    Case("locks", "Lock all the doors", _set("lock.back_door", state="locked")),
    Case("locks", "Unlock the door in the hallway", _set("lock.front_door", state="unlocked")),
    Case("locks", "Please lock the back door", _set("lock.back_door", state="locked")),
    Case("locks", "Can you unlock the front door", _set("lock.front_door", state="unlocked")),
    # media
    Case("media", "Pause the music", _set(SPEAKER.entity_id, state="paused")),
    Case("media", "Pause the living room speaker", _set(SPEAKER.entity_id, state="paused")),
    Case("media", "Skip this song", _set(TRACK, state=2)),
    Case("media", "Next track", _set(TRACK, state=2)),
    Case("media", "Set the volume to 50%", _set(SPEAKER.entity_id, volume=50)),
    Case("media", "Set the living room speaker volume to 20", _set(SPEAKER.entity_id, volume=20)),
    Case("media", "Stop the music in the living room", _set(SPEAKER.entity_id, state="paused")),
    Case("media", "Turn the volume down to 10 percent", _set(SPEAKER.entity_id, volume=10)),
    # lists
    Case("lists", "Add milk to my shopping list", item="milk"),
    Case("lists", "Put eggs on the shopping list", item="egg"),
    Case("lists", "Add bread to the shopping list", item="bread"),
    Case("lists", "I need to buy bananas, add them to my shopping list", item="banana"),
    Case("lists", "Add coffee beans to my shopping list", item="coffee"),
    Case("lists", "Add toilet paper to the shopping list", item="toilet paper"),
    Case("lists", "Add olive oil to the shopping list", item="olive oil"),
    # timers
    Case("timers", "Set a timer for 5 minutes", timer=300),
    Case("timers", "Start a 10 minute timer", timer=600),
    Case("timers", "Set a timer for 30 seconds", timer=30),
    Case("timers", "Set a pasta timer for 8 minutes", timer=480, timer_name="pasta"),
    Case("timers", "Timer for one hour", timer=3600),
    Case("timers", "Set a timer for 2 minutes and 30 seconds", timer=150),
    Case("timers", "Start a timer for 15 minutes", timer=900),
    # state questions
    Case("state questions", "What's the temperature outside?", reply=r"\b12\b"),
    Case("state questions", "What is the temperature in the living room?", reply=r"21[.,]5"),
    Case("state questions", "Is the front door locked?", reply=r"\b(yes|locked)\b",
         not_reply=r"unlocked|not locked"),
    Case("state questions", "Is the back door locked?", reply=r"unlocked|not locked|\bno\b|isn't locked"),
    Case("state questions", "Is the kitchen window open?", reply=r"\b(yes|open)\b",
         not_reply=r"closed|not open"),
    Case("state questions", "How many lights are on?", reply=r"\b(5|five)\b"),
    Case("state questions", "Is the porch light on?", reply=r"\boff\b|\bno\b|not on|isn't on"),
    Case("state questions", "What is the humidity in the bedroom?", reply=r"\b48\b"),
    Case("state questions", "Is the garage door open?", reply=r"closed|\bno\b|not open|isn't open"),
    Case("state questions", "What is the thermostat set to?", reply=r"\b20\b"),
    Case("state questions", "Is the coffee machine on?", reply=r"\boff\b|\bno\b|not on|isn't on"),
    # indirect requests
    Case("indirect", "It's too dark in the kitchen", _on(L + "kitchen_ceiling_light"),
         may_change=(L + "kitchen_counter_lights",)),
    Case("indirect", "It's too dark in the kids room", _on(L + "kids_room_light")),
    Case("indirect", "I'm cold", _set("climate.thermostat", temperature=(">", 20))),
    Case("indirect", "It's stuffy in the bedroom", _on("fan.bedroom_ceiling_fan")),
    Case("indirect", "I'm going to bed, make sure the back door is secure",
         _set("lock.back_door", state="locked")),
    Case("indirect", "The sun is glaring in the living room",
         _set("cover.living_room_blinds", position=("<", 100))),
    Case("indirect", "I can't see anything in the garage", _on(L + "garage_light")),
    Case("indirect", "I'd like a coffee, get the machine going", _on("switch.coffee_machine")),
)  # fmt: skip
CATEGORIES = tuple(dict.fromkeys(case.category for case in CASES))


def observe(hass: HomeAssistant) -> dict[str, Expected]:
    """Each device's state and level (brightness, fan speed, position, temperature, volume in %)."""
    seen: dict[str, Expected] = {}
    for device in DEVICES:
        state = hass.states.get(device.entity_id)
        assert state is not None, device.entity_id
        attributes = state.attributes
        level: dict[str, Any] = {}
        match device.domain:
            case "light" if state.state == "on":
                level["brightness"] = round((attributes.get("brightness") or 0) / 2.55, 1)
            case "fan":
                level["percentage"] = attributes.get("percentage")
            case "cover":
                level["position"] = attributes.get("current_position")
            case "climate":
                level["temperature"] = attributes.get("temperature")
            case "media_player":
                level["volume"] = round((attributes.get("volume_level") or 0) * 100, 1)
        seen[device.entity_id] = {"state": state.state, **level}
    track = hass.states.get(TRACK)
    assert track is not None
    seen[TRACK] = {"state": float(track.state)}
    return seen


def _holds(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, tuple):
        op, bound = wanted
        return isinstance(actual, int | float) and (actual > bound if op == ">" else actual < bound)
    if isinstance(wanted, int | float) and not isinstance(wanted, bool):
        try:
            return abs(float(actual) - wanted) <= TOLERANCE
        except TypeError, ValueError:
            return False
    return actual == wanted


def _shopping_items(hass: HomeAssistant) -> list[str]:
    return [item["name"] for item in hass.config_entries.async_entries("shopping_list")[0].runtime_data.items]


def judge(
    case: Case, hass: HomeAssistant, before: dict[str, Expected], reply: str, timers: Timers
) -> str | None:
    """Why the request was not done, or None when it was."""
    after = observe(hass)
    changed = sorted(key for key in after if after[key] != before[key])
    for entity_id, wanted in case.expect.items():
        for attribute, value in wanted.items():
            if not _holds(after[entity_id].get(attribute), value):
                return f"{entity_id} {attribute} is {after[entity_id].get(attribute)!r}, not {value!r}"
    unexpected = [key for key in changed if key not in case.expect and key not in case.may_change]
    if unexpected:
        return "also changed: " + ", ".join(f"{key} {after[key]}" for key in unexpected)
    items = _shopping_items(hass)
    if case.item:
        if not any(case.item in item.lower() for item in items):
            return f"the shopping list holds {items}"
    elif items:
        return f"added to the shopping list: {items}"
    if case.timer:
        if not any(
            t.seconds == case.timer and case.timer_name in (t.name or "").lower() for t in timers.started
        ):
            started = [(t.name, t.seconds) for t in timers.started]
            return f"timers started: {started}, not {case.timer_name or ''} {case.timer} s"
    elif timers.started:
        return f"a timer was started: {[(t.name, t.seconds) for t in timers.started]}"
    if case.reply and not re.search(case.reply, reply, re.IGNORECASE):
        return "the reply does not say it"
    if case.not_reply and re.search(case.not_reply, reply, re.IGNORECASE):
        return "the reply says otherwise"
    return None
