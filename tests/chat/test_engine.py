"""The chat engine: queueing, cancellation, and what the KV cache saves, in token counts."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from rkllm_runtime import BusyError, ClosedError, ContextOverflowError, RunError
from rkllm_runtime.chat import (
    ChatRequest,
    ChatResult,
    EngineState,
    KVMode,
    Message,
    PromptCacheStore,
    TextDelta,
)
from rkllm_runtime.chat import engine as engine_module
from tests.chat.conftest import SYSTEM, TOOLS, TURN, EngineFactory, ask, send


def planned_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The text of every input the engines plan from now on."""
    seen: list[str] = []
    original = engine_module.plan

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        planned = original(*args, **kwargs)
        seen.append(planned.input.text)
        return planned

    monkeypatch.setattr(engine_module, "plan", spy)
    return seen


async def test_new_conversations_prefill_only_their_turn(make_engine: EngineFactory) -> None:
    engine = make_engine()
    first = await ask(engine, [], "hello", cid="a")
    assert not first.cache_hit  # the system prompt had to be prefilled once
    assert first.perf.prefill_tokens > 400
    second = await ask(engine, [], "hello", cid="b")
    assert second.cache_hit
    assert second.perf.prefill_tokens == TURN + 1
    assert second.cached_tokens == first.perf.prefill_tokens - TURN - 1
    assert second.prompt_tokens == first.prompt_tokens
    assert engine.stats.cache_hits == 1
    assert engine.stats.cache_misses == 1


async def test_follow_up_prefills_only_the_new_turn(make_engine: EngineFactory) -> None:
    engine = make_engine(kv_mode=KVMode.REUSE)
    conversation: list[Message] = []
    first = await ask(engine, conversation, "hello")
    follow_up = await ask(engine, conversation, "and then")
    assert follow_up.cache_hit
    assert follow_up.perf.prefill_tokens == TURN + 2
    assert follow_up.cached_tokens == first.prompt_tokens + first.perf.generate_tokens


async def test_tool_round_trip_sends_only_the_result(make_engine: EngineFactory) -> None:
    engine = make_engine(kv_mode=KVMode.REUSE)
    conversation: list[Message] = [Message("user", "turn on the kitchen light")]
    call = await send(engine, conversation, "a", tools=TOOLS)
    assert call.text == ""
    assert [(c.name, c.arguments) for c in call.tool_calls] == [("HassTurnOn", {})]
    conversation.append(Message("tool", json.dumps({"success": True})))
    request = ChatRequest(SYSTEM, list(conversation), tools=TOOLS, conversation_id="a")
    async with engine.chat(request) as stream:
        assert "".join([e.text async for e in stream if isinstance(e, TextDelta)]) == "Done."
    assert stream.result is not None
    assert stream.result.cache_hit
    # \n <|im_start|> user \n <tool_response> \n {"success": true} \n </tool_response> <|im_end|> \n ...
    assert stream.result.perf.prefill_tokens < 25


@pytest.mark.parametrize("cids", [("kitchen", "bedroom"), (None, None)], ids=["with-ids", "stateless"])
async def test_interleaved_conversations_never_mix(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, cids: tuple[str | None, str | None]
) -> None:
    """Two satellites take turns: each rebuild carries its own history only.

    Stateless callers (no conversation id) are told apart by the messages they send back.
    """
    engine = make_engine(kv_mode=KVMode.REUSE)
    kitchen: list[Message] = []
    bedroom: list[Message] = []
    await ask(engine, kitchen, "kitchen satellite says hi", cid=cids[0])  # type: ignore[arg-type]
    await ask(engine, bedroom, "bedroom satellite says hi", cid=cids[1])  # type: ignore[arg-type]
    seen = planned_inputs(monkeypatch)
    back = await ask(engine, kitchen, "second kitchen question", cid=cids[0])  # type: ignore[arg-type]
    assert not back.cache_hit  # the bedroom conversation had replaced it
    assert "kitchen satellite says hi" in seen[-1]
    assert "bedroom" not in seen[-1]
    again = await ask(engine, kitchen, "third kitchen question", cid=cids[0])  # type: ignore[arg-type]
    assert again.cache_hit
    assert seen[-1] == "third kitchen question"


@pytest.mark.parametrize("mode", list(KVMode))
async def test_changed_system_prompt_is_a_miss(make_engine: EngineFactory, mode: KVMode) -> None:
    """Setting the system prompt may leave the old conversation in the cache: the engine clears it."""
    engine = make_engine(kv_mode=mode)
    await ask(engine, [], "hello", cid="a")
    request = ChatRequest(SYSTEM + " Be brief.", [Message("user", "hello")], conversation_id="a")
    async with engine.chat(request) as stream:
        _ = [event async for event in stream]
    assert stream.result is not None
    assert not stream.result.cache_hit
    assert stream.result.perf.prefill_tokens > 400
    fresh = stream.result.perf.prefill_tokens + stream.result.perf.generate_tokens
    assert engine.stats.kv_tokens <= fresh  # nothing of the first conversation is left


async def test_conservative_mode_resends_the_conversation_with_keep_history_off(
    make_engine: EngineFactory,
) -> None:
    """The default: the system prompt stays cached, each turn carries its history, nothing else is kept."""
    engine = make_engine()
    assert engine.kv_mode is KVMode.CONSERVATIVE
    conversation: list[Message] = []
    first = await ask(engine, conversation, "hello")
    system_tokens = engine.stats.kv_tokens
    follow_up = await ask(engine, conversation, "and then")
    assert follow_up.cache_hit
    assert follow_up.cached_tokens == system_tokens
    assert TURN + 2 < follow_up.perf.prefill_tokens < first.perf.prefill_tokens / 4  # history quoted
    assert engine.stats.kv_tokens == system_tokens  # keep_history=0: the turn is not kept
    other = await ask(engine, [], "hello", cid="b")
    assert other.perf.prefill_tokens == TURN + 1


async def test_conservative_tool_round_trip_quotes_the_call(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    seen = planned_inputs(monkeypatch)
    conversation: list[Message] = [Message("user", "turn on the kitchen light")]
    called = await send(engine, conversation, "a", tools=TOOLS)
    assert called.tool_calls
    conversation.append(Message("tool", json.dumps({"success": True})))
    done = await send(engine, conversation, "a", tools=TOOLS)
    assert done.text == "Done."
    assert "turn on the kitchen light" in seen[-1]
    assert "HassTurnOn" in seen[-1]
    assert seen[-1].endswith('{"success": true}')


@pytest.mark.parametrize(("kv_mode", "decoded"), [(KVMode.CONSERVATIVE, 16), (KVMode.REUSE, 18)])
async def test_a_call_run_ends_when_its_json_is_complete(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, kv_mode: KVMode, decoded: int
) -> None:
    """A keep_history=0 run stops at the call's last brace; a kept run must close its turn."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "20")  # 50 ms a token: time to stop it at the brace
    engine = make_engine(kv_mode=kv_mode)
    called = await send(engine, [Message("user", "turn on the kitchen light")], "a", tools=TOOLS)
    assert [(call.name, call.arguments) for call in called.tool_calls] == [("HassTurnOn", {})]
    # <tool_call> \n {" name ": ␣" H ass Turn On ", ␣" arguments ": ␣{} }\n | </tool_call> <|im_end|>
    assert called.perf.generate_tokens == decoded


async def test_naive_mode_prefills_everything(make_engine: EngineFactory) -> None:
    engine = make_engine(kv_mode=KVMode.NAIVE)
    first = await ask(engine, [], "hello", cid="a")
    second = await ask(engine, [], "hello", cid="b")
    assert second.perf.prefill_tokens == first.perf.prefill_tokens > 400
    assert second.cached_tokens == 0


async def test_store_is_bounded(tmp_path: Path, make_engine: EngineFactory) -> None:
    store = PromptCacheStore(tmp_path / "caches", max_bytes=1)
    engine = make_engine(prompt_caches=store)
    for variant in range(3):
        request = ChatRequest(SYSTEM + str(variant), [Message("user", "hi")], conversation_id=str(variant))
        async with engine.chat(request) as stream:
            _ = [event async for event in stream]
    assert len(list((tmp_path / "caches").glob("*.rkcache"))) == 1  # only the newest is kept


async def test_a_tool_result_is_read_with_its_question_and_call(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system prompt fills most of the context: earlier turns go, the current turn stays."""
    engine = make_engine(max_context_len=768)
    inputs = planned_inputs(monkeypatch)
    conversation = [Message("user", "hello"), Message("assistant", "Sure.")]
    await ask(engine, conversation, "kitchen light on", tools=TOOLS)
    conversation.append(Message("tool", '{"success": true}', name="HassTurnOn"))
    result = await send(engine, conversation, "a", tools=TOOLS)
    assert result.text == "Done."
    assert inputs[-1] == (
        "Earlier in this conversation:\nUser: kitchen light on\n"
        'Assistant: <tool_call>{"name":"HassTurnOn","arguments":{}}</tool_call>\n\n{"success": true}'
    )


async def test_a_run_that_fails_while_its_reply_is_held_back_is_no_overflow(
    make_engine: EngineFactory,
) -> None:
    """A reply that may open with a call is held: the run still read its whole input."""
    engine = make_engine(max_context_len=1024)
    with pytest.raises(RunError) as failure:
        await ask(engine, [], "broken", tools=TOOLS)
    assert not isinstance(failure.value, ContextOverflowError)


async def test_long_conversations_stay_within_the_context(make_engine: EngineFactory) -> None:
    engine = make_engine(max_context_len=1024, kv_mode=KVMode.REUSE)
    conversation: list[Message] = []
    for turn in range(40):
        result = await ask(engine, conversation, f"question number {turn}")
        assert result.text == "Sure."
        assert engine.stats.kv_tokens <= 1024
    assert engine.stats.cache_misses >= 2  # the conversation was trimmed and rebuilt


async def test_long_conversations_stay_within_the_context_when_resent(make_engine: EngineFactory) -> None:
    engine = make_engine(max_context_len=1024)
    conversation: list[Message] = []
    sizes = []
    for turn in range(60):
        result = await ask(engine, conversation, f"question number {turn}")
        assert result.text == "Sure."
        sizes.append(result.prompt_tokens + result.perf.generate_tokens)
    assert max(sizes) <= 1024
    assert sizes[-1] < max(sizes)  # the oldest turns were dropped


async def test_busy_bound_and_cancellation(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    engine = make_engine(max_waiting=1)
    started = asyncio.Event()

    async def long_request() -> None:
        async with engine.chat(ChatRequest(SYSTEM, [Message("user", "long")], conversation_id="x")) as stream:
            async for _event in stream:
                started.set()

    running = asyncio.create_task(long_request())
    await started.wait()
    assert engine.state is EngineState.GENERATING
    queued = asyncio.create_task(ask(engine, [], "hello", cid="q"))
    await asyncio.sleep(0.01)
    assert engine.waiting == 1
    with pytest.raises(BusyError, match="busy"):
        await ask(engine, [], "hello", cid="r")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert (await queued).text == "Sure."
    assert engine.state is EngineState.READY


async def test_unload_during_generation(make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    engine = make_engine()
    started = asyncio.Event()
    chunks: list[object] = []

    async def long_request() -> None:
        async with engine.chat(ChatRequest(SYSTEM, [Message("user", "long")])) as stream:
            async for event in stream:
                chunks.append(event)
                started.set()

    task = asyncio.create_task(long_request())
    await started.wait()
    await engine.aclose()
    with pytest.raises(Exception, match="aborted"):
        await task
    assert len(chunks) < 300
    assert engine.state is EngineState.CLOSED
    with pytest.raises(ClosedError):
        await ask(engine, [], "hello")


@pytest.mark.parametrize("mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_without_kv_cache_size_the_engine_counts_itself(
    make_engine: EngineFactory, mode: KVMode
) -> None:
    """A library that does not export rkllm_get_kv_cache_size: the engine counts what it sent.

    In a kept conversation the count is exact; with keep_history=0 the cached system section
    cannot be known, so only the prefilled and generated tokens count.
    """
    engine = make_engine(kv_mode=mode)
    library = engine.runtime.library
    engine.runtime.library = replace(library, functions=library.functions - {"rkllm_get_kv_cache_size"})
    conversation: list[Message] = []
    await ask(engine, conversation, "hello")
    result = await ask(engine, conversation, "and then")
    counted = result.prompt_tokens + result.perf.generate_tokens
    if mode is KVMode.REUSE:
        assert counted == engine.runtime.kv_cache_size()
    else:
        assert counted == result.perf.prefill_tokens + result.perf.generate_tokens
    assert engine.stats.kv_tokens == counted


async def test_prompt_cache_file_is_recorded_with_its_size_and_hash(
    make_engine: EngineFactory, tmp_path: Path
) -> None:
    store = PromptCacheStore(tmp_path / "caches")
    await ask(make_engine(prompt_caches=store), [], "hello", cid="a")
    (cache_file,) = (tmp_path / "caches").glob("*.rkcache")
    record = json.loads(cache_file.with_suffix(".json").read_text())
    assert record["size"] == cache_file.stat().st_size
    assert record["sha256"] == hashlib.sha256(cache_file.read_bytes()).hexdigest()
    assert not list((tmp_path / "caches").glob("*.tmp"))  # written aside, then renamed


async def test_leftover_temporary_files_are_removed(make_engine: EngineFactory, tmp_path: Path) -> None:
    caches = tmp_path / "caches"
    caches.mkdir()
    leftover = caches / "0123.rkcache.tmp"
    leftover.write_bytes(bytes(4096))
    os.utime(leftover, (0, 0))  # left by a save interrupted long ago
    await ask(make_engine(prompt_caches=PromptCacheStore(caches)), [], "hello", cid="a")
    assert sorted(path.suffix for path in caches.iterdir()) == [".json", ".rkcache"]


async def test_unwritable_cache_directory_costs_one_warning(
    make_engine: EngineFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "caches"
    blocked.write_text("a file where the directory should be")  # mkdir fails, even for root
    engine = make_engine(prompt_caches=PromptCacheStore(blocked))
    assert (await ask(engine, [], "hello", cid="a")).text == "Sure."
    request = ChatRequest(SYSTEM + " Be brief.", [Message("user", "hello")], conversation_id="b")
    async with engine.chat(request) as stream:
        assert "".join([e.text async for e in stream if isinstance(e, TextDelta)]) == "Sure."
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "prompt-cache" in r.getMessage()]
    assert len(warnings) == 1


async def test_result_round_trips_as_plain_data(make_engine: EngineFactory) -> None:
    engine = make_engine()
    conversation: list[Message] = [Message("user", "turn on the kitchen light")]
    result = await send(engine, conversation, "a", tools=TOOLS)
    assert result.tool_calls
    assert ChatResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


@pytest.mark.parametrize("mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_a_cancelled_first_request_leaves_the_prompt_size_known(
    make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, mode: KVMode
) -> None:
    """The system section a cancelled run prefilled counts as cached, not as missing from the prompt."""
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    engine = make_engine(kv_mode=mode)
    started = asyncio.Event()

    async def long_request() -> None:
        async with engine.chat(ChatRequest(SYSTEM, [Message("user", "long")], conversation_id="x")) as stream:
            async for _event in stream:
                started.set()

    running = asyncio.create_task(long_request())
    await started.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    result = await ask(engine, [], "hello", cid="b")
    alone = await ask(make_engine(kv_mode=mode), [], "hello", cid="b")
    assert result.prompt_tokens == alone.prompt_tokens
    assert result.perf.prefill_tokens == TURN + 1
    assert result.cached_tokens == alone.prompt_tokens - TURN - 1
    assert result.cache_hit
