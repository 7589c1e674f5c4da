"""POST /rkllm/warm: a system prompt and its tools put in the KV cache before the request that needs them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx

from rkllm_runtime.chat import ChatRequest, Finished, Message, ToolSpec
from rkllm_runtime.remote.wire import event_from_dict, request_to_dict
from tests.server.conftest import MODEL, SYSTEM, TOOLS, RunningServer, StartServer, prefill_counts

LIGHTS = [ToolSpec(tool["function"]["name"], tool["function"]["parameters"]) for tool in TOOLS]
ASSIST = ChatRequest(SYSTEM, [], tools=LIGHTS)


def warm(server: RunningServer, request: ChatRequest = ASSIST, model: str = MODEL) -> httpx.Response:
    return server.http("POST", "/rkllm/warm", json={"model": model, "request": request_to_dict(request)})


def chat(server: RunningServer, request: ChatRequest) -> Any:
    response = server.http("POST", "/rkllm/chat", json={"model": MODEL, "request": request_to_dict(request)})
    finished = event_from_dict(json.loads(response.text.splitlines()[-1]))
    assert isinstance(finished, Finished)
    return finished.result


def test_a_command_after_another_prompt_prefills_only_its_words_once_warmed(
    start_server: StartServer,
) -> None:
    server = start_server()
    chat(server, ChatRequest("You write summaries.", [Message("user", "summarise the day")]))
    response = warm(server)
    assert response.status_code == 200
    assert response.json() == {"outcome": "warmed"}
    assert warm(server).json() == {"outcome": "already_warm"}
    command = chat(server, ChatRequest(SYSTEM, [Message("user", "hello")], tools=LIGHTS))
    assert command.cache_hit
    assert command.perf.prefill_tokens < 15
    assert prefill_counts(server.log())[1] > 350  # the warming run read the Assist prompt


def test_a_model_not_loaded_is_loaded_to_warm(start_server: StartServer, model_file: Path) -> None:
    server = start_server("--max-loaded", "1", models={MODEL: model_file, "other": model_file})
    status = server.http("GET", "/rkllm/status").json()["models"]
    assert [status[MODEL]["state"], status["other"]["state"]] == ["ready", "unloaded"]
    assert warm(server, model="other").json() == {"outcome": "warmed"}
    status = server.http("GET", "/rkllm/status").json()["models"]
    assert status["other"]["state"] == "ready"
    assert status["other"]["kv_tokens"] > 350


def test_a_busy_model_is_left_alone(start_server: StartServer) -> None:
    server = start_server(env={"RKLLM_EMU_DECODE_TPS": "100"})
    body = {"model": MODEL, "request": request_to_dict(ChatRequest("", [Message("user", "tell me a story")]))}
    story: list[str] = []
    with httpx.stream("POST", f"{server.url}/rkllm/chat", json=body, timeout=60) as response:
        lines = response.iter_lines()
        story.append(next(lines))
        reader = threading.Thread(target=lambda: story.extend(lines))
        reader.start()
        assert warm(server).json() == {"outcome": "busy"}
        reader.join()
    assert "error" not in story[-1]
    assert len(prefill_counts(server.log())) == 1  # the story's run only


def test_requests_that_are_not_chat_requests_are_refused_naming_the_field(server: RunningServer) -> None:
    response = server.http(
        "POST", "/rkllm/warm", json={"model": MODEL, "request": {"messages": [], "tools": 3}}
    )
    assert response.status_code == 400
    assert response.json()["error"] == 'not a chat request: "tools" must be of type list'
    assert warm(server, model="nope").status_code == 404
    nul = {"system_prompt": "Be\0 brief.", "messages": []}
    response = server.http("POST", "/rkllm/warm", json={"model": MODEL, "request": nul})
    assert response.status_code == 400
    assert response.json()["error"]["kind"] == "invalid_text"
