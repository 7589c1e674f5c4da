"""From the JSON of an Ollama or OpenAI request to a chat request (both share the message shape)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from typing import Any

from rkllm_runtime.chat import Message, ToolCall, ToolSpec
from rkllm_runtime.chat.constrained import TOP_LOGPROBS_MAX
from rkllm_runtime.chat.messages import new_call_id
from rkllm_runtime.chat.structured import InvalidSchemaError, check_schema
from rkllm_runtime.types import Sampling

from .errors import bad_request
from .images import decode_base64, part_image

_SAMPLING_FIELDS = {f.name for f in fields(Sampling)}
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
MAX_STOP_STRINGS = 4
C_INT_MAX = 2**31 - 1
MAX_MALFORMED_CALL_RETRIES = 3  # each is a whole run of the model, the others waiting
# Far beyond any tool or output schema; what is deeper would exhaust the recursion that renders it.
MAX_NESTING = 64


def too_deep(value: object, limit: int = MAX_NESTING) -> str | None:
    """Where ``value`` (parsed JSON) nests more than ``limit`` levels: the first steps of that path."""
    stack: list[tuple[object, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > limit:
            steps = path.split(".", 4)
            return ".".join(steps[:4]) + ("…" if len(steps) > 4 else "")
        if isinstance(item, dict):
            stack += (
                (child, f"{path}.{key}" if path else str(key), depth + 1) for key, child in item.items()
            )
        elif isinstance(item, list):
            stack += ((child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item))
    return None


def integer(value: object, name: str, low: int, high: int) -> int:
    """An integer field within ``[low, high]`` (a bool is none), or a 400 naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f'"{name}" must be between {low} and {high}')
    return value


def _content(content: object, where: str, fetched: Mapping[str, bytes]) -> tuple[str, tuple[bytes, ...]]:
    """Message content: a string, or OpenAI's list of text and ``image_url`` parts."""
    if content is None:
        return "", ()
    if isinstance(content, str):
        return content, ()
    if isinstance(content, list):
        texts: list[str] = []
        images: list[bytes] = []
        for position, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "image_url":
                images.append(part_image(part, f"{where}.content[{position}]", fetched))
            else:
                raise bad_request(f"{where}: only text and image_url content is supported")
        return "".join(texts), tuple(images)
    raise bad_request(f"{where}: content must be a string")


def images_of(value: object, where: str) -> tuple[bytes, ...]:
    """Ollama's ``images``: a list of base64 strings."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad_request(f'"{where}" must be a list of base64-encoded images')
    return tuple(decode_base64(image, f"{where}[{index}]") for index, image in enumerate(value))


def _tool_call(item: object, where: str) -> ToolCall:
    if not isinstance(item, Mapping) or not isinstance(item.get("function"), Mapping):
        raise bad_request(f"{where}: a tool call needs a function")
    function = item["function"]
    name, arguments = function.get("name"), function.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI sends the arguments as JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as err:
            raise bad_request(f"{where}: tool call arguments are not valid JSON") from err
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise bad_request(f"{where}: a tool call needs a name and an arguments object")
    call_id = item.get("id")
    return ToolCall(name, arguments, id=call_id if isinstance(call_id, str) and call_id else new_call_id())


def parse_messages(items: object, fetched: Mapping[str, bytes] | None = None) -> tuple[str, list[Message]]:
    """The system prompt (every system message, joined) and the other messages.

    ``fetched`` holds the remote images the server allowed and fetched, by URL (see :mod:`.images`).
    """
    fetched = fetched or {}
    if not isinstance(items, list) or not items:
        raise bad_request('"messages" must be a non-empty list')
    system: list[str] = []
    messages: list[Message] = []
    call_names: dict[str, str] = {}
    for index, item in enumerate(items):
        where = f"messages[{index}]"
        if not isinstance(item, Mapping):
            raise bad_request(f"{where} must be an object")
        role = item.get("role")
        content, parts = _content(item.get("content"), where, fetched)
        images = parts + images_of(item.get("images"), f"{where}.images")
        if images and role != "user":
            raise bad_request(f"{where}: only user messages may carry images")
        match role:
            case "system" | "developer":
                system.append(content)
            case "user":
                messages.append(Message("user", content, images=images))
            case "assistant":
                calls = tuple(_tool_call(call, where) for call in item.get("tool_calls") or ())
                call_names.update((call.id, call.name) for call in calls)
                messages.append(Message("assistant", content, tool_calls=calls))
            case "tool":
                name = (
                    item.get("tool_name") or item.get("name") or call_names.get(str(item.get("tool_call_id")))
                )
                messages.append(Message("tool", content, name=name if isinstance(name, str) else ""))
            case _:
                raise bad_request(f"{where}: unknown role {role!r}")
    if not messages or messages[-1].role == "assistant":
        raise bad_request("the last message must be from the user or a tool")
    return "\n\n".join(system), messages


def parse_tools(items: object) -> list[ToolSpec]:
    """OpenAI-style function tools (Ollama uses the same shape)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise bad_request('"tools" must be a list')
    tools = []
    for index, item in enumerate(items):
        function = item.get("function") if isinstance(item, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise bad_request(f"tools[{index}] must be a function with a name")
        parameters = function.get("parameters") or EMPTY_SCHEMA
        if not isinstance(parameters, dict):
            raise bad_request(f"tools[{index}]: parameters must be a JSON schema object")
        tools.append(ToolSpec(function["name"], parameters, str(function.get("description") or "")))
    return tools


# The ranges OpenAI enforces (top_k and the mirostat fields: what the runtime can take).
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, C_INT_MAX),
    "repeat_penalty": (0.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
    "mirostat": (0, 2),
    "mirostat_tau": (0.0, 100.0),
    "mirostat_eta": (0.0, 1.0),
}
_INTEGERS = {"top_k", "mirostat"}


def _sampling_value(key: str, value: object) -> int | float:
    """A sampling value within the range the APIs enforce (400 otherwise)."""
    low, high = _RANGES[key]
    integer = key in _INTEGERS
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f'"{key}" must be a number')
    if not (math.isfinite(value) and low <= value <= high):
        raise bad_request(f'"{key}" must be between {low:g} and {high}')
    if integer and value != int(value):
        raise bad_request(f'"{key}" must be an integer')
    return int(value) if integer else float(value)


def sampling_of(values: Mapping[str, object]) -> Sampling | None:
    """Sampling from request options; a field left out keeps the runtime's value (None: all do)."""
    chosen: dict[str, Any] = {
        key: _sampling_value(key, value) for key in _SAMPLING_FIELDS if (value := values.get(key)) is not None
    }
    return Sampling(**chosen) if chosen else None


def check_sampling(sampling: Sampling) -> None:
    """400 when a native request's sampling leaves the ranges the Ollama and OpenAI APIs enforce."""
    for key, value in asdict(sampling).items():
        if value is not None:
            _sampling_value(key, value)


def stop_strings(value: object, field: str) -> tuple[str, ...]:
    """Stop strings: one, or a list of them (OpenAI allows at most 4)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
        raise bad_request(f'"{field}" must be a non-empty string or a list of them')
    if len(items) > MAX_STOP_STRINGS:
        raise bad_request(f'"{field}" holds at most {MAX_STOP_STRINGS} strings')
    return tuple(items)


def refuse(values: Mapping[str, object], fields: Iterable[str], where: str = "") -> None:
    """400 naming the first of ``fields`` that is set: this server cannot honour it."""
    for name in fields:
        if values.get(name) not in (None, False, "", [], {}):
            raise bad_request(f'"{where}{name}" is not supported by this server')


def top_logprobs(body: Mapping[str, object]) -> int | None:
    """Alternatives per token the request asks log-probabilities for; None when it asks for none.

    ``logprobs`` and ``top_logprobs`` (0 to 20), as both APIs take them.
    """
    asked, top = body.get("logprobs"), body.get("top_logprobs")
    if asked is not None and not isinstance(asked, bool):
        raise bad_request('"logprobs" must be true or false')
    if top is None:
        return 0 if asked else None
    count = integer(top, "top_logprobs", 0, TOP_LOGPROBS_MAX)
    if not asked:
        raise bad_request('"top_logprobs" needs "logprobs": true')
    return count


def output_schema(value: object, field: str) -> dict[str, Any]:
    """A JSON schema for structured output (400 when it is not one)."""
    try:
        return check_schema(value)
    except InvalidSchemaError as err:
        raise bad_request(f'"{field}": {err}') from err


def max_tokens(requested: object, limit: int, name: str) -> int:
    """The reply's token limit: the request's field ``name`` (absent or -1: the server's), at most that."""
    if requested is None or requested == -1:
        return limit
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise bad_request(f'"{name}" must be a positive integer')
    if requested > limit:
        raise bad_request(f'"{name}" is {requested}, above this server\'s maximum of {limit}')
    return requested


def flag(value: object, name: str) -> bool:
    """A boolean field (Ollama's ``think`` may also be a level: any level thinks)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value in ("low", "medium", "high"):
        return True
    raise bad_request(f'"{name}" must be true or false')


def choose_tools(tools: list[ToolSpec], choice: object) -> tuple[list[ToolSpec], tuple[str, ...]]:
    """OpenAI's ``tool_choice``: the tools the model gets, and those it must call one of (none: free)."""
    if choice is None or choice == "auto":
        return tools, ()
    if choice == "none":
        return [], ()
    if choice == "required":
        if not tools:
            raise bad_request('"tool_choice": "required" needs "tools"')
        return tools, tuple(tool.name for tool in tools)
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise bad_request('"tool_choice" must be "none", "auto", "required" or {"type": "function", ...}')
    named = [tool for tool in tools if tool.name == name]
    if not named:
        raise bad_request(f'"tool_choice" names the tool {name!r}, which is not in "tools"')
    return named, (name,)
