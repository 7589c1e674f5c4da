"""The official openai client against rkllm-server: completions, streaming, tools, usage, errors."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.server.conftest import MODEL, SYSTEM, TOOLS, RunningServer


def system(*messages: dict[str, Any]) -> list[Any]:
    return [{"role": "system", "content": SYSTEM}, *messages]


def test_completion_and_the_warm_follow_up(server: RunningServer) -> None:
    client = server.openai()
    messages = system({"role": "user", "content": "hello from openai"})
    first = client.chat.completions.create(model=MODEL, messages=messages)
    assert first.choices[0].message.content == "Hello! How can I help?"
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    messages += [
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "more"},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages)
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None
    assert second.usage.prompt_tokens - cached < 20  # only the new turn was read


def test_streaming_with_usage(server: RunningServer) -> None:
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=system({"role": "user", "content": "hello there"}),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! How can I help?"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_tool_calls_and_results(server: RunningServer) -> None:
    client = server.openai()
    messages = system({"role": "user", "content": "turn the kitchen light on"})
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (tool_call,) = choice.message.tool_calls or []
    assert tool_call.type == "function"
    assert tool_call.function.name == "HassTurnOn"
    assert json.loads(tool_call.function.arguments) == {"name": "Kitchen light"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": '{"success": true}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Done, the light is on."
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens


def test_streamed_tool_call(server: RunningServer) -> None:
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=system({"role": "user", "content": "turn the kitchen light on"}),
        tools=TOOLS,  # type: ignore[arg-type]
        stream=True,
    )
    calls = [call for chunk in stream if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    assert [(c.function.name, json.loads(c.function.arguments or "")) for c in calls if c.function] == [
        ("HassTurnOn", {"name": "Kitchen light"})
    ]


def test_models(server: RunningServer) -> None:
    assert [model.id for model in server.openai().models.list()] == [MODEL]


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        ({"model": "nope"}, openai.NotFoundError, "not found"),
        ({"max_tokens": 10**6}, openai.BadRequestError, "maximum"),
        ({"n": 2}, openai.BadRequestError, '"n": 1'),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         openai.BadRequestError, "only text"),
    ],
    ids=["unknown-model", "too-many-tokens", "several-choices", "images"],
)  # fmt: skip
def test_errors(
    server: RunningServer, request_: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **request_}
    with pytest.raises(error, match=message):
        server.openai().chat.completions.create(**arguments)


def test_a_model_is_retrieved_by_its_id(server: RunningServer) -> None:
    client = server.openai()
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL
    assert model.object == "model"
    assert model.owned_by == "rkllm"
    assert model.created == next(m.created for m in client.models.list() if m.id == MODEL)


def test_an_unknown_model_id_is_404_in_openais_shape(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4o' not found") as raised:
        server.openai().models.retrieve("gpt-4o")
    error = raised.value.response.json()["error"]
    assert error["type"] == "not_found_error"
    assert error["code"] == 404


def test_embeddings_are_501_in_openais_shape(server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError, match="makes no embeddings") as raised:
        server.openai().embeddings.create(model=MODEL, input="hello")
    assert raised.value.status_code == 501
    assert raised.value.response.json()["error"]["type"] == "server_error"
