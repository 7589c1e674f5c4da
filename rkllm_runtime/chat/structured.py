"""Structured output: the schema in the prompt, the reply validated, one retry with the error.

The one implementation behind Ollama's ``format``, OpenAI's ``response_format`` and Home
Assistant's AI-task ``structure``. The request carries the schema, so an engine that can decode
under a grammar does (:mod:`.constrained`); the check and the retry remain for one that cannot.
Schemas are JSON Schema, checked with ``jsonschema``, which is imported on first use:
rkllm-server's start and most requests never need it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from .events import ChatResult
from .messages import ChatRequest
from .retry import UnfitReplyError, ask_fit

ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""The schema of "any JSON object" (Ollama's ``"json"``, OpenAI's ``json_object``)."""

INSTRUCTION = (
    "\n\nAnswer with a single JSON value and nothing else: no explanation, no code fence. "
    "It must follow this JSON schema:\n{schema}"
)
RETRY = "That answer was not valid ({error}). Reply again with only the JSON value."


class InvalidSchemaError(ValueError):
    """The schema itself is not a valid JSON Schema."""


class InvalidReplyError(UnfitReplyError):
    """The reply is not JSON, or does not follow the schema."""

    def correction(self) -> str:
        """The user turn that asks again, saying what was wrong."""
        return RETRY.format(error=self)


def check_schema(schema: object) -> dict[str, Any]:
    """The schema, or :class:`InvalidSchemaError` saying what is wrong with it."""
    from jsonschema import SchemaError, validators  # noqa: PLC0415 - on first use (module docstring)

    if not isinstance(schema, dict):
        raise InvalidSchemaError("the schema must be a JSON object")
    try:
        validators.validator_for(schema).check_schema(schema)
    except SchemaError as err:
        raise InvalidSchemaError(f"not a valid JSON schema: {err.message}") from err
    except RecursionError as err:
        raise InvalidSchemaError("the schema is nested too deeply") from err
    return schema


def instruction(schema: Mapping[str, Any]) -> str:
    """What the system prompt gains so that the model answers in JSON."""
    return INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False))


def strip_fence(text: str) -> str:
    """The text without a Markdown code fence around it."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    return text


def parse_reply(text: str, schema: Mapping[str, Any]) -> Any:
    """The reply's JSON value, or :class:`InvalidReplyError` saying why it does not do."""
    from jsonschema import FormatChecker, exceptions, validators  # noqa: PLC0415 - on first use (module docstring)

    validator = validators.validator_for(schema)(schema, format_checker=FormatChecker())
    try:
        data = json.loads(strip_fence(text))
        error = exceptions.best_match(validator.iter_errors(data))
    except ValueError as err:
        raise InvalidReplyError(f"not JSON: {err}") from err
    except RecursionError as err:
        raise InvalidReplyError("the JSON is nested too deeply") from err
    if error is not None:
        where = "".join(f"[{part!r}]" for part in error.absolute_path)
        raise InvalidReplyError(f"{where or 'the value'}: {error.message}")
    return data


async def answer(
    ask: Callable[[ChatRequest], Awaitable[ChatResult]], request: ChatRequest, schema: Mapping[str, Any]
) -> tuple[ChatResult, Any]:
    """Ask for JSON that follows ``schema``, retrying once; the last result and the data.

    A reply that calls tools is returned as it is, with ``None`` for the data: the caller
    runs them first. Raises the last :class:`InvalidReplyError` when no answer does.
    """

    def check(result: ChatResult) -> Any:
        return None if result.tool_calls else parse_reply(result.text, schema)

    asked = replace(request, system_prompt=request.system_prompt + instruction(schema), output_schema=schema)
    return await ask_fit(ask, asked, check)
