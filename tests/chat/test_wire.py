"""Chat requests and events survive JSON both ways (the server's native stream)."""

from __future__ import annotations

import json

import pytest

from rkllm_runtime.chat import (
    ChatRequest,
    ChatResult,
    Finished,
    MalformedToolCall,
    Message,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.chat.wire import (
    WireError,
    event_from_dict,
    event_to_dict,
    request_from_dict,
    request_to_dict,
)
from rkllm_runtime.types import PerfStats, Sampling

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
    )
    again = request_from_dict(json.loads(json.dumps(request_to_dict(request))))
    assert again == request


@pytest.mark.parametrize(
    "event",
    [
        TextDelta("Hello"),
        ThinkingDelta("Hm."),
        ToolCallDelta(CALL),
        MalformedToolCall('{"name": HassTurnOn}', "not JSON"),
        Finished(ChatResult("Hi", (CALL,), PerfStats(1.5, 10, 2.5, 3, 100.0), 500, 490, True, 503)),
    ],
)
def test_events_round_trip(event: object) -> None:
    assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [None, [], {"system_prompt": "x"}, {"messages": [{"content": "no role"}]}, {"messages": [{"role": "x"}]}],
)
def test_what_is_not_a_request_is_named(data: object) -> None:
    with pytest.raises(WireError, match="not a chat request"):
        request_from_dict(data)


def test_an_unknown_event_is_named() -> None:
    with pytest.raises(WireError, match="not a chat event"):
        event_from_dict({"surprise": 1})
