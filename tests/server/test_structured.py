"""Structured output through both APIs: Ollama's format, OpenAI's response_format and parse()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import openai
import pydantic
import pytest

from tests.server.conftest import MODEL, RunningServer, StartServer, generated_counts


class ShoppingList(pydantic.BaseModel):
    items: list[str]


class Forecast(pydantic.BaseModel):
    city: str
    temperature: int


class Count(pydantic.BaseModel):
    count: int


def _user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def test_openai_parse_with_a_pydantic_model_after_one_retry(server: RunningServer) -> None:
    runs = len(generated_counts(server.log()))
    completion = server.openai().chat.completions.parse(
        model=MODEL, messages=_user("make a shopping list"), response_format=ShoppingList
    )
    message = completion.choices[0].message
    assert message.parsed == ShoppingList(items=["milk", "bread"])
    assert json.loads(message.content or "") == {"items": ["milk", "bread"]}
    assert completion.choices[0].finish_reason == "stop"
    assert len(generated_counts(server.log())) - runs == 2  # the cut-off answer, then the retry
    generated = f'rkllm_generated_tokens_total{{model="{MODEL}"}} {sum(generated_counts(server.log()))}\n'
    assert generated in server.http("GET", "/metrics").text  # both runs counted


def test_openai_json_object_strips_a_code_fence(server: RunningServer) -> None:
    completion = server.openai().chat.completions.create(
        model=MODEL, messages=_user("the forecast please"), response_format={"type": "json_object"}
    )
    assert json.loads(completion.choices[0].message.content or "") == {"city": "Paris", "temperature": 21}


def test_openai_streaming_with_a_schema_streams_the_final_json(server: RunningServer) -> None:
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=_user("the forecast please"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "forecast", "schema": Forecast.model_json_schema(), "strict": True},
        },
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert Forecast.model_validate_json(text) == Forecast(city="Paris", temperature=21)


def test_openai_json_that_never_follows_the_schema_is_an_error(server: RunningServer) -> None:
    with pytest.raises(
        openai.UnprocessableEntityError, match=r"did not answer with JSON.*'count' is a required"
    ):
        server.openai().chat.completions.parse(
            model=MODEL, messages=_user("how many lamps are on?"), response_format=Count
        )


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        (
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
            "not a valid JSON",
        ),
        ({"type": "xml"}, '"response_format" must be of type'),
    ],
    ids=["invalid-schema", "unknown-type"],
)
def test_openai_bad_response_format_is_400(
    server: RunningServer, response_format: dict[str, Any], message: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        server.openai().chat.completions.create(
            model=MODEL,
            messages=_user("hi"),
            response_format=response_format,  # type: ignore[arg-type]
        )


def test_ollama_format_schema_on_chat_and_in_a_stream(server: RunningServer) -> None:
    client = server.ollama()
    whole = client.chat(
        MODEL, messages=_user("make a shopping list"), format=ShoppingList.model_json_schema()
    )
    assert ShoppingList.model_validate_json(whole.message.content or "") == ShoppingList(
        items=["milk", "bread"]
    )
    assert whole.done_reason == "stop"
    chunks = list(client.chat(MODEL, messages=_user("the forecast please"), format="json", stream=True))
    assert json.loads("".join(chunk.message.content or "" for chunk in chunks)) == {
        "city": "Paris",
        "temperature": 21,
    }
    assert chunks[-1].done


def test_ollama_generate_with_format(server: RunningServer) -> None:
    answer = server.ollama().generate(MODEL, "the forecast please", format=Forecast.model_json_schema())
    assert Forecast.model_validate_json(answer.response) == Forecast(city="Paris", temperature=21)


def test_ollama_format_that_cannot_be_met_is_an_error(server: RunningServer) -> None:
    with pytest.raises(ollama.ResponseError, match="did not answer with JSON") as caught:
        server.ollama().chat(
            MODEL, messages=_user("how many lamps are on?"), format=Count.model_json_schema()
        )
    assert caught.value.status_code == 422
    body = {"model": MODEL, "messages": _user("hi"), "format": "yaml"}
    refused = server.http("POST", "/api/chat", json=body)
    assert (refused.status_code, refused.json()) == (
        400,
        {"error": '"format" must be "json" or a JSON schema'},
    )


def test_with_the_models_vocabulary_the_format_comes_back_valid_in_one_run(
    start_server: StartServer, model_file: Path, qwen_vocabulary: Path
) -> None:
    """The request that ends in a 422 above, against the same model with its tokenizer.json beside it."""
    model = qwen_vocabulary.parent / model_file.name
    model.symlink_to(model_file)
    server = start_server(models={MODEL: model})
    reply = server.ollama().chat(
        MODEL, messages=_user("how many lamps are on?"), format=Count.model_json_schema()
    )
    assert isinstance(Count.model_validate_json(reply.message.content or "").count, int)
    assert set(generated_counts(server.log())) == {0}  # logits runs only: nothing generated by the runtime
    status = server.http("GET", "/rkllm/status").json()["models"][MODEL]
    assert (status["constrained"], status["constrained_note"]) == (True, "")
    assert (status["last"]["constrained"], status["last"]["runs"], status["requests"]) == (True, 1, 1)
