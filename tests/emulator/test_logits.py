"""The scripted engine's logits mode: the scripted reply as the greedy choice, token inputs, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rkllm_runtime import ModelParams, Prompt, RKLLMRuntime, Tokens
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory

IM_END = 151645
REPLY = 'Sure! {"state": "on"}'


def greedy_reply(runtime: RKLLMRuntime, prompt: str, limit: int = 40) -> list[int]:
    """The tokens a greedy decoder feeding every choice back gets, up to the end of the turn."""
    logits = runtime.logits(Prompt(prompt), keep_history=True)
    chosen: list[int] = []
    while len(chosen) < limit:
        chosen.append(int(np.argmax(logits.values)))
        if chosen[-1] == IM_END:
            break
        logits = runtime.logits(Tokens([chosen[-1]]), keep_history=True)
    return chosen


def test_the_scripted_reply_is_the_greedy_choice(emulator_library: Path, make_model: ModelFactory) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply=REPLY))) as runtime:
        generated = runtime.run(Prompt("hi"))
        runtime.clear_kv_cache()
        chosen = greedy_reply(runtime, "hi")
    assert chosen[-1] == IM_END
    assert len(chosen) == generated.perf.generate_tokens  # the reply's tokens, then <|im_end|>


def test_an_off_script_token_leaves_the_model_wanting_the_same(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply=REPLY))) as runtime:
        first = runtime.logits(Prompt("hi"), keep_history=True)
        wanted = int(np.argmax(first.values))
        forced = runtime.logits(Tokens([90]), keep_history=True)  # "{": not the script's next token
        assert int(np.argmax(forced.values)) == wanted
        # The script's later tokens rank next, nearer ones higher, above every other token.
        ranked = np.argsort(forced.values)[::-1][:3].tolist()
    assert ranked[0] == wanted
    assert forced.values[ranked[1]] > forced.values[ranked[2]] > 1.0


def test_token_inputs_are_prefilled_and_counted(emulator_library: Path, make_model: ModelFactory) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply=REPLY))) as runtime:
        prompt = runtime.logits(Prompt("hi"), keep_history=True)
        before = runtime.kv_cache_size()
        fed = runtime.logits(Tokens([1, 2, 3]), keep_history=True)
        after = runtime.kv_cache_size()
    assert (prompt.perf.prefill_tokens, fed.perf.prefill_tokens) == (before, 3)
    assert after == before + 3
    assert fed.perf.generate_tokens == 0


@pytest.mark.parametrize(("logits_history", "kept"), [("keep", True), ("drop", False)])
def test_whether_a_logits_run_keeps_its_input_is_the_model_files_choice(
    emulator_library: Path, make_model: ModelFactory, logits_history: str, kept: bool
) -> None:
    model = make_model(Rule(reply=REPLY), logits_history=logits_history)
    with RKLLMRuntime.open(emulator_library, model, ModelParams()) as runtime:
        runtime.logits(Prompt("hi"), keep_history=True)
        size = runtime.kv_cache_size()
        runtime.logits(Tokens([1, 2]), keep_history=True)
        grown = runtime.kv_cache_size() - size
        runtime.logits(Tokens([3]), keep_history=False)
        after_discarding = runtime.kv_cache_size()
    assert size == (10 if kept else 0)  # the prompt: "hi" in the chat template
    assert grown == (2 if kept else 0)
    assert after_discarding == 0  # keep_history=0 goes back to the (empty) system section
