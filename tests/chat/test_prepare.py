"""The system prompt's prompt-cache file: restored after a restart, rebuilt when bad, dropped on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime import RKLLMRuntime, RunError
from rkllm_runtime.chat import ChatEngine, KVMode, Message, PromptCacheStore
from rkllm_runtime.emulator import Rule
from tests.chat.conftest import TURN, EngineFactory, ask
from tests.conftest import ModelFactory


@pytest.mark.parametrize("mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_restart_loads_the_prompt_cache_file(
    make_engine: EngineFactory, tmp_path: Path, mode: KVMode
) -> None:
    """The cache is restored for a keep_history=0 run (prefix detection), in every mode."""
    store = PromptCacheStore(tmp_path / "caches")
    cold = await ask(make_engine(prompt_caches=store, kv_mode=mode), [], "hello", cid="a")
    assert len(list((tmp_path / "caches").glob("*.rkcache"))) == 1
    restarted = make_engine(prompt_caches=store, kv_mode=mode)
    conversation: list[Message] = []
    warm = await ask(restarted, conversation, "hi there", cid="b")
    assert warm.cache_hit
    # Only the user turn after the cached "\n<|im_start|>user\n" header: 6 template tokens + 2 words.
    assert warm.perf.prefill_tokens == TURN - 4 + 2
    assert warm.perf.prefill_tokens <= 0.15 * cold.perf.prefill_tokens
    assert restarted.stats.kv_tokens < cold.perf.prefill_tokens  # the system section only, never twice
    follow_up = await ask(restarted, conversation, "and then", cid="b")
    assert follow_up.perf.prefill_tokens < 0.15 * cold.perf.prefill_tokens


@pytest.mark.parametrize("damage", ["truncated", "sidecar-mismatch", "garbage"])
async def test_bad_prompt_cache_files_are_ignored_and_replaced(
    make_engine: EngineFactory, tmp_path: Path, damage: str
) -> None:
    store = PromptCacheStore(tmp_path / "caches")
    await ask(make_engine(prompt_caches=store), [], "hello", cid="a")
    (cache_file,) = (tmp_path / "caches").glob("*.rkcache")
    if damage == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:20])
    elif damage == "sidecar-mismatch":  # recorded for another runtime release
        sidecar = cache_file.with_suffix(".json")
        sidecar.write_text(sidecar.read_text().replace('"1.', '"0.'))
    else:
        cache_file.write_bytes(b"\0" * 512)
    engine = make_engine(prompt_caches=store)
    result = await ask(engine, [], "hello", cid="b")
    assert result.text == "Sure."
    assert result.perf.prefill_tokens > 400  # nothing trusted: prefilled from scratch
    again = make_engine(prompt_caches=store)
    warm = await ask(again, [], "hello", cid="c")
    assert warm.perf.prefill_tokens < 20  # the file was replaced with a good one


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
async def test_damaged_prompt_cache_file_never_reaches_the_runtime(
    make_engine: EngineFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str], damage: str
) -> None:
    store = PromptCacheStore(tmp_path / "caches")
    await ask(make_engine(prompt_caches=store), [], "hello", cid="a")
    (cache_file,) = (tmp_path / "caches").glob("*.rkcache")
    data = cache_file.read_bytes()
    damaged = (
        data[: len(data) // 2] if damage == "truncated" else data[:-9] + bytes([data[-9] ^ 1]) + data[-8:]
    )
    cache_file.write_bytes(damaged)
    capfd.readouterr()
    result = await ask(make_engine(prompt_caches=store), [], "hello", cid="b")
    assert result.text == "Sure."
    assert not result.cache_hit
    assert "prompt cache" not in capfd.readouterr().err  # the runtime was never asked to load it
    warm = await ask(make_engine(prompt_caches=store), [], "hello", cid="c")
    assert warm.cache_hit  # rebuilt, and valid again


async def test_failed_run_leaves_no_temporary_file(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    model = make_model(Rule(reply="I was about to", error_after=2))
    caches = tmp_path / "caches"
    engine = ChatEngine(RKLLMRuntime.open(emulator_library, model), prompt_caches=PromptCacheStore(caches))
    try:
        with pytest.raises(RunError):
            await ask(engine, [], "hello")
    finally:
        await engine.aclose()
    assert sorted(caches.iterdir()) == []
