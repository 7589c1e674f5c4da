"""Warming the KV cache with a system prompt ahead of the request that needs it (while the user speaks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rkllm_runtime import ClosedError, ModelParams, RKLLMRuntime
from rkllm_runtime.chat import (
    ChatEngine,
    ChatRequest,
    ChatResult,
    EngineState,
    KVMode,
    Message,
    PromptCacheStore,
    ToolSpec,
    WarmOutcome,
)
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory

ASSIST = "You are a voice assistant for Home Assistant. " * 50
TOOLS = [ToolSpec("HassTurnOn", {"type": "object", "properties": {"name": {"type": "string"}}})]
TASK = "You write summaries."
# \n <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
TURN = 9

EngineFactory = Callable[..., ChatEngine]


@pytest.fixture
async def make_engine(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> AsyncIterator[EngineFactory]:
    engines: list[ChatEngine] = []
    model = make_model(Rule(match="story", reply="word " * 200), Rule(reply="Sure."))

    def factory(**kwargs: object) -> ChatEngine:
        runtime = RKLLMRuntime.open(emulator_library, model, ModelParams(max_context_len=4096))
        engine = ChatEngine(runtime, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.aclose()


def assist(text: str, cid: str = "a") -> ChatRequest:
    return ChatRequest(ASSIST, [Message("user", text)], TOOLS, conversation_id=cid)


async def answer(engine: ChatEngine, request: ChatRequest) -> ChatResult:
    async with engine.chat(request) as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    return stream.result


@pytest.mark.parametrize("mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_a_command_after_another_prompt_prefills_only_its_turn_once_warmed(
    make_engine: EngineFactory, mode: KVMode
) -> None:
    """Another system prompt (an AI task) displaced the Assist prompt: warming brings it back."""
    engine = make_engine(kv_mode=mode)
    await answer(engine, ChatRequest(TASK, [Message("user", "summarise")]))
    states: list[EngineState] = []
    engine.add_listener(lambda: states.append(engine.state))
    assert await engine.warm(assist("")) is WarmOutcome.WARMED
    assert states == [EngineState.PREFILLING, EngineState.READY]
    assert engine.stats.requests == 1  # warming is not a request
    system_section = engine.stats.kv_tokens
    assert system_section > 400  # the Assist system prompt and tools
    command = await answer(engine, assist("hello"))
    assert command.cache_hit
    assert command.perf.prefill_tokens == TURN + 1
    assert command.cached_tokens == system_section


async def test_without_warming_the_command_reads_the_prompt_again(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await answer(engine, ChatRequest(TASK, [Message("user", "summarise")]))
    command = await answer(engine, assist("hello"))
    assert not command.cache_hit
    assert command.perf.prefill_tokens > 400


async def test_a_warm_prompt_is_left_alone(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await answer(engine, assist("hello"))
    kv_tokens = engine.stats.kv_tokens
    assert await engine.warm(assist("")) is WarmOutcome.ALREADY_WARM
    assert engine.stats.kv_tokens == kv_tokens


async def test_a_running_request_is_never_delayed(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the engine answers (or requests wait), warming does nothing."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "400")
    engine = make_engine()
    generating = asyncio.Event()
    engine.add_listener(lambda: engine.state is EngineState.GENERATING and generating.set())
    story = asyncio.create_task(answer(engine, ChatRequest(TASK, [Message("user", "tell a story")])))
    async with asyncio.timeout(10):
        await generating.wait()
    assert await engine.warm(assist("")) is WarmOutcome.BUSY
    assert engine.state is EngineState.GENERATING
    told = await story
    assert told.perf.generate_tokens > 100
    assert engine.stats.kv_tokens < 400  # the Assist prompt was not read


async def test_the_naive_strategy_keeps_nothing_to_warm(make_engine: EngineFactory) -> None:
    engine = make_engine(kv_mode=KVMode.NAIVE)
    assert await engine.warm(assist("")) is WarmOutcome.NOT_KEPT
    assert engine.stats.kv_tokens == 0


async def test_warming_restores_the_prompt_cache_file_or_saves_it(
    make_engine: EngineFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The first warming prefills the prompt and saves its file; after a restart, warming loads it."""
    monkeypatch.setenv("RKLLM_LOG_LEVEL", "1")
    store = PromptCacheStore(tmp_path / "caches")
    engine = make_engine(prompt_caches=store)
    assert await engine.warm(assist("")) is WarmOutcome.WARMED
    assert len(list((tmp_path / "caches").glob("*.rkcache"))) == 1
    await engine.aclose()
    assert "loaded prompt cache" not in capfd.readouterr().err
    restarted = make_engine(prompt_caches=store)
    assert await restarted.warm(assist("")) is WarmOutcome.WARMED
    assert "loaded prompt cache" in capfd.readouterr().err
    command = await answer(restarted, assist("hello"))
    assert command.cache_hit
    assert command.perf.prefill_tokens <= TURN + 1  # the file's empty turn may share its opening


async def test_a_closed_engine_refuses_to_warm(make_engine: EngineFactory) -> None:
    engine = make_engine()
    await engine.aclose()
    with pytest.raises(ClosedError):
        await engine.warm(assist(""))
