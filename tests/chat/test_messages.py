"""Conversations as the engine sees them and the RKLLM inputs they become, tested with tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from rkllm_runtime import Prompt, Role
from rkllm_runtime.chat import Message, ToolCall, ToolSpec
from rkllm_runtime.chat.messages import (
    Split,
    compact_json,
    current_turn_start,
    drop_oldest_half,
    estimated_tokens,
    fingerprint,
    fit_history,
    history_text,
    lean_schema,
    new_call_id,
    new_input,
    rebuild_input,
    render_tools,
    split_new,
    system_key,
    trim_turns,
    user_turn_starts,
)

HI, REPLY, MORE = Message("user", "hi"), Message("assistant", "Hello!"), Message("user", "and more")
CALL = Message("assistant", "", tool_calls=(ToolCall("HassTurnOn", {"name": "x"}, id="call_1"),))
RESULT = Message("tool", '{"success": true}', name="HassTurnOn")
TEXT_RESULT = Message("tool", "not json", name="GetDateTime")
QUOTED_CALL = '<tool_call>{"name":"HassTurnOn","arguments":{"name":"x"}}</tool_call>'


def test_compact_json_has_no_spaces_and_keeps_unicode() -> None:
    assert compact_json({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_new_call_ids_are_openais_form_and_fresh() -> None:
    ids = {new_call_id() for _ in range(3)}
    assert len(ids) == 3
    assert all(call_id.startswith("call_") and len(call_id) == 29 for call_id in ids)


def test_a_call_as_text_is_the_models_markup_compact() -> None:
    assert CALL.tool_calls[0].as_text() == QUOTED_CALL


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "object", "additionalProperties": False}, {"type": "object"}),
        ({"type": "object", "additionalProperties": True}, {"type": "object", "additionalProperties": True}),
        ({"type": "object", "properties": {}}, {"type": "object"}),
        (
            {
                "anyOf": [
                    {"type": "object", "properties": {}, "additionalProperties": False},
                    {"type": "null"},
                ]
            },
            {"anyOf": [{"type": "object"}, {"type": "null"}]},
        ),
        ("string", "string"),
    ],
    ids=["closed-object", "open-object", "no-properties", "nested-in-a-list", "not-a-schema-object"],
)
def test_lean_schema(schema: Any, expected: Any) -> None:
    assert lean_schema(schema) == expected


def test_tools_are_rendered_compact_and_lean() -> None:
    tool = ToolSpec(
        "HassTurnOn",
        {"type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": False},
        "Turns on a device",
    )
    assert render_tools([tool, ToolSpec("GetDateTime", {"type": "object", "properties": {}})]) == (
        '[{"type":"function","function":{"name":"HassTurnOn","description":"Turns on a device",'
        '"parameters":{"type":"object","properties":{"name":{"type":"string"}}}}},'
        '{"type":"function","function":{"name":"GetDateTime","parameters":{"type":"object"}}}]'
    )


def test_render_tools_without_tools_is_empty() -> None:
    assert render_tools([]) == ""


def test_system_key_tells_the_prompt_from_its_tools() -> None:
    assert system_key("a", "b") == system_key("a", "b")
    assert system_key("a", "b") != system_key("a", "")
    assert system_key("ab", "") != system_key("a", "b")


@pytest.mark.parametrize(
    ("messages", "history", "new"),
    [
        ((HI,), (), (HI,)),
        ((HI, REPLY, MORE), (HI, REPLY), (MORE,)),
        ((HI, CALL, RESULT), (HI, CALL), (RESULT,)),
        ((HI, REPLY), (HI, REPLY), ()),
    ],
    ids=["first-message", "follow-up", "tool-result", "nothing-new"],
)
def test_split_new(
    messages: tuple[Message, ...], history: tuple[Message, ...], new: tuple[Message, ...]
) -> None:
    assert split_new(messages) == Split(history, new)


@pytest.mark.parametrize(
    ("messages", "start"),
    [((HI, REPLY, MORE), 2), ((HI, REPLY, HI, CALL, RESULT), 2), ((CALL, RESULT), 0)],
    ids=["a-new-user-message-starts-its-own-turn", "results-go-with-their-question", "no-question"],
)
def test_current_turn_start(messages: tuple[Message, ...], start: int) -> None:
    assert current_turn_start(split_new(messages)) == start


def test_user_turn_starts() -> None:
    assert user_turn_starts((HI, REPLY, MORE, CALL, RESULT)) == [0, 2]


@pytest.mark.parametrize(
    ("max_turns", "kept"),
    [
        (0, (HI, REPLY, MORE, REPLY)),
        (1, (MORE, REPLY)),
        (2, (HI, REPLY, MORE, REPLY)),
        (3, (HI, REPLY, MORE, REPLY)),
    ],
    ids=["all", "last-turn", "as-many-as-there-are", "more-than-there-are"],
)
def test_trim_turns(max_turns: int, kept: tuple[Message, ...]) -> None:
    assert trim_turns((HI, REPLY, MORE, REPLY), max_turns) == kept


@pytest.mark.parametrize(
    ("texts", "tokens"),
    [(("abcdefgh",), 2), (("a  b   c d", "xyz"), 2), (("éé",), 1), ((), 0)],
    ids=["bytes-over-four", "whitespace-collapsed-and-summed", "utf8-bytes", "nothing"],
)
def test_estimated_tokens(texts: tuple[str, ...], tokens: int) -> None:
    assert estimated_tokens(*texts) == tokens


@pytest.mark.parametrize(
    ("budget", "kept"),
    [(100, (HI, REPLY, MORE, REPLY)), (3, (MORE, REPLY)), (0, ())],
    ids=["all-fits", "latest-turn-fits", "nothing-fits"],
)
def test_fit_history(budget: int, kept: tuple[Message, ...]) -> None:
    """Estimated tokens: "hi" 0, "Hello!" 1, "and more" 2."""
    assert tuple(fit_history((HI, REPLY, MORE, REPLY), budget)) == kept


@pytest.mark.parametrize(
    ("history", "kept"),
    [
        ((HI, REPLY, MORE, REPLY, HI, REPLY), (MORE, REPLY, HI, REPLY)),
        ((HI, REPLY, MORE, REPLY), (MORE, REPLY)),
        ((HI, REPLY), ()),
    ],
    ids=["three-turns", "two-turns", "one-turn"],
)  # fmt: skip
def test_drop_oldest_half(history: tuple[Message, ...], kept: tuple[Message, ...]) -> None:
    assert tuple(drop_oldest_half(history)) == kept


NEW_INPUTS = {
    "user-text": ((MORE,), "", Prompt("and more", Role.USER, False)),
    "user-texts-after-the-context": (
        (HI, MORE), "It is noon.", Prompt("It is noon.\nhi\nand more", Role.USER, False),
    ),
    "one-tool-result-as-it-is": ((RESULT,), "It is noon.", Prompt('{"success": true}', Role.TOOL, False)),
    "several-tool-results-as-one-array": (
        (RESULT, TEXT_RESULT), "", Prompt('[{"success":true},"not json"]', Role.TOOL, False),
    ),
}  # fmt: skip


@pytest.mark.parametrize(("new", "context", "expected"), NEW_INPUTS.values(), ids=NEW_INPUTS.keys())
def test_new_input(new: Sequence[Message], context: str, expected: Prompt) -> None:
    assert new_input(new, False, context) == expected


def test_new_input_carries_thinking() -> None:
    assert new_input((MORE,), True).enable_thinking


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (REPLY, "Hello!"),
        (CALL, QUOTED_CALL),
        (Message("assistant", "On it.", CALL.tool_calls), "On it." + QUOTED_CALL),
        (RESULT, '{"success": true}'),
    ],
    ids=["text", "a-call", "text-and-a-call", "a-tool-result"],
)  # fmt: skip
def test_history_text(message: Message, text: str) -> None:
    assert history_text(message) == text


REBUILT = {
    "no-history": ((), (MORE,), Prompt("and more", Role.USER, False)),
    "history-quoted-before-the-question": (
        (HI, REPLY), (MORE,),
        Prompt("Earlier in this conversation:\nUser: hi\nAssistant: Hello!\n\nand more", Role.USER, False),
    ),
    "a-tool-result-stays-a-tool-response": (
        (HI, CALL), (RESULT,),
        Prompt(f'Earlier in this conversation:\nUser: hi\nAssistant: {QUOTED_CALL}\n\n{{"success": true}}',
               Role.TOOL, False),
    ),
}  # fmt: skip


@pytest.mark.parametrize(("history", "new", "expected"), REBUILT.values(), ids=REBUILT.keys())
def test_rebuild_input(history: Sequence[Message], new: Sequence[Message], expected: Prompt) -> None:
    assert rebuild_input(history, new, False) == expected


def called(call: ToolCall) -> Message:
    return Message("assistant", "", tool_calls=(call,))


FINGERPRINTS = {
    "assistant-whitespace-collapsed": ([REPLY], [Message("assistant", " Hello!\n")], True),
    "user-whitespace-kept": ([HI], [Message("user", "hi ")], False),
    "other-call-arguments": ([CALL], [called(ToolCall("HassTurnOn", {"name": "y"}))], False),
    "call-ids-ignored": ([CALL], [called(ToolCall("HassTurnOn", {"name": "x"}, id="call_2"))], True),
    "the-tool-named": ([RESULT], [Message("tool", RESULT.content, name="Other")], False),
    "order": ([HI, MORE], [MORE, HI], False),
}  # fmt: skip


@pytest.mark.parametrize(("first", "second", "same"), FINGERPRINTS.values(), ids=FINGERPRINTS.keys())
def test_fingerprint(first: list[Message], second: list[Message], same: bool) -> None:
    assert (fingerprint(first) == fingerprint(second)) is same


def test_a_fingerprint_extends_an_earlier_one() -> None:
    assert fingerprint([HI, REPLY]) == fingerprint([REPLY], fingerprint([HI]))
    assert fingerprint([]) == ""
