"""Every option the two APIs define: honoured, refused with a 400 naming it, or without effect by design."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from tests.server.conftest import MODEL, TOOLS, TURN_OFF, RunningServer, generated_counts, launch

FULL_STORY_TOKENS = 500  # "there was a light." is 5 tokens, 100 times
STORY = [{"role": "user", "content": "tell me a story"}]
KITCHEN = [{"role": "user", "content": "turn the kitchen light on"}]


@pytest.fixture(scope="module")
def decoding(
    library: Path, model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server that decodes at 100 tokens/s, so that an abort visibly cuts a reply short."""
    log = tmp_path_factory.mktemp("decoding") / "server.log"
    running = launch(library, {MODEL: model_file}, [], log, env={"RKLLM_EMU_DECODE_TPS": "100"})
    yield running
    running.stop()
    running.close()


def test_openai_stop_ends_the_reply_and_the_run(decoding: RunningServer) -> None:
    server = decoding
    completion = server.openai().chat.completions.create(model=MODEL, messages=STORY, stop=["light", "never"])  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Once upon a time there was a "
    assert completion.choices[0].finish_reason == "stop"
    assert generated_counts(server.log())[-1] < FULL_STORY_TOKENS // 10  # aborted, not run to the end


def test_ollama_stop_in_a_stream(decoding: RunningServer) -> None:
    server = decoding
    chunks = list(server.ollama().chat(MODEL, messages=STORY, options={"stop": ["was a"]}, stream=True))
    assert "".join(chunk.message.content or "" for chunk in chunks) == "Once upon a time there "
    assert (chunks[-1].done, chunks[-1].done_reason) == (True, "stop")
    assert generated_counts(server.log())[-1] < FULL_STORY_TOKENS // 10


def test_tool_choice_none_hides_the_tools(server: RunningServer) -> None:
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=KITCHEN,
        tools=TOOLS,
        tool_choice="none",  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "HassTurnOn"}}],
    ids=["required", "named"],
)
def test_tool_choice_required_or_named_calls_the_tool(server: RunningServer, tool_choice: Any) -> None:
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=KITCHEN,
        tools=TOOLS,
        tool_choice=tool_choice,  # type: ignore[arg-type]
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "HassTurnOn",
        {"name": "Kitchen light"},
    )  # type: ignore[union-attr]


def test_tool_choice_named_asks_again_when_the_reply_has_no_call(server: RunningServer) -> None:
    before = len(generated_counts(server.log()))
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "how many lamps are there?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "HassTurnOn"}},
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("HassTurnOn", {"name": "Lamp"})  # type: ignore[union-attr]
    assert completion.choices[0].message.content is None  # the prose of the first answer is not passed on
    assert completion.choices[0].finish_reason == "tool_calls"
    assert len(generated_counts(server.log())) - before == 2


def test_tool_choice_required_without_a_call_is_422(server: RunningServer) -> None:
    before = len(generated_counts(server.log()))
    with pytest.raises(openai.UnprocessableEntityError, match="did not call one of the tools") as caught:
        server.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "how many lamps are there?"}],
            tools=[*TOOLS, TURN_OFF],  # type: ignore[list-item]
            tool_choice="required",
        )
    assert caught.value.status_code == 422
    assert len(generated_counts(server.log())) - before == 2  # the answer and its one retry


def test_tool_choice_named_refuses_a_call_of_another_tool_before_streaming(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "messages": KITCHEN,  # the model calls HassTurnOn, twice
        "tools": [*TOOLS, TURN_OFF],
        "tool_choice": {"type": "function", "function": {"name": "HassTurnOff"}},
        "stream": True,
    }
    response = server.http("POST", "/v1/chat/completions", json=body)
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", 422)
    assert "did not call the tool HassTurnOff" in error["message"]


def test_options_without_effect_are_accepted(server: RunningServer) -> None:
    """seed (the runtime has none), num_ctx (the context is fixed at load), runner options."""
    answer = server.ollama().chat(
        MODEL,
        messages=[{"role": "user", "content": "hi"}],
        options={"seed": 42, "num_ctx": 8192, "num_thread": 4, "temperature": 0.5, "top_k": 40},
    )
    assert answer.message.content == "Hello! How can I help?"
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        seed=42,
        user="someone",
        parallel_tool_calls=False,
        logprobs=False,
        stream_options=None,
    )
    assert completion.choices[0].message.content == "Hello! How can I help?"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('"temperature": NaN', '"temperature" must be between 0 and 2'),
        ('"temperature": 1e400', '"temperature" must be between 0 and 2'),
        ('"temperature": -5', '"temperature" must be between 0 and 2'),
        ('"top_p": 7', '"top_p" must be between 0 and 1'),
        ('"frequency_penalty": 2.5', '"frequency_penalty" must be between -2 and 2'),
        ('"presence_penalty": -Infinity', '"presence_penalty" must be between -2 and 2'),
        (f'"top_k": {2**40}', '"top_k" must be between 0 and 2147483647'),
        ('"top_k": 1.5', '"top_k" must be an integer'),
        ('"temperature": "hot"', '"temperature" must be a number'),
        ('"mirostat": true', '"mirostat" must be a number'),
        ('"logprobs": true', '"logprobs" cannot be honoured with this model: no tokenizer.json beside'),
        ('"top_logprobs": 3', '"top_logprobs" needs "logprobs": true'),
        ('"logit_bias": {"1": 5}', '"logit_bias" is not supported'),
        ('"tool_choice": {"type": "function", "function": {"name": "Unknown"}}, "tools": []',
         "names the tool 'Unknown'"),
        ('"tool_choice": "required"', '"required" needs "tools"'),
        ('"tool_choice": "sometimes"', '"tool_choice" must be'),
        ('"stop": ["a", "b", "c", "d", "e"]', '"stop" holds at most 4'),
        ('"stop": 5', '"stop" must be'),
        ('"modalities": ["audio"]', '"modalities"'),
    ],
)  # fmt: skip
def test_openai_refusals_name_the_field(server: RunningServer, fields: str, message: str) -> None:
    body = f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}], {fields}}}'
    response = server.http(
        "POST", "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_p": 0.1}, '"options.min_p" is not supported'),
        ({"typical_p": 0.5}, '"options.typical_p" is not supported'),
        ({"repeat_last_n": 64}, '"options.repeat_last_n" is not supported'),
        ({"top_k": -1}, '"top_k" must be between'),
        ({"repeat_penalty": 7}, '"repeat_penalty" must be between 0 and 2'),
        ({"mirostat": 3}, '"mirostat" must be between 0 and 2'),
        ({"stop": [""]}, '"options.stop" must be'),
    ],
)
def test_ollama_refusals_name_the_option(
    server: RunningServer, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ollama.ResponseError, match=message) as caught:
        server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}], options=options)
    assert caught.value.status_code == 400


def test_stream_options_of_the_wrong_type_is_400_before_the_stream(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError, match='"stream_options" must be an object'):
        server.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": "yes"},  # type: ignore[typeddict-item]
        )
