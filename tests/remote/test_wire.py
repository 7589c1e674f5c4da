"""Chat requests and events survive JSON both ways (the server's native stream)."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from rkllm_runtime.chat import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    EngineState,
    EngineStats,
    EngineStatus,
    Finished,
    KVMode,
    MalformedToolCall,
    Message,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.errors import ERRORS, ContextOverflowError, ErrorKind, RKLLMError
from rkllm_runtime.remote.wire import (
    WireError,
    error_from_dict,
    error_to_dict,
    event_from_dict,
    event_to_dict,
    request_from_dict,
    request_to_dict,
    stats_from_dict,
    stats_to_dict,
    status_from_dict,
    status_to_dict,
)
from rkllm_runtime.types import ModelParams, PerfStats, Sampling, TokenLogprob, TopLogprob

CALL = ToolCall("HassTurnOn", {"name": "Kitchen light"}, id="call_1")


def test_a_request_round_trips() -> None:
    request = ChatRequest(
        system_prompt="You are a voice assistant.",
        messages=[
            Message("user", "kitchen light on"),
            Message("assistant", "", tool_calls=(CALL,)),
            Message("tool", '{"success": true}', name="HassTurnOn"),
        ],
        tools=[ToolSpec("HassTurnOn", {"type": "object"}, "Turns on a device")],
        conversation_id="01J",
        enable_thinking=True,
        max_new_tokens=64,
        sampling=Sampling(top_k=5, temperature=0.2),
        max_history_turns=3,
        malformed_call_retries=0,
        stop=("Goodbye",),
        context="It is 08:30 on Thursday.",
        output_schema={"type": "object", "properties": {"state": {"enum": ["on", "off"]}}},
        call_tools=("HassTurnOn",),
        top_logprobs=2,
    )
    again = request_from_dict(json.loads(json.dumps(request_to_dict(request))))
    assert again == request


EVENTS = [
    TextDelta("Hello"),
    ThinkingDelta("Hm."),
    ToolCallDelta(CALL),
    MalformedToolCall('{"name": HassTurnOn}', "not JSON"),
    Finished(ChatResult("Hi", (CALL,), PerfStats(1.5, 10, 2.5, 3, 100.0), 500, 490, True, 503)),
]


@pytest.mark.parametrize("event", EVENTS)
def test_events_round_trip(event: ChatEvent) -> None:
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_a_result_with_log_probabilities_round_trips() -> None:
    logprobs = (TokenLogprob("on", -0.5, (TopLogprob("on", -0.5), TopLogprob("off", -1.2))),)
    result = ChatResult("on", (), PerfStats(1.5, 10, 2.5, 1, 100.0), 500, 490, True, 503, 1, logprobs, True)
    event = Finished(result)
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


def test_every_kind_of_event_is_tried() -> None:
    assert [type(event) for event in EVENTS] == list(get_args(ChatEvent))


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"system_prompt": "x"},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": "x"}]},
        {"messages": "hi"},
        {"messages": [5]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": [{"role": "assistant", "tool_calls": [{"name": "x", "arguments": "on"}]}]},
        {"messages": [], "tools": [{"name": "x"}]},
        {"messages": [], "max_new_tokens": "64"},
        {"messages": [], "enable_thinking": 1},
        {"messages": [], "conversation_id": 7},
        {"messages": [], "sampling": {"heat": 1}},
        {"messages": [], "sampling": 0.7},
        {"messages": [], "stop": "Bye"},
        {"messages": [], "stop": [1]},
    ],
)
def test_what_is_not_a_request_is_named(data: object) -> None:
    with pytest.raises(WireError, match="not a chat request"):
        request_from_dict(data)


def test_an_unknown_event_is_named() -> None:
    with pytest.raises(WireError, match="not a chat event"):
        event_from_dict({"surprise": 1})


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_error_kind_survives(kind: ErrorKind) -> None:
    cls = ERRORS[kind]
    err = cls("too long", tokens=9000, limit=4096) if cls is ContextOverflowError else cls("it went wrong")
    data = json.loads(json.dumps(error_to_dict(err, 400)))
    assert data["kind"] == kind
    again = error_from_dict(data)
    assert type(again) is cls
    assert str(again) == str(err)
    if isinstance(again, ContextOverflowError):
        assert (again.tokens, again.limit) == (9000, 4096)


def test_an_error_without_a_known_kind_is_left_to_its_status() -> None:
    assert error_from_dict({"status": 500, "message": "?"}) is None
    assert error_from_dict({"kind": "meteor", "message": "?"}) is None
    assert error_to_dict(RKLLMError("odd"), 500)["kind"] == ErrorKind.RUN


def test_stats_survive() -> None:
    result = ChatResult("hi", (CALL,), PerfStats(1.0, 2, 3.0, 4, 5.0), 10, 8, True, 12)
    stats = EngineStats(
        3,
        2,
        1,
        1,
        12,
        result,
        "the runtime failed",
        context_room=300,
        constrained=False,
        constrained_note="no",
    )
    assert stats_from_dict(json.loads(json.dumps(stats_to_dict(stats)))) == stats
    assert stats_from_dict({}) == EngineStats()


def test_a_status_survives() -> None:
    result = ChatResult("hi", (CALL,), PerfStats(1.0, 2, 3.0, 4, 5.0), 10, 8, True, 12)
    status = EngineStatus(
        model_file="qwen2.5-1.5b.rkllm",
        release="1.2.3",
        state=EngineState.GENERATING,
        waiting=2,
        stats=EngineStats(3, 2, 1, 1, 12, result, None, context_room=300),
        kv_mode=KVMode.REUSE,
        params=ModelParams(max_context_len=8192, n_keep=64, sampling=Sampling(top_k=1), embed_flash=True),
        model_bytes=1_700_000_000,
    )
    assert status_from_dict(json.loads(json.dumps(status_to_dict(status)))) == status
    assert status_from_dict({"model_file": "m.rkllm"}) == EngineStatus("m.rkllm")
