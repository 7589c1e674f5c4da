"""The chat engine against the emulator, shared by the tests of the engine's modules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rkllm_runtime import ModelParams, RKLLMRuntime
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatResult, Message, TextDelta, ToolSpec
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call

SYSTEM = "You are a voice assistant for Home Assistant. " * 50  # a long, static prompt
TOOLS = [ToolSpec("HassTurnOn", {})]
# \n <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
TURN = 9

RULES = (
    Rule(
        role="user",
        match="kitchen",
        tools=True,
        reply='<tool_call>\n{"name": "HassTurnOn", "arguments": {}}\n</tool_call>',
    ),
    Rule(role="user", match="garden", reply='<tool_call>\n{"name": HassTurnOn}\n</tool_call>'),
    Rule(role="user", match="gate", tools=True, reply='{"name": "HassOpenGate", "arguments": {}}'),
    Rule(role="tool", match="the tools are hassturnon", reply=call("HassTurnOn", name="gate")),
    Rule(role="tool", match="malformedtoolcall", reply=call("HassTurnOn", name="garden")),
    Rule(role="tool", reply="Done."),
    Rule(match="long", reply="word " * 300),
    Rule(match="broken", reply="I was about to", error_after=3),
    Rule(reply="Sure."),
)

EngineFactory = Callable[..., ChatEngine]


@pytest.fixture
async def make_engine(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> AsyncIterator[EngineFactory]:
    engines: list[ChatEngine] = []
    model = make_model(*RULES)

    def factory(max_context_len: int = 4096, **kwargs: object) -> ChatEngine:
        runtime = RKLLMRuntime.open(emulator_library, model, ModelParams(max_context_len=max_context_len))
        engine = ChatEngine(runtime, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose()


async def ask(
    engine: ChatEngine, conversation: list[Message], text: str, cid: str = "a", **kw: object
) -> ChatResult:
    """One turn: append the user message, generate, append the reply."""
    conversation.append(Message("user", text))
    return await send(engine, conversation, cid, **kw)


async def send(engine: ChatEngine, conversation: list[Message], cid: str, **kw: object) -> ChatResult:
    request = ChatRequest(SYSTEM, list(conversation), conversation_id=cid, **kw)  # type: ignore[arg-type]
    async with engine.chat(request) as stream:
        text = "".join([event.text async for event in stream if isinstance(event, TextDelta)])
    assert stream.result is not None
    assert stream.result.text == text
    conversation.append(Message("assistant", text, tool_calls=stream.result.tool_calls))
    return stream.result
