"""The emulator's llama.cpp engine: the same ABI and KV semantics, with a real model; its inputs found."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rkllm_runtime import (
    AbortedError,
    ModelParams,
    ModelRejectedError,
    Prompt,
    RKLLMRuntime,
    RunOptions,
    RunResult,
    Sampling,
)
from rkllm_runtime.emulator.real_model import MissingAssetError, qwen2_vocab
from tests.conftest import RealModel

SYSTEM = "You are a helpful assistant for a smart home. Answer in one short sentence."
# Loads a prompt-cache file in a process of its own: a runtime that aborts cannot take the tests down.
LOAD_IN_CHILD = """
import sys
from rkllm_runtime import ModelParams, RKLLMError, RKLLMRuntime
library, model, cache = sys.argv[1:]
with RKLLMRuntime.open(library, model, ModelParams(max_context_len=2048)) as runtime:
    try:
        runtime.load_prompt_cache(cache)
    except RKLLMError:
        print("refused")
    else:
        print("loaded")
"""


@pytest.fixture(scope="module")
def runtime(real_model: RealModel) -> Iterator[RKLLMRuntime]:
    # Greedy, so that the answers are the same on every run.
    params = ModelParams(max_context_len=2048, max_new_tokens=48, sampling=Sampling(top_k=1))
    with RKLLMRuntime.open(real_model.library, real_model.model, params) as loaded:
        loaded.set_function_tools(SYSTEM, "[]")
        yield loaded


def test_a_real_model_answers(runtime: RKLLMRuntime) -> None:
    chunks: list[str] = []
    result = runtime.run(Prompt("What is the capital of France?"), on_text=chunks.append)
    assert "Paris" in result.text
    assert len(chunks) > 2
    assert result.perf.generate_tokens >= len(chunks)
    assert result.perf.prefill_tokens > 20  # the system section and the turn
    assert result.perf.memory_usage_mb > 50


def test_kv_cache_semantics_match_the_scripted_engine(runtime: RKLLMRuntime) -> None:
    runtime.clear_kv_cache(keep_system_prompt=False)
    first = runtime.run(Prompt("Name a colour."), RunOptions(keep_history=True))
    system_and_turn = first.perf.prefill_tokens
    follow_up = runtime.run(Prompt("Another one?"), RunOptions(keep_history=True))
    assert follow_up.perf.prefill_tokens < system_and_turn / 2  # only the new turn
    assert runtime.kv_cache_size() == (
        system_and_turn
        + first.perf.generate_tokens
        + follow_up.perf.prefill_tokens
        + follow_up.perf.generate_tokens
    )
    runtime.clear_kv_cache(keep_system_prompt=True)
    fresh = runtime.run(Prompt("Name a colour."))
    assert fresh.perf.prefill_tokens < system_and_turn


@contextmanager
def restarted_with_prompt_cache(
    runtime: RKLLMRuntime, real_model: RealModel, cache: Path
) -> Iterator[tuple[RunResult, RKLLMRuntime]]:
    """Save a prompt cache on ``runtime``, then open a second handle that has loaded it."""
    runtime.clear_kv_cache(keep_system_prompt=False)
    cold = runtime.run(Prompt("Hello!"), RunOptions(save_prompt_cache=str(cache)))
    with RKLLMRuntime.open(
        real_model.library, real_model.model, ModelParams(max_context_len=2048)
    ) as restarted:
        restarted.set_function_tools(SYSTEM, "[]")
        restarted.load_prompt_cache(cache)
        yield cold, restarted


def test_prompt_cache_file(runtime: RKLLMRuntime, real_model: RealModel, tmp_path: Path) -> None:
    with restarted_with_prompt_cache(runtime, real_model, tmp_path / "system.cache") as (cold, restarted):
        warm = restarted.run(Prompt("Good morning!"))
    assert warm.perf.prefill_tokens < cold.perf.prefill_tokens / 2


def test_prompt_cache_serves_only_keep_history_0_runs_and_a_new_system_prompt_keeps_the_cache(
    runtime: RKLLMRuntime, real_model: RealModel, tmp_path: Path
) -> None:
    with restarted_with_prompt_cache(runtime, real_model, tmp_path / "system.cache") as (cold, restarted):
        kept = restarted.run(Prompt("Hello!"), RunOptions(keep_history=True))
        assert kept.perf.prefill_tokens == cold.perf.prefill_tokens  # a kept conversation ignores it
        in_kv = restarted.kv_cache_size()
        restarted.set_function_tools("You are a pirate.", "[]")
        assert restarted.kv_cache_size() == in_kv  # left for the caller to clear
        restarted.clear_kv_cache(keep_system_prompt=False)
        assert restarted.kv_cache_size() == 0


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_prompt_cache_is_refused_not_fatal(
    runtime: RKLLMRuntime, real_model: RealModel, tmp_path: Path, keep: float
) -> None:
    cache = tmp_path / "system.cache"
    runtime.clear_kv_cache(keep_system_prompt=False)
    runtime.run(Prompt("Hello!"), RunOptions(save_prompt_cache=str(cache)))
    assert [path.name for path in tmp_path.iterdir()] == ["system.cache"]  # no temporary file left
    data = cache.read_bytes()
    cache.write_bytes(data[: int(len(data) * keep)])
    command = [
        sys.executable,
        "-c",
        LOAD_IN_CHILD,
        str(real_model.library),
        str(real_model.model),
        str(cache),
    ]
    child = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "refused"
    assert "is corrupt" in child.stderr


def test_abort_then_next_run(runtime: RKLLMRuntime) -> None:
    started = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            runtime.run(Prompt("Write a long story about a lamp."), on_text=lambda _: started.set())
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(60)
    runtime.abort()
    worker.join(60)
    assert isinstance(errors[0], AbortedError)
    assert runtime.run(Prompt("Say yes.")).text


def test_context_above_the_model_limit(real_model: RealModel) -> None:
    with pytest.raises(ModelRejectedError):
        RKLLMRuntime.open(real_model.library, real_model.model, ModelParams(max_context_len=1_000_000))


def test_a_missing_input_fails_in_one_line_naming_the_set_up_command(tmp_path: Path) -> None:
    # An installed llama-cpp-python without llama.cpp's files, found before the real one.
    info = tmp_path / "llama_cpp_python-0.3.36.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llama-cpp-python\nVersion: 0.3.36\n")
    (info / "RECORD").write_text("")
    process = subprocess.run(
        [sys.executable, "-m", "rkllm_runtime.emulator", "real-model"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 1
    assert process.stdout == ""
    assert process.stderr == "rkllm-emulator: llama-cpp-python has no llama.h: run scripts/setup\n"


def test_a_missing_vocabulary_names_the_set_up_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without uv's cache of the llama-cpp-python sdist, building says in one line what to run."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no uv to ask either
    with pytest.raises(MissingAssetError, match=r"ggml-vocab-qwen2\.gguf .* run scripts/setup$"):
        qwen2_vocab()
