"""The stream parser: a reply, whole or token by token, as events; tested with tables."""

from __future__ import annotations

import pytest

from rkllm_runtime.chat import MalformedToolCall, TextDelta, ThinkingDelta, ToolCallDelta
from rkllm_runtime.chat.parser import StreamParser
from rkllm_runtime.chat.tool_calls import MalformedCallError, parse_block

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


def test_a_call_comes_out_as_soon_as_its_json_is_complete() -> None:
    parser = StreamParser(TOOLS)
    chunks = ["<tool_call>", "\n", '{"name": "HassTurnOn", ', '"arguments": {"name": "x}"}', "}"]
    events = [event for chunk in chunks[:-1] for event in parser.feed(chunk)]
    assert events == []  # a brace inside a string does not end it
    (event,) = parser.feed(chunks[-1])
    assert isinstance(event, ToolCallDelta)
    assert (event.call.name, event.call.arguments) == ("intent__HassTurnOn", {"name": "x}"})
    assert parser.feed("\n</tool_call>") == []  # the closing tokens say nothing more
    assert parser.feed("Done.") == []  # nor does text after a call: the model speaks once it has the result
    assert parser.finish() == []


def test_a_run_ended_after_the_calls_json_finishes_cleanly() -> None:
    parser = StreamParser(TOOLS)
    events = parser.feed('<tool_call>\n{"name": "HassTurnOff", "arguments": {}}\n')
    assert [type(event) for event in events] == [ToolCallDelta]
    assert parser.finish() == []


ON = '{"name": "HassTurnOn", "arguments": {"name": "Kitchen"}}'
OFF = '{"name": "intent__HassTurnOff", "arguments": {"name": "Hall"}}'
KITCHEN_ON = ("intent__HassTurnOn", {"name": "Kitchen"})
HALL_OFF = ("intent__HassTurnOff", {"name": "Hall"})

# Every form a call written as text takes, whole and token by token.
WRITTEN_CALLS = {
    "fenced-json": (f"```json\n{ON}\n```", [KITCHEN_ON]),
    "fenced": (f"```\n{ON}\n```", [KITCHEN_ON]),
    "bare": (ON, [KITCHEN_ON]),
    "bare-with-parameters": ('{"name": "HassTurnOn", "parameters": {"name": "Kitchen"}}', [KITCHEN_ON]),
    "arguments-as-a-json-string": ('{"name": "HassTurnOn", "arguments": "{\\"name\\": \\"Kitchen\\"}"}',
                                   [KITCHEN_ON]),
    "with-its-api-prefix": ('{"name": "intent__HassTurnOn", "arguments": {"name": "Kitchen"}}', [KITCHEN_ON]),
    "with-the-2026.10-prefix": ('{"name": "assist__intent__HassTurnOn", "arguments": {"name": "Kitchen"}}',
                                [KITCHEN_ON]),
    "only-the-closing-tag": (f"{ON}\n</tool_call>", [KITCHEN_ON]),
    "no-closing-tag": (f"<tool_call>\n{ON}", [KITCHEN_ON]),
    "tools-tag": (f"<tools>\n{ON}\n</tools>", [KITCHEN_ON]),
    "function-call-tag": (f"<function_call>{ON}</function_call>", [KITCHEN_ON]),
    "call-then-a-sentence": (f"{ON}\nI have turned on the kitchen light.", [KITCHEN_ON]),
    "fenced-call-then-text": (f"```json\n{ON}\n```\nThis turns on the kitchen light.\n\nAnything else?",
                              [KITCHEN_ON]),
    "two-calls-on-separate-lines": (f"{ON}\n{OFF}", [KITCHEN_ON, HALL_OFF]),
    "two-fenced-calls": (f"```json\n{ON}\n```\n```json\n{OFF}\n```", [KITCHEN_ON, HALL_OFF]),
    "call-then-the-models-own-markup": (f"{ON}\n<tool_call>\n{OFF}\n</tool_call>", [KITCHEN_ON, HALL_OFF]),
    "sentence-then-fenced-call": (
        "To turn on the kitchen light, you can use the `intent__HassTurnOn` function with the following:\n"
        f"```json\n{ON}\n```", [KITCHEN_ON],
    ),
    "sentence-and-fence-on-one-line": (f"Sure! ```json\n{ON}\n```", [KITCHEN_ON]),
    "sentence-then-blank-line-then-call": (f"Sure:\n\n{ON}", [KITCHEN_ON]),
    "sentence-then-the-models-own-markup": (f"Sure:\n<tool_call>\n{ON}\n</tool_call>", [KITCHEN_ON]),
}  # fmt: skip


@pytest.mark.parametrize("by_token", [False, True], ids=["whole", "by-token"])
@pytest.mark.parametrize(("reply", "expected"), WRITTEN_CALLS.values(), ids=WRITTEN_CALLS.keys())
def test_calls_written_as_text_are_calls_and_not_said(
    reply: str, expected: list[tuple[str, dict[str, object]]], by_token: bool
) -> None:
    events = parse(list(reply) if by_token else [reply])
    assert calls(events) == expected
    assert not [event for event in events if isinstance(event, TextDelta | MalformedToolCall)]


def test_thinking_then_a_bare_call() -> None:
    events = parse([f"<think>The kitchen.</think>\n{ON}"])
    assert events[0] == ThinkingDelta("The kitchen.")
    assert calls(events[1:]) == [KITCHEN_ON]
    assert len(events) == 2


# Replies that mention a tool, show JSON in prose, or hold JSON that is no call: said as written.
PROSE = {
    "mentions-a-tool": "You can use the HassTurnOn tool to turn on the kitchen light.",
    "json-inside-a-sentence": f"Send {ON} to turn it on.",
    "json-after-two-lines": f"I cannot do that myself.\nHere is an example:\n```json\n{ON}\n```",
    "paragraph-then-example": f"HassTurnOn turns devices on.\n\nFor example:\n```json\n{ON}\n```\nEasy.",
    "lead-too-long": "The kitchen light can be turned on by calling the tool that Home Assistant offers for "
                     f"turning devices on, like this:\n```json\n{ON}\n```",
    "json-without-a-name": '{"city": "Paris", "temperature": 21}',
    "a-name-but-no-call": '{"name": "Bob", "age": 3}',
    "unreadable-json-without-a-tag": '{"name": HassTurnOn, arguments}',
    "code-that-is-not-json": '```python\nturn_on("kitchen")\n```',
    "a-list": "Here are the lights:\n- Kitchen\n- Hall",
    "a-short-answer": "It is 21 degrees.",
}  # fmt: skip


@pytest.mark.parametrize("by_token", [False, True], ids=["whole", "by-token"])
@pytest.mark.parametrize("reply", PROSE.values(), ids=PROSE.keys())
def test_prose_is_said_and_never_acted_on(reply: str, by_token: bool) -> None:
    assert parse(list(reply) if by_token else [reply]) == [TextDelta(reply)]


UNKNOWN = '{"name": "HassOpenTheDoor", "arguments": {"name": "Front"}}'
MALFORMED = {
    "unknown-tool-bare": (UNKNOWN, UNKNOWN, 'there is no tool "HassOpenTheDoor"'),
    "unknown-tool-fenced": (f"```json\n{UNKNOWN}\n```", UNKNOWN, 'there is no tool "HassOpenTheDoor"'),
    "unknown-tool-in-the-models-markup": (f"<tool_call>{UNKNOWN}</tool_call>", UNKNOWN, "the tools are"),
    "unreadable-json-after-a-tag": ('<tools>{"name": HassTurnOn}</tools>', '{"name": HassTurnOn}',
                                    "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize(("reply", "raw", "error"), MALFORMED.values(), ids=MALFORMED.keys())
def test_calls_that_cannot_run_are_malformed_and_not_said(reply: str, raw: str, error: str) -> None:
    """The model is then told what is wrong, with the tools' names, and asked again."""
    (event,) = parse([reply])
    assert isinstance(event, MalformedToolCall)
    assert event.raw == raw
    assert error in event.error
    if "there is no tool" in error:
        assert event.error.endswith("the tools are intent__HassTurnOn, intent__HassTurnOff, llm__GetDateTime")


def test_a_written_call_comes_out_as_soon_as_its_json_is_complete() -> None:
    """So that the run can end there, as for the model's own markup."""
    parser = StreamParser(TOOLS)
    assert parser.feed("Sure:\n```json\n" + ON[:-1]) == []
    (event,) = parser.feed("}")
    assert isinstance(event, ToolCallDelta)
    assert parser.feed("\n```\nDone!") == []
    assert parser.finish() == []


def test_a_long_answer_is_said_once_it_cannot_introduce_a_call() -> None:
    parser = StreamParser(TOOLS)
    assert parser.feed("It is sunny") == []  # may still be a line introducing a call
    assert parser.feed(" today.\nTomorrow") == [TextDelta("It is sunny today.\nTomorrow")]
    assert parser.feed(" too.") == [TextDelta(" too.")]
