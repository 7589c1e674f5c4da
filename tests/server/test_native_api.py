"""rkllm-server's own stream, POST /rkllm/chat: what a remote engine reads, nothing lost."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest

from rkllm_runtime.chat import (
    ChatRequest,
    Finished,
    Message,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.errors import ContextOverflowError, InvalidTextError, ServerStoppedError
from rkllm_runtime.remote.wire import error_from_dict, event_from_dict, request_to_dict
from rkllm_runtime.types import Sampling
from tests.server.conftest import MODEL, SYSTEM, TOOLS, RunningServer, StartServer

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
    hot = request_to_dict(ChatRequest(SYSTEM, [Message("user", "hi")], sampling=Sampling(temperature=9.0)))
    response = server.http("POST", "/rkllm/chat", json={"model": MODEL, "request": hot})
    assert response.status_code == 400
    assert response.json()["error"] == '"temperature" must be between 0 and 2.0'
    wrong = {"messages": [{"role": "user", "content": "hi"}], "sampling": {"temperature": "hot"}}
    response = server.http("POST", "/rkllm/chat", json={"model": MODEL, "request": wrong})
    assert response.status_code == 400
    assert response.json()["error"] == '"temperature" must be a number'
    status, records = chat(server, ChatRequest(SYSTEM, [Message("user", "please fail")]))
    assert status == 200  # failed after the first token: the last record says so
    assert records[-1]["error"]["status"] == 500
    assert records[-1]["error"]["kind"] == "run"
    assert records[-1]["error"]["message"].startswith("the RKLLM runtime reported an error")


def test_the_requests_own_faults_arrive_by_kind(server: RunningServer) -> None:
    """A client raises the very error the engine raised: the same message in every mode."""
    status, records = chat(server, ChatRequest(SYSTEM, [Message("user", "lamp " * 100_000)]))
    assert status == 400
    error = error_from_dict(records[0]["error"])
    assert isinstance(error, ContextOverflowError)
    assert error.limit == 4096
    assert error.tokens > 4096
    status, records = chat(server, ChatRequest(SYSTEM, [Message("user", "hello\0 there")]))
    assert status == 400
    assert isinstance(error_from_dict(records[0]["error"]), InvalidTextError)
    assert "NUL character at position 5" in records[0]["error"]["message"]
    status, _ = chat(server, ChatRequest(SYSTEM, [Message("user", "hello there")]))
    assert status == 200  # the store of a string-keyed request item fails the server's tests


def test_a_server_stopped_mid_answer_says_so(start_server: StartServer) -> None:
    server = start_server(env={"RKLLM_EMU_DECODE_TPS": "40"})
    body = {"model": MODEL, "request": request_to_dict(ChatRequest("", [Message("user", "tell me a story")]))}
    with httpx.stream("POST", f"{server.url}/rkllm/chat", json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines)) == {"text": "Once"}
        server.process.send_signal(signal.SIGTERM)
        records = [json.loads(line) for line in lines if line]
    assert isinstance(error_from_dict(records[-1]["error"]), ServerStoppedError)
    assert server.process.wait(10) == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_new_tokens", -5, '"request.max_new_tokens" must be a positive integer'),
        ("max_new_tokens", 2**63, f'"request.max_new_tokens" is {2**63}, above this server\'s maximum'),
        ("max_new_tokens", True, '"max_new_tokens" must be of type int'),
        ("max_history_turns", -1, '"request.max_history_turns" must be between 0 and 2147483647'),
        ("max_history_turns", 10**30, '"request.max_history_turns" must be between 0 and 2147483647'),
        ("max_history_turns", True, '"max_history_turns" must be of type int'),
        ("malformed_call_retries", -5, '"request.malformed_call_retries" must be between 0 and 3'),
        ("malformed_call_retries", 10**9, '"request.malformed_call_retries" must be between 0 and 3'),
        ("malformed_call_retries", False, '"malformed_call_retries" must be of type int'),
        ("sampling", {"top_k": -1}, '"top_k" must be between 0 and 2147483647'),
        ("sampling", {"top_k": 2**40}, '"top_k" must be between 0 and 2147483647'),
        ("sampling", {"mirostat": True}, '"mirostat" must be a number'),
        ("stop", ["a", "b", "c", "d", "e"], '"request.stop" holds at most 4'),
        ("enable_thinking", 1, '"enable_thinking" must be of type bool'),
    ],
)
def test_every_field_out_of_range_is_400_naming_it(
    server: RunningServer, field: str, value: object, message: str
) -> None:
    request = {"messages": [{"role": "user", "content": "hello"}], field: value}
    response = server.http("POST", "/rkllm/chat", json={"model": MODEL, "request": request})
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert "Traceback" not in server.log()
