"""Reading tool calls from model text: formats, name mapping, argument repair."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .messages import ToolCall

_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.S)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)

# What the model is told when its tool call could not be read, so it can retry.
MALFORMED_CALL_HINT = (
    'Write each call as <tool_call>{"name": "<tool name>", "arguments": {<arguments>}}</tool_call> '
    "using one of the tools you were given."
)
MALFORMED_CALL_TOOL = "invalid_tool_call"


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """A tool call as the model wrote it."""

    name: str
    arguments: dict[str, Any]


class MalformedCallError(ValueError):
    """The model tried to call a tool but its call cannot be read."""


def parse_block(block: str) -> ParsedCall:
    """Read the inside of a ``<tool_call>`` block: JSON or the XML-like ``<function=...>`` form."""
    block = block.strip()
    if match := _XML_FUNCTION.search(block):
        arguments = {name: _xml_value(value) for name, value in _XML_PARAMETER.findall(match.group(2))}
        return ParsedCall(match.group(1), arguments)
    return parse_json_call(block)


def parse_json_call(text: str) -> ParsedCall:
    """Read a JSON tool call (``{"name": ..., "arguments": {...}}``), possibly fenced."""
    if match := _FENCE.match(text.strip()):
        text = match.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedCallError(
            f"the tool call is not valid JSON ({err.msg} at character {err.pos})"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise MalformedCallError('the tool call has no "name"')
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise MalformedCallError('the tool call\'s "arguments" are not valid JSON') from err
    if not isinstance(arguments, dict):
        raise MalformedCallError('the tool call\'s "arguments" must be an object')
    return ParsedCall(data["name"], arguments)


def _xml_value(value: str) -> Any:
    value = value.strip()
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def resolve_name(name: str, known: Iterable[str]) -> str:
    """Map a name a small model mangled back to a tool's, ignoring case and namespaces.

    Home Assistant namespaces tool names with ``__`` (``intent__HassTurnOn``); with several
    LLM APIs, 2026.10 adds the API's (``assist__intent__HassTurnOn``) and 2026.11 only where
    two clash. A name with the same last part matches; of several, the one sharing the most
    namespace parts (``HassTurnOn`` -> ``intent__HassTurnOn``, ``homeassistant__GetDateTime``
    -> ``homeassistant__llm__GetDateTime``). A tie is left alone.
    """
    names = list(known)
    if name in names:
        return name
    parts = name.casefold().split("__")
    shared = {
        known_name: len(set(parts) & set(known_parts))
        for known_name in names
        if (known_parts := known_name.casefold().split("__"))[-1] == parts[-1]
    }
    best = max(shared.values(), default=0)
    matches = [known_name for known_name, count in shared.items() if count == best]
    return matches[0] if len(matches) == 1 else name


def repair_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Drop empty arguments and decode stringified lists and objects, as small models need."""
    return {key: _decode_json_string(value) for key, value in arguments.items() if value not in (None, "")}


def _decode_json_string(value: Any) -> Any:
    if isinstance(value, str) and value[:1] + value[-1:] in ("[]", "{}"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def to_tool_call(call: ParsedCall, known: Iterable[str]) -> ToolCall:
    """The call with its name mapped to a known tool and its arguments repaired."""
    return ToolCall(resolve_name(call.name, known), repair_arguments(call.arguments))


def malformed_call_result(error: str) -> dict[str, str]:
    """The tool result that tells the model its call could not be read."""
    return {"error": "MalformedToolCall", "error_text": f"{error}. {MALFORMED_CALL_HINT}"}
