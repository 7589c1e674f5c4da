"""Structured output: schema checks, reply validation and the one retry."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rkllm_runtime.chat import ChatRequest, ChatResult, Message
from rkllm_runtime.chat.structured import (
    ANY_OBJECT,
    InvalidReplyError,
    InvalidSchemaError,
    answer,
    check_schema,
    parse_reply,
)
from rkllm_runtime.types import PerfStats

SCHEMA = {"type": "object", "properties": {"count": {"type": "integer"}}, "required": ["count"]}


@pytest.mark.parametrize(
    ("text", "schema", "data"),
    [
        ('{"count": 3}', SCHEMA, {"count": 3}),
        ('```json\n{"count": 3}\n```', SCHEMA, {"count": 3}),
        ("  [1, 2] ", {"type": "array"}, [1, 2]),
        ('{"a": null}', ANY_OBJECT, {"a": None}),
    ],
)
def test_valid_replies(text: str, schema: dict[str, Any], data: object) -> None:
    assert parse_reply(text, schema) == data


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"count": 3', "not JSON"),
        ('{"count": "three"}', "['count']: 'three' is not of type 'integer'"),
        ("{}", "the value: 'count' is a required property"),
        ("[" * 100_000 + "]" * 100_000, "the JSON is nested too deeply"),
    ],
)
def test_invalid_replies_say_why(text: str, error: str) -> None:
    with pytest.raises(InvalidReplyError, match="^" + re.escape(error)):
        parse_reply(text, SCHEMA)


def test_a_reply_nested_deeper_than_a_recursive_schema_can_check() -> None:
    schema = {"type": "array", "items": {"$ref": "#"}}
    with pytest.raises(InvalidReplyError, match="nested too deeply"):
        parse_reply("[" * 5000 + "]" * 5000, schema)


@pytest.mark.parametrize("schema", [[], {"type": "nonsense"}, {"minimum": "one"}])
def test_invalid_schemas(schema: object) -> None:
    with pytest.raises(InvalidSchemaError):
        check_schema(schema)


def _result(text: str) -> ChatResult:
    return ChatResult(text, (), PerfStats(), prompt_tokens=0, cached_tokens=0, cache_hit=False, kv_tokens=0)


async def test_answer_retries_once_with_the_error() -> None:
    asked: list[ChatRequest] = []
    replies = iter(['{"count": "x"}', '{"count": 2}'])

    async def ask(request: ChatRequest) -> ChatResult:
        asked.append(request)
        return _result(next(replies))

    result, data = await answer(ask, ChatRequest("Be brief.", [Message("user", "how many?")]), SCHEMA)
    assert (data, result.text) == ({"count": 2}, '{"count": 2}')
    first, retry = asked
    assert first.system_prompt.startswith("Be brief.\n\nAnswer with a single JSON value")
    assert '"required": ["count"]' in first.system_prompt
    assert [m.role for m in retry.messages] == ["user", "assistant", "user"]
    assert "'x' is not of type 'integer'" in retry.messages[-1].content


async def test_answer_gives_up_after_the_retry() -> None:
    async def ask(request: ChatRequest) -> ChatResult:
        return _result("no")

    with pytest.raises(InvalidReplyError, match="not JSON"):
        await answer(ask, ChatRequest("", [Message("user", "how many?")]), SCHEMA)
