"""Log-probabilities (OpenAI's ``logprobs``/``top_logprobs``, Ollama's too) through the official clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import ollama
import openai
import pytest

from rkllm_runtime.chat import ChatRequest, Message
from rkllm_runtime.remote.client import RemoteEngine
from tests.server.conftest import MODEL, RunningServer, StartServer

REPLY = "Hello! How can I help?"  # what the model file answers "hi" with


@pytest.fixture
def decoding(start_server: StartServer, model_file: Path, qwen_vocabulary: Path) -> RunningServer:
    """A server whose model has its vocabulary (tokenizer.json) beside it."""
    model = qwen_vocabulary.parent / model_file.name
    model.symlink_to(model_file)
    return start_server(models={MODEL: model})


def check_tokens(tokens: list[Any], top: int) -> None:
    """Each token with its log-probability and bytes; the greedy choice is the likeliest alternative."""
    assert "".join(token.token for token in tokens) == REPLY  # the end of the turn is no token of it
    for token in tokens:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == top
        assert [t.token for t in token.top_logprobs][:1] == [token.token][:top]
        assert [t.logprob for t in token.top_logprobs] == sorted(
            (t.logprob for t in token.top_logprobs), reverse=True
        )


def test_openai_logprobs_with_alternatives(decoding: RunningServer) -> None:
    client = decoding.openai()
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=3
    )
    choice = completion.choices[0]
    assert choice.message.content == REPLY
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    check_tokens(choice.logprobs.content, 3)
    assert all(bytes(token.bytes or []) == token.token.encode() for token in choice.logprobs.content)
    assert all(token.logprob == token.top_logprobs[0].logprob for token in choice.logprobs.content)


def test_openai_streamed_logprobs_arrive_with_the_last_chunk(decoding: RunningServer) -> None:
    client = decoding.openai()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True, stream=True
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    tokens = [
        t
        for chunk in chunks
        if chunk.choices and chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content or []
    ]
    assert text == REPLY
    check_tokens(tokens, 0)


def test_ollama_logprobs_in_chat_and_generate(decoding: RunningServer) -> None:
    client = decoding.ollama()
    chat = client.chat(MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2)
    assert chat.message.content == REPLY
    assert chat.logprobs is not None
    check_tokens(list(chat.logprobs), 2)
    generated = client.generate(MODEL, "hi", logprobs=True)
    assert generated.response == REPLY
    assert generated.logprobs is not None
    assert "".join(token.token for token in generated.logprobs) == REPLY
    assert all(token.top_logprobs is None for token in generated.logprobs)


def test_without_the_models_vocabulary_logprobs_are_refused_naming_why(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError, match=r"tokenizer\.json"):
        server.openai().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    with pytest.raises(ollama.ResponseError, match=r"tokenizer\.json"):
        server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}], logprobs=True)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"top_logprobs": 2}, '"top_logprobs" needs "logprobs": true'),
        ({"logprobs": True, "top_logprobs": 21}, '"top_logprobs" must be between 0 and 20'),
        ({"logprobs": "yes"}, '"logprobs" must be true or false'),
    ],
)
def test_logprobs_fields_out_of_range_are_400_naming_them(
    server: RunningServer, fields: dict[str, object], error: str
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    openai_error = server.http("POST", "/v1/chat/completions", json=body)
    assert (openai_error.status_code, openai_error.json()["error"]["message"]) == (400, error)
    ollama_error = server.http("POST", "/api/chat", json=body)
    assert (ollama_error.status_code, ollama_error.json()) == (400, {"error": error})


async def test_the_remote_engine_receives_them_whole(decoding: RunningServer) -> None:
    """What the integration's child process and server modes read over the native stream."""
    async with aiohttp.ClientSession() as session:
        engine = RemoteEngine(session, decoding.url, MODEL, None)
        request = ChatRequest("", [Message("user", "hi")], top_logprobs=1)
        async with engine.chat(request) as stream:
            async for _ in stream:
                pass
    assert stream.result is not None
    assert "".join(token.token for token in stream.result.logprobs) == REPLY
    assert all(len(token.top) == 1 for token in stream.result.logprobs)
