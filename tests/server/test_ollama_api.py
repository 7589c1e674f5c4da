"""The official ollama client against rkllm-server: chat, tools, thinking, generate, model listing."""

from __future__ import annotations

from typing import Any

import ollama
import pytest

from tests.server.conftest import MODEL, SYSTEM, TOOLS, RunningServer

HI = [{"role": "user", "content": "hi"}]


def system(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, *messages]


def test_streaming_chat_and_the_warm_follow_up(server: RunningServer) -> None:
    client = server.ollama()
    messages = system({"role": "user", "content": "hello there"})
    parts = list(client.chat(MODEL, messages=messages, stream=True))
    assert "".join(part.message.content for part in parts) == "Hello! How can I help?"
    assert len(parts) > 2  # streamed token by token
    assert parts[-1].done
    assert parts[-1].done_reason == "stop"
    assert parts[-1].eval_count > 0
    # A stateless client resends everything: only the new turn is prefilled.
    messages += [
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "and?"},
    ]
    follow_up = client.chat(MODEL, messages=messages)
    assert follow_up.message.content == "Hello! How can I help?"
    assert follow_up.prompt_eval_count is not None
    assert follow_up.prompt_eval_count < 20


def test_tool_call_and_result_round_trip(server: RunningServer) -> None:
    client = server.ollama()
    messages = system({"role": "user", "content": "turn the kitchen light on"})
    first = client.chat(MODEL, messages=messages, tools=TOOLS)
    assert first.message.content == ""
    (tool_call,) = first.message.tool_calls or []
    assert tool_call.function.name == "HassTurnOn"
    assert tool_call.function.arguments == {"name": "Kitchen light"}
    messages += [
        first.message.model_dump(exclude_none=True),
        {"role": "tool", "content": '{"success": true}', "tool_name": "HassTurnOn"},
    ]
    second = client.chat(MODEL, messages=messages, tools=TOOLS)
    assert second.message.content == "Done, the light is on."
    assert first.prompt_eval_count is not None
    assert second.prompt_eval_count is not None
    # Only the tool result is read (about 40 tokens): the call stayed in the cache.
    assert second.prompt_eval_count < 50 < first.prompt_eval_count


def test_streamed_tool_call(server: RunningServer) -> None:
    messages = system({"role": "user", "content": "turn the kitchen light on"})
    parts = list(server.ollama().chat(MODEL, messages=messages, tools=TOOLS, stream=True))
    calls = [call for part in parts for call in part.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("HassTurnOn", {"name": "Kitchen light"})
    ]


def test_malformed_call_is_retried_inside_the_request(server: RunningServer) -> None:
    messages = system({"role": "user", "content": "light up the garden path"})
    reply = server.ollama().chat(MODEL, messages=messages, tools=TOOLS)
    (tool_call,) = reply.message.tool_calls or []
    assert tool_call.function.arguments == {"name": "Garden light"}
    assert "tool_call" not in reply.message.content
    parts = list(server.ollama().chat(MODEL, messages=messages, tools=TOOLS, stream=True))
    assert all(part.message.content or part.message.tool_calls or part.done for part in parts)
    assert [c.function.name for part in parts for c in part.message.tool_calls or []] == ["HassTurnOn"]


def test_thinking_is_separate(server: RunningServer) -> None:
    messages = system({"role": "user", "content": "what is the weather like"})
    reply = server.ollama().chat(MODEL, messages=messages, think=True)
    assert reply.message.content == "It is sunny."
    assert "asks about the weather" in (reply.message.thinking or "")
    parts = list(server.ollama().chat(MODEL, messages=messages, think=True, stream=True))
    assert "asks about the weather" in "".join(part.message.thinking or "" for part in parts)
    assert "<think>" not in "".join(part.message.content for part in parts)


def test_options_limit_the_reply(server: RunningServer) -> None:
    messages = system({"role": "user", "content": "tell me a story"})
    reply = server.ollama().chat(MODEL, messages=messages, options={"num_predict": 5, "temperature": 0.2})
    assert reply.eval_count == 5
    assert reply.done_reason == "length"


def test_generate(server: RunningServer) -> None:
    reply = server.ollama().generate(MODEL, "hello there", system="Be brief.")
    assert reply.response == "Hello! How can I help?"
    parts = list(server.ollama().generate(MODEL, "hello there", stream=True, keep_alive="10m"))
    assert "".join(part.response for part in parts) == "Hello! How can I help?"
    loaded = server.ollama().generate(MODEL)  # an empty prompt only loads the model
    assert loaded.done_reason == "load"


def test_listing_models(server: RunningServer) -> None:
    client = server.ollama()
    assert [model.model for model in client.list().models] == [MODEL]
    assert [model.model for model in client.ps().models] == [MODEL]
    shown = client.show(MODEL)
    assert "tools" in (shown.capabilities or [])
    assert shown.modelinfo is not None
    assert shown.modelinfo["rkllm.context_length"] == 4096
    assert server.http("GET", "/api/version").json()["version"]
    assert client.show(f"{MODEL.split(':')[0]}:1.5b").details is not None


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        (lambda c: c.chat("nope", messages=HI), 404, "not found"),
        (lambda c: c.chat(MODEL, messages=[{"role": "assistant", "content": "hi"}]), 400, "last message"),
        (lambda c: c.chat(MODEL, messages=HI, options={"num_predict": 10**6}), 400, "maximum of 512"),
        (lambda c: c.chat(MODEL, messages=HI, keep_alive="soon"), 400, "keep_alive"),
        (lambda c: c.chat(MODEL, messages=[{"role": "user", "content": "please fail"}]), 500, "failed"),
        (lambda c: c.chat(MODEL, messages=[{"role": "user", "content": "a\0b"}]), 400, "NUL"),
        (lambda c: c.chat(MODEL, messages=[{"role": "user", "content": "w " * 80_000}]), 400, "context"),
    ],
    ids=["unknown-model", "no-user-message", "too-many-tokens", "bad-keep-alive", "run-fails", "nul",
         "beyond-the-context"],
)  # fmt: skip
def test_errors(server: RunningServer, call: Any, status: int, message: str) -> None:
    with pytest.raises(ollama.ResponseError, match=message) as raised:
        call(server.ollama())
    assert raised.value.status_code == status


def test_failure_mid_stream_is_an_error_record(server: RunningServer) -> None:
    stream = server.ollama().chat(MODEL, messages=[{"role": "user", "content": "please fail"}], stream=True)
    with pytest.raises(ollama.ResponseError, match="failed"):
        list(stream)
    assert server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}]).message.content


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"template": "{{ .Prompt }}"}, '"template" is not supported'),
        ({"suffix": "return total"}, '"suffix" is not supported'),
        ({"system": {"role": "system"}}, '"system" must be a string'),
    ],
)
def test_generate_refuses_what_it_cannot_honour(
    server: RunningServer, fields: dict[str, Any], message: str
) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False, **fields}
    response = server.http("POST", "/api/generate", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_generate_takes_an_empty_template_and_suffix_as_unset(server: RunningServer) -> None:
    reply = server.ollama().generate(MODEL, "hello", template="", suffix="", system="Be brief.")
    assert reply.response == "Hello! How can I help?"


@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings"])
def test_embeddings_are_501_in_words(server: RunningServer, path: str) -> None:
    response = server.http("POST", path, json={"model": MODEL, "input": "hello"})
    assert response.status_code == 501
    assert (
        response.json()["error"]
        == f"{path} is not implemented: this server generates text, it makes no embeddings"
    )
