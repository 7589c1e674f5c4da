"""The llama.cpp engine's logits mode: llama.cpp's own next-token logits, token inputs, the KV cache."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from rkllm_runtime import ModelParams, Prompt, RKLLMRuntime, RunOptions, Sampling, Tokens
from tests.conftest import RealModel

SYSTEM = "You are a helpful assistant. Answer in one short sentence."
QUESTION = "What is the capital of France?"
KEEPS_INPUT = "RKLLM_EMU_LOGITS_HISTORY"


@pytest.fixture(scope="module")
def runtime(real_model: RealModel) -> Iterator[RKLLMRuntime]:
    # Greedy, so that generating and choosing the largest logit agree.
    params = ModelParams(max_context_len=1024, max_new_tokens=12, sampling=Sampling(top_k=1))
    with RKLLMRuntime.open(real_model.library, real_model.model, params) as loaded:
        loaded.set_function_tools(SYSTEM, "[]")
        yield loaded


@pytest.fixture(autouse=True)
def empty_cache(runtime: RKLLMRuntime) -> None:
    runtime.clear_kv_cache(keep_system_prompt=False)


def test_the_largest_logit_is_the_token_greedy_decoding_says_first(runtime: RKLLMRuntime) -> None:
    answer = runtime.run(Prompt(QUESTION)).text
    runtime.clear_kv_cache(keep_system_prompt=False)
    logits = runtime.logits(Prompt(QUESTION), keep_history=True)
    assert logits.values.dtype == np.float32
    assert logits.width >= 49152  # SmolLM2's vocabulary
    chosen = int(np.argmax(logits.values))
    # Fed back as a token, the chosen one is followed by the rest of the greedy answer.
    rest = runtime.run(Tokens([chosen]), RunOptions(keep_history=True, max_new_tokens=11)).text
    assert rest
    assert answer.endswith(rest)
    assert 0 < len(answer) - len(rest) <= 8  # one token's text: "The", " Paris", ...


def test_a_logits_run_reports_its_prefill_and_no_generated_token(runtime: RKLLMRuntime) -> None:
    first = runtime.logits(Prompt(QUESTION), keep_history=False)
    assert first.perf.prefill_tokens > 20  # the system section and the turn
    assert first.perf.generate_tokens == 0
    assert first.perf.memory_usage_mb > 50
    again = runtime.logits(Prompt(QUESTION), keep_history=False)
    assert 0 < again.perf.prefill_tokens < first.perf.prefill_tokens  # the turn only: the system stays
    assert np.array_equal(np.argmax(again.values), np.argmax(first.values))


@pytest.mark.parametrize(("keeps", "kept"), [("keep", True), ("drop", False)])
def test_keep_history_keeps_the_input_only_where_the_switch_says(
    runtime: RKLLMRuntime, monkeypatch: pytest.MonkeyPatch, keeps: str, kept: bool
) -> None:
    monkeypatch.setenv(KEEPS_INPUT, keeps)
    runtime.run(Prompt("Hello"), RunOptions(keep_history=True, max_new_tokens=2))
    before = runtime.kv_cache_size()
    logits = runtime.logits(Prompt(QUESTION), keep_history=True)
    fed = runtime.logits(Tokens([int(np.argmax(logits.values))]), keep_history=True)
    assert fed.perf.prefill_tokens == 1  # appended to what the cache holds
    assert runtime.kv_cache_size() == before + (logits.perf.prefill_tokens + 1 if kept else 0)


def test_keep_history_0_goes_back_to_the_system_section(runtime: RKLLMRuntime) -> None:
    runtime.logits(Prompt(QUESTION), keep_history=False)
    system = runtime.kv_cache_size()
    runtime.logits(Prompt("And of Italy?"), keep_history=False)
    assert runtime.kv_cache_size() == system
