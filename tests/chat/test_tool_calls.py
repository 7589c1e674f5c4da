"""Reading tool calls from model text: formats, name mapping, argument repair, tested with tables."""

from __future__ import annotations

import pytest

from rkllm_runtime.chat.tool_calls import (
    MALFORMED_CALL_HINT,
    MalformedCallError,
    ParsedCall,
    Reading,
    block_start,
    malformed_call_result,
    next_block_start,
    object_end,
    parse_block,
    parse_json_call,
    read_block,
    repair_arguments,
    resolve_name,
    to_tool_call,
)

TOOLS = ["intent__HassTurnOn", "intent__HassTurnOff", "llm__GetDateTime"]


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


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ('  {"name": "x", "arguments": {"a": 1}}\n', ParsedCall("x", {"a": 1})),
        ('{"name": "x", "arguments": ""}', ParsedCall("x", {})),
        ('{"name": "x"}', ParsedCall("x", {})),
        (
            "<function=HassTurnOn><parameter=name>Kitchen</parameter><parameter=level>50</parameter></function>",
            ParsedCall("HassTurnOn", {"name": "Kitchen", "level": 50}),
        ),
    ],
    ids=["json-stripped", "empty-arguments-string", "no-arguments", "xml-function-form"],
)
def test_parse_block(block: str, expected: ParsedCall) -> None:
    assert parse_block(block) == expected


def test_repair_arguments_leaves_a_string_that_only_looks_like_json() -> None:
    assert repair_arguments({"a": "[oops]", "b": "{}"}) == {"a": "[oops]", "b": {}}


@pytest.mark.parametrize(
    ("call", "known", "expected"),
    [
        (ParsedCall("HassTurnOn", {"a": "", "b": "[1]"}), TOOLS, ("intent__HassTurnOn", {"b": [1]})),
        (ParsedCall("Anything", {"a": 1}), [], ("Anything", {"a": 1})),
    ],
    ids=["resolved-and-repaired", "no-tools-any-name"],
)
def test_to_tool_call(call: ParsedCall, known: list[str], expected: tuple[str, dict[str, object]]) -> None:
    made = to_tool_call(call, known)
    assert (made.name, made.arguments) == expected
    assert made.id.startswith("call_")


def test_to_tool_call_names_the_tools_for_an_unknown_one() -> None:
    with pytest.raises(MalformedCallError) as raised:
        to_tool_call(ParsedCall("Open", {}), TOOLS[:2])
    assert (
        str(raised.value) == 'there is no tool "Open"; the tools are intent__HassTurnOn, intent__HassTurnOff'
    )


def test_malformed_call_result_tells_the_error_and_the_form() -> None:
    assert malformed_call_result('the tool call has no "name"') == {
        "error": "MalformedToolCall",
        "error_text": f'the tool call has no "name". {MALFORMED_CALL_HINT}',
    }


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ('{"a": 1}', 0, 8),
        ('{"a": {"b": 1}} rest', 0, 15),
        ('{"a": "}"}', 0, 10),
        ('{"a": "\\"}"}', 0, 12),
        ("x{}", 1, 3),
        ('{"a": ', 0, 0),
    ],
    ids=["flat", "nested", "brace-in-a-string", "escaped-quote", "from-start", "still-open"],
)
def test_object_end(text: str, start: int, end: int) -> None:
    assert object_end(text, start) == end


ON = '{"name": "HassTurnOn", "arguments": {}}'
BLOCK_STARTS = {
    "nothing-yet": ("", False, (Reading.UNDECIDED, 0)),
    "nothing": ("", True, (Reading.TEXT, 0)),
    "only-spaces-yet": ("  ", False, (Reading.UNDECIDED, 0)),
    "an-object": (f"  {ON}", False, (Reading.CALL, 2)),
    "a-fence-line": (f"```json\n{ON}", False, (Reading.CALL, 8)),
    "a-lead-then-a-tag": (f"Sure! <tool_call>{ON}", False, (Reading.CALL, 6)),
    "a-lead-line-then-an-object": (f"Sure:\n{ON}", False, (Reading.CALL, 6)),
    "a-line-not-ended-yet": (f"Sure: {ON}", False, (Reading.UNDECIDED, 0)),
    "a-line-ended": ("Sure", True, (Reading.TEXT, 0)),
    "a-lead-line-then-nothing-yet": ("Sure:\n", False, (Reading.UNDECIDED, 0)),
    "a-lead-line-then-nothing": ("Sure:\n", True, (Reading.TEXT, 0)),
    "a-lead-line-then-a-fence-begun": ("Sure:\n``", False, (Reading.UNDECIDED, 0)),
    "two-lines-of-text": ("Sure:\nno", True, (Reading.TEXT, 0)),
    "a-lead-too-long": ("x" * 101 + f"\n{ON}", False, (Reading.TEXT, 0)),
}  # fmt: skip


@pytest.mark.parametrize(("text", "final", "expected"), BLOCK_STARTS.values(), ids=BLOCK_STARTS.keys())
def test_block_start(text: str, final: bool, expected: tuple[Reading, int]) -> None:
    assert block_start(text, final=final) == expected


@pytest.mark.parametrize(
    ("text", "start"),
    [("{}", 0), ('x\n  {"a": 1}', 4), ("say <tool_call>", 4), ("abc", -1), ("a {b", -1)],
    ids=["an-object", "an-object-starting-a-line", "a-tag", "nothing", "an-object-inside-a-line"],
)
def test_next_block_start(text: str, start: int) -> None:
    assert next_block_start(text) == start


UNKNOWN = '{"name": "Open", "arguments": {}}'
TAGGED = f"<tool_call>{ON}</tool_call>"
OPEN = '<tool_call>{"name": '
# Text and whether it is final, then the block's reading, end and raw JSON, its call's name, its error.
READ_BLOCKS = {
    "bare-call": (ON, True, (Reading.CALL, len(ON), ON, "intent__HassTurnOn", "")),
    "tagged-call": (TAGGED, True, (Reading.CALL, 11 + len(ON), ON, "intent__HassTurnOn", "")),
    "unknown-tool": (UNKNOWN, True, (Reading.CALL, len(UNKNOWN), UNKNOWN, None, 'there is no tool "Open"')),
    "tagged-unclosed-yet": (OPEN, False, (Reading.UNDECIDED, 0, "", None, "")),
    "tagged-unclosed": (OPEN, True, (Reading.CALL, 20, '{"name": ', None, "not valid JSON")),
    "bare-unclosed": ('{"name": ', True, (Reading.TEXT, 0, "", None, "")),
    "json-that-is-no-call": ('```json\n{"city": "Paris"}\n```', True, (Reading.TEXT, 25, "", None, "")),
    "a-tag-alone-yet": ("<tool_call>", False, (Reading.UNDECIDED, 0, "", None, "")),
    "a-tag-alone": ("<tool_call>", True, (Reading.TEXT, 11, "", None, "")),
    "a-tag-then-text": ("<tool_call>hi", True, (Reading.TEXT, 11, "", None, "")),
    "a-fence-begun": ("`", False, (Reading.UNDECIDED, 0, "", None, "")),
}  # fmt: skip


@pytest.mark.parametrize(("text", "final", "expected"), READ_BLOCKS.values(), ids=READ_BLOCKS.keys())
def test_read_block(text: str, final: bool, expected: tuple[Reading, int, str, str | None, str]) -> None:
    reading, end, raw, name, error = expected
    block = read_block(text, 0, TOOLS, final=final)
    assert (block.reading, block.end, block.raw) == (reading, end, raw)
    assert (block.call.name if block.call else None) == name
    assert error in block.error
    assert bool(block.error) is bool(error)
