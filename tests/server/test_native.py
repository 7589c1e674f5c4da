"""rkllm-server's own stream, POST /rkllm/chat: what a remote engine reads, nothing lost."""

from __future__ import annotations

import json
from typing import Any

from rkllm_runtime.chat import (
    ChatRequest,
    Finished,
    Message,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.chat.wire import event_from_dict, request_to_dict
from tests.server.conftest import MODEL, SYSTEM, TOOLS, RunningServer

LIGHTS = [ToolSpec(tool["function"]["name"], tool["function"]["parameters"]) for tool in TOOLS]


def chat(server: RunningServer, request: ChatRequest, model: str = MODEL) -> tuple[int, list[dict[str, Any]]]:
    response = server.http("POST", "/rkllm/chat", json={"model": model, "request": request_to_dict(request)})
    return response.status_code, [json.loads(line) for line in response.text.splitlines() if line]


def test_events_and_the_full_result(server: RunningServer) -> None:
    request = ChatRequest(SYSTEM, [Message("user", "what is the weather")], enable_thinking=True)
    status, records = chat(server, request)
    assert status == 200
    events = [event_from_dict(record) for record in records]
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)).strip()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "It is sunny."
    assert isinstance(events[-1], Finished)
    result = events[-1].result
    assert result.prompt_tokens > 350
    assert result.perf.generate_tokens > 0
    # The same conversation again: the server's cache held the system prompt.
    _, again = chat(server, request)
    finished = event_from_dict(again[-1])
    assert isinstance(finished, Finished)
    assert finished.result.cache_hit
    assert finished.result.cached_tokens > 350


def test_tool_calls_arrive_structured(server: RunningServer) -> None:
    request = ChatRequest(SYSTEM, [Message("user", "turn the kitchen light on")], tools=LIGHTS)
    _, records = chat(server, request)
    calls = [e.call for e in map(event_from_dict, records) if isinstance(e, ToolCallDelta)]
    assert [(call.name, call.arguments) for call in calls] == [("HassTurnOn", {"name": "Kitchen light"})]
    assert calls[0].id.startswith("call_")


def test_errors_have_their_status(server: RunningServer) -> None:
    assert chat(server, ChatRequest(SYSTEM, [Message("user", "hi")]), model="nope")[0] == 404
    response = server.http("POST", "/rkllm/chat", json={"model": MODEL, "request": {"messages": "hi"}})
    assert response.status_code == 400
    assert "not a chat request" in response.json()["error"]
    status, records = chat(server, ChatRequest(SYSTEM, [Message("user", "please fail")]))
    assert status == 200  # failed after the first token: the last record says so
    assert records[-1]["error"]["status"] == 500
    assert "the model failed" in records[-1]["error"]["message"]
