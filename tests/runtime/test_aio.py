"""The asyncio bridge: tokens reach a coroutine as they come; cancelling aborts the run."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from rkllm_runtime import AsyncStream, ModelParams, Prompt, RKLLMRuntime, RunError
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory


async def test_stream_to_a_coroutine(emulator_library: Path, make_model: ModelFactory) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply="Hello from the NPU"))) as runtime:
        async with AsyncStream(runtime, Prompt("hi")) as stream:
            chunks = [chunk async for chunk in stream]
    assert "".join(chunks) == "Hello from the NPU"
    assert stream.result is not None
    assert stream.result.perf.generate_tokens == len(chunks) + 1  # + <|im_end|>


async def test_cancelling_the_consumer_aborts_the_run(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "100")
    model = make_model(Rule(match="long", reply="word " * 1000), Rule(reply="next"))
    with RKLLMRuntime.open(emulator_library, model, ModelParams()) as runtime:
        first_chunk = asyncio.Event()

        async def consume() -> None:
            async for _ in AsyncStream(runtime, Prompt("long")):
                first_chunk.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first_chunk.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not runtime.is_running  # aborted, not left running in the background
        async with AsyncStream(runtime, Prompt("again")) as stream:
            assert [chunk async for chunk in stream] == ["next"]


async def test_a_queued_request_can_be_cancelled_without_touching_the_running_one(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "500")
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply="tok " * 100))) as runtime:
        first = AsyncStream(runtime, Prompt("first"))
        second = AsyncStream(runtime, Prompt("second"))
        await second.aclose()  # cancelled while waiting for the handle
        text = "".join([chunk async for chunk in first])
    assert text == "tok " * 100


async def test_errors_reach_the_consumer(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(reply="a b c", error_after=1))
    with RKLLMRuntime.open(emulator_library, model) as runtime:
        chunks: list[str] = []

        async def consume() -> None:
            async for chunk in AsyncStream(runtime, Prompt("hi")):
                chunks.append(chunk)

        with pytest.raises(RunError):
            await consume()
    assert chunks == ["a"]


async def test_tokens_arrive_on_the_loop_thread(emulator_library: Path, make_model: ModelFactory) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply="a b"))) as runtime:
        threads = set()
        async for _ in AsyncStream(runtime, Prompt("hi")):
            threads.add(threading.current_thread())
    assert threads == {threading.main_thread()}
