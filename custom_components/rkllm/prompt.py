"""Home Assistant's prompt and tool results in as few tokens as the model still understands.

The system prompt is read once and kept in the KV cache, so it must not change between
requests: the current date and time move to the user's turn. The exposed entities, which
Home Assistant lists as YAML, become one line each; an intent's result keeps what was done
and what failed, by name, and what it says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import probatio
import yaml
from homeassistant.helpers import llm

from rkllm_runtime.chat.messages import compact_json

# llm.DATE_TIME_PROMPT as rendered: in the prompt when no tool tells the time.
_DATE_TIME_LINE = re.compile(r"^Current time is [0-9:]+\. Today's date is [0-9-]+\.\n?", re.M)
# The line that introduces Home Assistant's YAML list of entities (the static or live context).
_ENTITIES_HEADER = "devices in this smart home:\n"


def lean_prompt(prompt: str) -> tuple[str, str]:
    """The prompt to cache, and its volatile lines (the date and time) to send with the user's turn."""
    volatile = "".join(_DATE_TIME_LINE.findall(prompt)).strip()
    return compact_entities(_DATE_TIME_LINE.sub("", prompt)), volatile


def compact_entities(text: str) -> str:
    """``text`` with each YAML list of entities after Home Assistant's header as one line per entity."""
    out: list[str] = []
    rest = text
    while (index := rest.find(_ENTITIES_HEADER)) >= 0:
        start = index + len(_ENTITIES_HEADER)
        out.append(rest[:start])
        lines = rest[start:].split("\n")
        size = next((i for i, line in enumerate(lines) if not line.startswith(("- ", "  "))), len(lines))
        block = "\n".join(lines[:size])
        out.append(_entity_lines(block) or block)
        rest = "\n" + "\n".join(lines[size:]) if size < len(lines) else ""
    return "".join(out) + rest


def _entity_lines(block: str) -> str | None:
    """``- names (domain, areas: …): state; attribute: value`` per entity, None when not such a list."""
    try:
        entities = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    if not isinstance(entities, list) or not all(isinstance(entity, dict) for entity in entities):
        return None
    lines = []
    for listed in entities:
        entity = dict(listed)
        names, state = entity.pop("names", ""), entity.pop("state", None)
        attributes = entity.pop("attributes", None) or {}
        details = [str(entity.pop("domain", ""))] + [
            f"{key}: {_plain(value)}" for key, value in entity.items()
        ]
        line = f"- {names} ({', '.join(detail for detail in details if detail)})".replace("-  (", "- (")
        if state is not None:
            line += f": {_plain(state)}"
        if attributes:
            line += "; " + ", ".join(f"{key}: {_plain(value)}" for key, value in attributes.items())
        lines.append(line)
    return "\n".join(lines)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else compact_json(value)


def lean_tool_result(result: llm.ToolResult) -> str:
    """The smallest faithful text of a tool's result."""
    data: Any = result.data
    if isinstance(data, dict) and "response_type" in data:
        return compact_json(_intent_result(data))
    if isinstance(data, dict) and set(data) == {"result"} and isinstance(data["result"], str):
        return compact_entities(data["result"])  # the live context: a text for the model already
    return compact_json(_without_empty(data))


def _intent_result(response: dict[str, Any]) -> dict[str, Any]:
    """What an intent did: the names it acted on or failed on, its speech, or its error code."""
    data = response.get("data") or {}
    lean: dict[str, Any] = {}
    if response["response_type"] == "error":
        lean["error"] = data.get("code")
    for key in ("success", "failed"):
        if names := [target.get("name") for target in data.get(key) or ()]:
            lean[key] = names
    if speech := ((response.get("speech") or {}).get("plain") or {}).get("speech"):
        lean["speech"] = speech
    if slots := response.get("speech_slots"):
        lean["slots"] = slots
    return lean or {"response_type": response["response_type"]}


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_empty(item) for key, item in value.items() if item not in (None, "", [], {})}
    if isinstance(value, list):
        return [_without_empty(item) for item in value]
    return value


# A longer enum is read with every prompt and rarely needed: its type is enough, and Home
# Assistant's validation names the values when one is wrong.
MAX_ENUM_VALUES = 8


def tool_schema(tool: llm.Tool, custom_serializer: Callable[[Any], Any] | None) -> dict[str, Any]:
    """A tool's parameters as JSON schema with what makes a call right: names, types, required.

    Left out: a parameter's description when the tool's own names the parameter, titles,
    defaults (Home Assistant applies them) and long enums. A parameter that takes one value
    as well as a list (an intent's ``domain``) is shown as one value.
    """
    schema: dict[str, Any] = _lean(
        probatio.to_openapi(tool.parameters, custom_serializer=custom_serializer, openapi_version="3.1.0")
    )
    said = tool.description or ""
    singles = _single_or_list(tool.parameters)
    properties: dict[str, Any] = schema.get("properties", {})
    for name, spec in properties.items():
        lean = spec
        if name in singles and spec.get("type") == "array":
            lean = {
                **spec["items"],
                **({"description": spec["description"]} if "description" in spec else {}),
            }
        if re.search(rf"\b{re.escape(name)}\b", said, re.I):
            lean = {key: value for key, value in lean.items() if key != "description"}
        properties[name] = lean
    return schema


def _single_or_list(parameters: probatio.Schema) -> set[str]:
    """The parameters whose validator makes a list of a single value (``All(EnsureList(), ...)``)."""
    return {
        str(key)
        for key, validator in (parameters.schema if isinstance(parameters.schema, dict) else {}).items()
        if isinstance(validator, probatio.All)
        and validator.validators
        and isinstance(validator.validators[0], probatio.EnsureList)
    }


def _lean(node: Any) -> Any:
    """A JSON schema without titles, defaults and long enums; ``anyOf`` a value or a list of it: the value."""
    if isinstance(node, list):
        return [_lean(item) for item in node]
    if not isinstance(node, dict):
        return node
    match node.get("anyOf"):
        case [single, {"type": "array", "items": items}] if items == single:
            return _lean({**single, **{k: v for k, v in node.items() if k != "anyOf"}})
    return {
        key: _lean(value)
        for key, value in node.items()
        if key not in ("title", "default")
        and not (key == "enum" and isinstance(value, list) and len(value) > MAX_ENUM_VALUES)
    }
