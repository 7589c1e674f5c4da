"""Reading tool calls from model text: formats, name mapping, argument repair."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from .messages import ToolCall

_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.S)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.S)

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
    """Read a JSON tool call (``{"name": ..., "arguments": {...}}``)."""
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


def to_tool_call(call: ParsedCall, known: Sequence[str]) -> ToolCall:
    """The call with its name mapped to an offered tool and its arguments repaired.

    Raises :class:`MalformedCallError` naming the tools when none has that name (with no
    tools offered, any name passes).
    """
    name = resolve_name(call.name, known)
    if known and name not in known:
        raise MalformedCallError(f'there is no tool "{call.name}"; the tools are {", ".join(known)}')
    return ToolCall(name, repair_arguments(call.arguments))


def malformed_call_result(error: str) -> dict[str, str]:
    """The tool result that tells the model its call could not be read."""
    return {"error": "MalformedToolCall", "error_text": f"{error}. {MALFORMED_CALL_HINT}"}


# Calls written as text. A small model often writes its call outside its markup: in a code fence,
# as bare JSON, or with a broken tag. Such a reply is read as calls only when it opens with one:
#
#   reply   = [lead] block {block} [rest]
#   lead    = at most one line of text, of at most LEAD_CHARS characters ("Sure:"), ending where
#             a marker starts or at the end of its line; it is not spoken
#   block   = {marker} object: a marker is a code fence (```, ```json) or a tag, opening or
#             closing (<tool_call>, <tools>, <function_call>); the object starts a line or follows
#             a marker
#   object  = JSON naming an offered tool (with or without its API prefix), with "arguments" or
#             "parameters" (an object, or an object as a JSON string)
#   rest    = after the first call: further blocks are calls, anything else is not spoken
#
# JSON inside a line of prose, after more than one line of text, or that is no call (no "name";
# no arguments and no offered tool of that name) is text. A call-shaped object naming a tool that
# was not offered, or a tag followed by JSON that cannot be read, is a malformed call: the model
# is told what is wrong (with the tools' names) and asked again.

LEAD_CHARS = 100
"""Longest line of text that may introduce a call written as text."""
_MARKER = re.compile(r"```[\w-]*(?=\s|\{)|</?(?:tool_call|tools|function_call)>")
_OPENING_TAG = re.compile(r"<(?:tool_call|tools|function_call)>")
_TAGS = ("<tool_call>", "</tool_call>", "<tools>", "</tools>", "<function_call>", "</function_call>")
_OPEN_FENCE = re.compile(r"`{1,3}$|```[\w-]*$")
_LINE_OBJECT = re.compile(r"(?:^|\n)[ \t]*(\{)")


class Reading(Enum):
    """What held text turned out to be, so far."""

    UNDECIDED = auto()
    """More text is needed."""
    TEXT = auto()
    """No call: the text is said."""
    CALL = auto()
    """A call block: read, or found malformed."""


@dataclass(frozen=True, slots=True)
class Block:
    """A call block read from text."""

    reading: Reading
    end: int = 0
    """Where the block ends (CALL), or where reading stopped (TEXT)."""
    raw: str = ""
    """The JSON as written."""
    call: ToolCall | None = None
    error: str = ""
    """Why a call that was meant cannot be read (CALL without ``call``)."""


def object_end(text: str, start: int) -> int:
    """Index just past the JSON object opening at ``start`` (braces matched outside strings), 0 while open."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            in_string = escaped or char != '"'
            escaped = not escaped and char == "\\"
        elif char == '"':
            in_string = True
        elif char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                return index + 1
    return 0


def _may_become_marker(text: str) -> bool:
    """The text, cut short, may still be a marker."""
    return bool(_OPEN_FENCE.match(text)) or any(tag.startswith(text) for tag in _TAGS)


def block_start(text: str, *, final: bool) -> tuple[Reading, int]:
    """Whether a reply opens with a call block after at most a lead, and where the block starts."""
    start = len(text) - len(text.lstrip())
    if start == len(text):
        return (Reading.TEXT if final else Reading.UNDECIDED), 0
    if text[start] == "{":
        return Reading.CALL, start
    line_end = text.find("\n", start)
    marker = _MARKER.search(text, start, line_end if line_end >= 0 else len(text))
    lead = text[start : marker.start() if marker else line_end if line_end >= 0 else len(text)]
    if len(lead.strip()) > LEAD_CHARS:
        return Reading.TEXT, 0
    if marker is not None:
        return Reading.CALL, marker.start()
    if line_end < 0:
        return (Reading.TEXT if final else Reading.UNDECIDED), 0
    following = text[line_end:].lstrip()
    second = len(text) - len(following)
    if following.startswith("{") or _MARKER.match(following):
        return Reading.CALL, second
    if following and not final and _may_become_marker(following):
        return Reading.UNDECIDED, 0
    return (Reading.UNDECIDED if following == "" and not final else Reading.TEXT), 0


def next_block_start(text: str) -> int:
    """Where the next possible call block of ``text`` (which starts a line) starts, -1 if none yet."""
    found = [match.start() for match in (_MARKER.search(text),) if match]
    found += [match.start(1) for match in (_LINE_OBJECT.search(text),) if match]
    return min(found, default=-1)


def read_block(text: str, start: int, known: Sequence[str], *, final: bool) -> Block:
    """Read the call block at ``start``: its markers, then one JSON object."""
    index, tagged = start, False
    while True:
        index += len(text[index:]) - len(text[index:].lstrip())
        marker = _MARKER.match(text, index)
        if marker is None:
            break
        tagged = tagged or bool(_OPENING_TAG.fullmatch(marker.group()))
        index = marker.end()
    if index == len(text) or text[index] != "{":
        rest = text[index:]
        waiting = not final and (rest == "" or _may_become_marker(rest))
        return Block(Reading.UNDECIDED) if waiting else Block(Reading.TEXT, index)
    end = object_end(text, index)
    if not end and not final:
        return Block(Reading.UNDECIDED)
    if not end and not tagged:
        return Block(Reading.TEXT, index)
    return _call_block(text[index : end or len(text)], end or len(text), known, tagged=tagged)


def _call_block(raw: str, end: int, known: Sequence[str], *, tagged: bool) -> Block:
    if not (tagged or _meant_as_call(raw, known)):
        return Block(Reading.TEXT, end)
    try:
        return Block(Reading.CALL, end, raw, call=to_tool_call(parse_json_call(raw), known))
    except MalformedCallError as err:
        return Block(Reading.CALL, end, raw, error=str(err))


def _meant_as_call(raw: str, known: Sequence[str]) -> bool:
    """JSON shaped as a call: a name with arguments, or the name of an offered tool."""
    try:
        data = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(data, dict) or not isinstance(name := data.get("name"), str):
        return False
    return "arguments" in data or "parameters" in data or resolve_name(name, known) in known
