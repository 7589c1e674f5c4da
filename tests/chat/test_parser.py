"""The stream parser and tool-call reading: pure functions, tested with tables."""

from __future__ import annotations

import pytest

from rkllm_runtime.chat import MalformedToolCall, TextDelta, ThinkingDelta, ToolCallDelta
from rkllm_runtime.chat.parser import StreamParser
from rkllm_runtime.chat.tool_calls import (
    MalformedCallError,
    parse_block,
    parse_json_call,
    repair_arguments,
    resolve_name,
)

TOOLS = ["intent__HassTurnOn", "intent__HassTurnOff", "llm__GetDateTime"]


def parse(chunks: list[str], tools: list[str] = TOOLS) -> list[object]:
    parser = StreamParser(tools)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    events += parser.finish()
    merged: list[object] = []
    for event in events:  # adjacent deltas of one kind joined, as a reader sees them
        if merged and type(merged[-1]) is type(event) and isinstance(event, TextDelta | ThinkingDelta):
            merged[-1] = type(event)(merged[-1].text + event.text)  # type: ignore[attr-defined]
        else:
            merged.append(event)
    return merged


def calls(events: list[object]) -> list[tuple[str, dict[str, object]]]:
    return [(e.call.name, e.call.arguments) for e in events if isinstance(e, ToolCallDelta)]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (["Hello", " there"], [TextDelta("Hello there")]),
        (["  \n", "Hi"], [TextDelta("Hi")]),
        (["<think>\nhmm</think>\n\nIt is sunny."], [ThinkingDelta("hmm"), TextDelta("It is sunny.")]),
        (["<thi", "nk>\nhm", "m</th", "ink>\n\nSunny."], [ThinkingDelta("hmm"), TextDelta("Sunny.")]),
        (["a < b <", "t and more"], [TextDelta("a < b <t and more")]),
        (["<think>cut short"], [ThinkingDelta("cut short")]),
        (
            ["<think>", "\n", "hmm", "\n", "</think>", "\n\n", "Sunny."],
            [ThinkingDelta("hmm\n"), TextDelta("Sunny.")],
        ),
    ],
    ids=[
        "plain",
        "leading-space",
        "thinking",
        "tags-split-across-chunks",
        "lone-angle",
        "unclosed-think",
        "token-by-token",
    ],
)
def test_text_and_thinking(chunks: list[str], expected: list[object]) -> None:
    assert parse(chunks) == expected


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (
            ['<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}\n</tool_call>'],
            [("intent__HassTurnOn", {"name": "Kitchen"})],
        ),
        (
            ["<tool_", 'call>{"name": "intent__HassTurnOff", ', '"arguments": {}}</tool', "_call>"],
            [("intent__HassTurnOff", {})],
        ),
        (
            ["<tool_call><function=HassTurnOn><parameter=name>Kitchen</parameter>"
             "<parameter=brightness>50</parameter></function></tool_call>"],
            [("intent__HassTurnOn", {"name": "Kitchen", "brightness": 50})],
        ),
        (['{"name": "GetDateTime", "arguments": {}}'], [("llm__GetDateTime", {})]),
        (['```json\n{"name": "hassturnon", "parameters": "{\\"area\\": \\"hall\\"}"}\n```'],
         [("intent__HassTurnOn", {"area": "hall"})]),
        (['<tool_call>{"name": "HassTurnOn", "arguments": {"name": "", "area": "[\\"a\\"]"}}</tool_call>'],
         [("intent__HassTurnOn", {"area": ["a"]})]),
    ],
    ids=["json", "split-across-chunks", "xml-function-form", "bare-json", "fenced-string-args", "repaired"],
)  # fmt: skip
def test_tool_calls(chunks: list[str], expected: list[tuple[str, dict[str, object]]]) -> None:
    assert calls(parse(chunks)) == expected


def test_bare_json_of_an_unknown_tool_is_text() -> None:
    assert parse(['{"name": "Unknown", "arguments": {}}']) == [
        TextDelta('{"name": "Unknown", "arguments": {}}')
    ]


def test_json_without_tools_is_text_as_it_streams() -> None:
    assert parse(['{"a":', " 1}"], tools=[]) == [TextDelta('{"a": 1}')]


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ('{"name": HassTurnOn, arguments}', "not valid JSON"),
        ('{"arguments": {}}', 'has no "name"'),
        ('{"name": "x", "arguments": "{oops"}', '"arguments" are not valid JSON'),
        ('{"name": "x", "arguments": [1]}', "must be an object"),
    ],
)
def test_malformed_calls_say_what_is_wrong(block: str, error: str) -> None:
    (event,) = parse([f"<tool_call>{block}</tool_call>"])
    assert isinstance(event, MalformedToolCall)
    assert event.raw == block
    assert error in event.error
    with pytest.raises(MalformedCallError, match=error.replace('"', ".")):
        parse_block(block)


def test_unclosed_call_is_malformed() -> None:
    (event,) = parse(['<tool_call>{"name": "HassTurnOn"'])
    assert isinstance(event, MalformedToolCall)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("intent__HassTurnOn", "intent__HassTurnOn"),
        ("HassTurnOn", "intent__HassTurnOn"),
        ("INTENT__hassturnon", "intent__HassTurnOn"),
        ("Nothing", "Nothing"),
    ],
)
def test_resolve_name(name: str, expected: str) -> None:
    assert resolve_name(name, TOOLS) == expected


def test_ambiguous_suffix_is_left_alone() -> None:
    assert resolve_name("Turn", ["a__Turn", "b__Turn"]) == "Turn"


# Assist and the admin-only "Home Assistant" API together: each prefixes its tools only where
# the two clash (Home Assistant 2026.11); 2026.10 prefixed all with the API's id.
MERGED = [
    "intent__HassTurnOn",
    "assist__llm__GetDateTime",
    "homeassistant__llm__GetDateTime",
    "config__ListAreas",
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HassTurnOn", "intent__HassTurnOn"),
        ("assist__intent__HassTurnOn", "intent__HassTurnOn"),  # the 2026.10 name of the same tool
        ("ListAreas", "config__ListAreas"),
        ("homeassistant__GetDateTime", "homeassistant__llm__GetDateTime"),
        ("ASSIST__llm__getdatetime", "assist__llm__GetDateTime"),
        ("GetDateTime", "GetDateTime"),  # either API's: left for the model to be told
        ("llm__GetDateTime", "llm__GetDateTime"),
    ],
)
def test_unprefixed_and_clashing_names_of_several_apis(name: str, expected: str) -> None:
    assert resolve_name(name, MERGED) == expected


def test_repair_arguments() -> None:
    assert repair_arguments({"a": None, "b": "", "c": '{"x": 1}', "d": "[oops", "e": 0}) == {
        "c": {"x": 1},
        "d": "[oops",
        "e": 0,
    }


def test_parse_json_call_reads_parameters_alias() -> None:
    assert parse_json_call('{"name": "x", "parameters": {"a": 1}}').arguments == {"a": 1}


def test_a_call_comes_out_as_soon_as_its_json_is_complete() -> None:
    parser = StreamParser(TOOLS)
    chunks = ["<tool_call>", "\n", '{"name": "HassTurnOn", ', '"arguments": {"name": "x}"}', "}"]
    events = [event for chunk in chunks[:-1] for event in parser.feed(chunk)]
    assert events == []  # a brace inside a string does not end it
    (event,) = parser.feed(chunks[-1])
    assert isinstance(event, ToolCallDelta)
    assert (event.call.name, event.call.arguments) == ("intent__HassTurnOn", {"name": "x}"})
    assert parser.feed("\n</tool_call>") == []  # the closing tokens say nothing more
    assert parser.feed("Done.") == [TextDelta("Done.")]
    assert parser.finish() == []


def test_a_run_ended_after_the_calls_json_finishes_cleanly() -> None:
    parser = StreamParser(TOOLS)
    events = parser.feed('<tool_call>\n{"name": "HassTurnOff", "arguments": {}}\n')
    assert [type(event) for event in events] == [ToolCallDelta]
    assert parser.finish() == []
