"""What a small model is told about calling Home Assistant's tools: rules and worked examples.

It joins the system prompt, which is read once and then kept in the KV cache and the prompt-cache
file, so it costs nothing per request after the first. Examples are given only for the tools the
model was offered, with names no home is asked about (the model copies names it has seen), and
each shows the call exactly as the model's template writes it.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

RULES = """\
Calling tools:
- To change a device or to read a state that is not listed above, call a tool. Write only the call, \
never describe it or put it in a code block.
- Pass only what the user said: "name" for a device they named, as it is listed; "area" or "floor" only \
when they said one; "domain" only for a kind of device ("the lights").
- To answer a question about the home, use the states listed above or a tool's result, and say the \
value in one short sentence."""

# With the live context: states are read, never guessed.
LIVE_CONTEXT_RULE = (
    "- Before answering a question about a device's state or a sensor, call GetLiveContext, "
    "then say the value it gives."
)

# With the generic intents: what they do to the domains whose verbs differ.
ON_OFF_RULE = (
    "- A lock locks with HassTurnOn and unlocks with HassTurnOff; a cover opens with HassTurnOn and "
    "closes with HassTurnOff."
)

# Plain tool name -> what a user says, the call's arguments.
EXAMPLES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("HassTurnOff", "turn off the reading lamp", {"name": "Reading lamp"}),
    ("HassTurnOn", "switch on the lights in the study", {"area": "Study", "domain": "light"}),
    ("HassTurnOn", "lock the shed door", {"name": "Shed door"}),
    ("HassTurnOff", "unlock the shed door", {"name": "Shed door"}),
    ("HassLightSet", "dim the reading lamp to 30 percent", {"name": "Reading lamp", "brightness": 30}),
    ("HassSetPosition", "open the study blinds halfway", {"name": "Study blinds", "position": 50}),
    ("HassClimateSetTemperature", "set the heating to 19 degrees", {"temperature": 19}),
    ("HassSetVolume", "set the radio volume to 40", {"name": "Radio", "volume_level": 40}),
    ("HassListAddItem", "put eggs on the shopping list", {"item": "eggs", "name": "Shopping List"}),
    ("HassStartTimer", "set a timer for 10 minutes", {"minutes": 10}),
)


def tool_guidance(tool_names: Collection[str]) -> str:
    """The rules and an example call of each offered tool that has one; empty without tools."""
    if not tool_names:
        return ""
    examples = [
        f"User: {said}\n<tool_call>\n"
        f"{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n</tool_call>"
        for name, said, arguments in EXAMPLES
        if name in tool_names
    ]
    rules = [
        RULES,
        *([ON_OFF_RULE] if "HassTurnOn" in tool_names else []),
        *([LIVE_CONTEXT_RULE] if "GetLiveContext" in tool_names else []),
    ]
    return "\n".join([*rules, *(["Examples:", *examples] if examples else [])])
