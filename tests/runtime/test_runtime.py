"""The high-level API against the emulator, for both ABIs."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rkllm_runtime import (
    AbortedError,
    CancelToken,
    ClosedError,
    Embeddings,
    InvalidTextError,
    ModelParams,
    Prompt,
    RKLLMError,
    RKLLMRuntime,
    Role,
    RunError,
    RunOptions,
    Sampling,
    Tokens,
)
from rkllm_runtime.emulator import Rule
from rkllm_runtime.errors import KVCacheError, PromptCacheError
from rkllm_runtime.runtime import param_values
from rkllm_runtime.types import RUNTIME_SAMPLING
from tests.conftest import ModelFactory, abis_with

TOOLS = json.dumps(
    [
        {
            "type": "function",
            "function": {
                "name": "HassTurnOn",
                "description": "Turns on a device",
                "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
            },
        }
    ]
)
# Tokens the chat template wraps around a user message (Qwen2.5's tokenizer):
# \n <|im_start|> user \n ... <|im_end|> \n <|im_start|> assistant \n
TURN_TEMPLATE_TOKENS = 9
TOOL_CALL = '<tool_call>\n{"name": "HassTurnOn", "arguments": {"name": "kitchen light"}}\n</tool_call>'


def open_runtime(library: Path, model: Path, **params: object) -> RKLLMRuntime:
    return RKLLMRuntime.open(library, model, ModelParams(**params))  # type: ignore[arg-type]


def test_stream_equals_the_script(emulator_library: Path, make_model: ModelFactory) -> None:
    reply = "The kitchen light is now on. Anything else?"
    with open_runtime(emulator_library, make_model(Rule(reply=reply))) as runtime:
        chunks: list[str] = []
        result = runtime.run(Prompt("turn on the kitchen light"), on_text=chunks.append)
    assert "".join(chunks) == result.text == reply
    assert len(chunks) > 5
    assert result.perf.generate_tokens == len(chunks) + 1  # one chunk per ASCII token, then <|im_end|>


def test_perf_stats(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="one two three"))) as runtime:
        result = runtime.run(Prompt("count"))
    perf = result.perf
    assert perf.generate_tokens == 3 + 1  # <|im_end|> is generated but not shown
    assert perf.prefill_tokens == TURN_TEMPLATE_TOKENS + 1  # "count" is one token
    assert perf.prefill_time_ms >= 0
    assert perf.generate_time_ms >= 0
    assert perf.memory_usage_mb > 1


def test_utf8_split_across_callbacks(emulator_library: Path, make_model: ModelFactory) -> None:
    reply = "Licht an: 日本語, Ελληνικά, emoji 🎉 and ü."
    with open_runtime(emulator_library, make_model(Rule(reply=reply))) as runtime:
        chunks: list[str] = []
        result = runtime.run(Prompt("hi"), on_text=chunks.append)
    assert result.text == reply
    assert "\ufffd" not in result.text
    assert "🎉" in chunks  # a 4-byte character arrives whole although the runtime split it in two


def test_invalid_utf8_is_replaced_not_fatal(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(
        emulator_library, make_model(Rule(reply=b"bad \xff\xfe bytes and a cut \xe6\x97"))
    ) as runtime:
        result = runtime.run(Prompt("hi"))
    assert result.text == "bad \ufffd\ufffd bytes and a cut \ufffd"


@pytest.mark.parametrize("text", ["cut\0here", "lone \ud800 surrogate"])
def test_text_a_c_string_cannot_carry_is_refused_before_the_runtime(
    emulator_library: Path, make_model: ModelFactory, text: str
) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="{input}"))) as runtime:
        with pytest.raises(InvalidTextError):
            runtime.run(Prompt(text))
        with pytest.raises(InvalidTextError):
            runtime.set_function_tools(text, "[]")
        assert runtime.run(Prompt("whole")).text == "whole"  # the handle is untouched


def test_keep_history_and_clear_kv_cache(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(reply="ok"), system="You are a helpful assistant.")
    with open_runtime(emulator_library, model) as runtime:
        first = runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        system_tokens = first.perf.prefill_tokens - TURN_TEMPLATE_TOKENS - 1
        assert system_tokens > 0
        size = runtime.kv_cache_size()
        follow_up = runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        assert follow_up.perf.prefill_tokens == TURN_TEMPLATE_TOKENS + 1  # only the new turn
        assert runtime.kv_cache_size() > size
        runtime.clear_kv_cache(keep_system_prompt=True)
        assert runtime.kv_cache_size() == system_tokens
        assert runtime.run(Prompt("hello")).perf.prefill_tokens == TURN_TEMPLATE_TOKENS + 1
        assert runtime.kv_cache_size() == system_tokens  # keep_history=0 drops the turn again
        runtime.clear_kv_cache(keep_system_prompt=False)
        assert runtime.kv_cache_size() == 0
        assert runtime.run(Prompt("hello")).perf.prefill_tokens == first.perf.prefill_tokens


def test_prompt_cache_skips_prefill_after_restart(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    """Prefix detection in keep_history=0 runs; a kept conversation gains nothing (as reported, #399)."""
    model = make_model(Rule(reply="ok"), system="A long system prompt. " * 50)
    cache = tmp_path / "system.cache"
    with open_runtime(emulator_library, model) as runtime:
        cold = runtime.run(Prompt("hello"), RunOptions(save_prompt_cache=str(cache)))
    assert cache.is_file()
    with open_runtime(emulator_library, model) as runtime:
        runtime.load_prompt_cache(cache)
        warm = runtime.run(Prompt("another question"))
        runtime.clear_kv_cache(keep_system_prompt=False)
        again = runtime.run(Prompt("hello"))
        runtime.release_prompt_cache()
    # The cached prefix covers the system prompt and the user-turn header (4 tokens);
    # "another question" is two tokens.
    assert warm.perf.prefill_tokens < cold.perf.prefill_tokens / 10
    assert warm.perf.prefill_tokens == TURN_TEMPLATE_TOKENS - 4 + 2
    assert again.perf.prefill_tokens == 1  # the whole input matched; its last token is evaluated
    with open_runtime(emulator_library, model) as runtime:
        runtime.load_prompt_cache(cache)
        kept = runtime.run(Prompt("another question"), RunOptions(keep_history=True))
    assert kept.perf.prefill_tokens > cold.perf.prefill_tokens - 5  # fully prefilled


def test_prompt_cache_file_has_the_vendors_size(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    """fp16 K and V of each cached token (the file is sparse: the size costs no disk)."""
    model = make_model(Rule(reply="ok"), system="A long system prompt. " * 50, kv_bytes_per_token=1000)
    cache = tmp_path / "system.cache"
    with open_runtime(emulator_library, model) as runtime:
        cold = runtime.run(Prompt("hello"), RunOptions(save_prompt_cache=str(cache)))
    assert cache.stat().st_size == cold.perf.prefill_tokens * 1000


def test_range_clear_is_refused_outside_a_paused_single_turn_run(
    emulator_library: Path, make_model: ModelFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="ok"), system="System.")) as runtime:
        runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        size = runtime.kv_cache_size()
        capfd.readouterr()
        with pytest.raises(KVCacheError, match="rkllm_clear_kv_cache failed"):
            runtime.clear_kv_cache_range(2, size)
        assert runtime.kv_cache_size() == size
        runtime.run(Prompt("hello"))
        with pytest.raises(RKLLMError):
            runtime.clear_kv_cache_range(2, 4)
    assert (
        "E rkllm: start_pos and end_pos are only valid when keep_history == 0 and the generation "
        "has been paused by returning 1 in the callback!"
    ) in capfd.readouterr().err


def test_setting_the_system_prompt_does_not_clear_the_cache(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    """Not documented either way: the emulator takes the unkind reading, so only an explicit clear is safe."""
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        runtime.set_function_tools("First system prompt.", "[]")
        runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        held = runtime.kv_cache_size()
        runtime.set_function_tools("Second system prompt.", "[]")
        assert runtime.kv_cache_size() == held
        appended = runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        assert appended.perf.prefill_tokens == TURN_TEMPLATE_TOKENS + 1  # on top of the old conversation
        runtime.clear_kv_cache(keep_system_prompt=False)
        fresh = runtime.run(Prompt("hello"), RunOptions(keep_history=True))
        assert runtime.kv_cache_size() == fresh.perf.prefill_tokens + fresh.perf.generate_tokens


def test_foreign_or_corrupt_prompt_cache_is_refused(
    emulator_library: Path, make_model: ModelFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "system.cache"
    with open_runtime(emulator_library, make_model(Rule(reply="ok"), name="a")) as runtime:
        runtime.run(Prompt("hello"), RunOptions(save_prompt_cache=str(cache)))
    with open_runtime(emulator_library, make_model(Rule(reply="ok"), name="b")) as runtime:
        with pytest.raises(PromptCacheError, match="rkllm_load_prompt_cache failed"):
            runtime.load_prompt_cache(cache)
        cache.write_bytes(cache.read_bytes()[:-3])
        with pytest.raises(RKLLMError):
            runtime.load_prompt_cache(cache)
        assert runtime.run(Prompt("hello")).text == "ok"


def test_function_tools_round_trip(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(
        Rule(match="kitchen", tools=True, reply=TOOL_CALL),
        Rule(role="tool", match="success", reply="Done, the kitchen light is on."),
        Rule(reply="I cannot control devices."),
    )
    with open_runtime(emulator_library, model) as runtime:
        assert runtime.run(Prompt("turn on the kitchen light")).text == "I cannot control devices."
        runtime.set_function_tools("You control a home.", TOOLS)
        with_tools = runtime.run(Prompt("turn on the kitchen light"), RunOptions(keep_history=True))
        assert with_tools.text == TOOL_CALL
        assert with_tools.perf.prefill_tokens > 100  # the tool schemas are part of the system prompt
        answer = runtime.run(
            Prompt(json.dumps({"success": True}), role=Role.TOOL), RunOptions(keep_history=True)
        )
    assert answer.text == "Done, the kitchen light is on."
    # The tool turn: its JSON plus the tool_response wrapper of the template.
    assert answer.perf.prefill_tokens < 25


def test_set_function_tools_without_template(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(reply="ok"), chat_template=False)
    with (
        open_runtime(emulator_library, model) as runtime,
        pytest.raises(RKLLMError, match="rkllm_set_function_tools failed"),
    ):
        runtime.set_function_tools("system", TOOLS)


def test_set_chat_template(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        runtime.set_chat_template("", "USER: ", "\nASSISTANT: ")
        result = runtime.run(Prompt("hello"))
    assert result.text == "ok"
    # USER | : | ␣ | hello | \n | ASS | IST | ANT | : | ␣
    assert result.perf.prefill_tokens == 10


def test_thinking(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(think="The user greets me.", reply="Hello!"))
    with open_runtime(emulator_library, model) as runtime:
        assert runtime.run(Prompt("hi")).text == "Hello!"
        thought = runtime.run(Prompt("hi", enable_thinking=True)).text
    assert thought == "<think>\nThe user greets me.\n</think>\n\nHello!"


def test_error_mid_stream(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(match="fail", reply="one two three four five", error_after=2), Rule(reply="fine"))
    with open_runtime(emulator_library, model) as runtime:
        chunks: list[str] = []
        with pytest.raises(RunError, match="reported an error"):
            runtime.run(Prompt("please fail"), on_text=chunks.append)
        assert chunks == ["one", " two"]
        assert runtime.run(Prompt("again")).text == "fine"


def test_run_returning_failure(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(match="fail", run_fail=True), Rule(reply="fine"))
    with open_runtime(emulator_library, model) as runtime:
        with pytest.raises(RunError):
            runtime.run(Prompt("fail"))
        assert runtime.run(Prompt("again")).text == "fine"


def test_prompt_longer_than_context(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="ok")), max_context_len=64) as runtime:
        with pytest.raises(RunError):
            runtime.run(Prompt("word " * 100))
        assert runtime.run(Prompt("short")).text == "ok"


def test_context_shift_keeps_the_cache_bounded(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(reply="a reply of several tokens"), system="System prompt here.")
    with open_runtime(emulator_library, model, max_context_len=128) as runtime:
        for _ in range(20):
            assert runtime.run(Prompt("hello there"), RunOptions(keep_history=True)).text
            assert runtime.kv_cache_size() <= 128


def test_abort_mid_generation_then_next_run(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "200")
    model = make_model(Rule(match="long", reply="word " * 400), Rule(reply="short"))
    with open_runtime(emulator_library, model) as runtime:
        started = threading.Event()
        chunks: list[str] = []

        def on_text(text: str) -> None:
            chunks.append(text)
            started.set()

        outcome: list[BaseException] = []

        def work() -> None:
            try:
                runtime.run(Prompt("long"), on_text=on_text)
            except BaseException as err:  # noqa: BLE001
                outcome.append(err)

        worker = threading.Thread(target=work)
        worker.start()
        assert started.wait(10)
        assert runtime.is_running
        assert runtime.abort()
        worker.join(10)
        assert not worker.is_alive()
        assert isinstance(outcome[0], AbortedError)
        assert len(chunks) < 100
        assert not runtime.is_running
        assert not runtime.abort()  # nothing running
        assert runtime.run(Prompt("next")).text == "short"


def test_concurrent_calls_are_serialised(
    emulator_library: Path, make_model: ModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RKLLM_EMU_DECODE_TPS", "2000")
    with open_runtime(emulator_library, make_model(Rule(reply="x " * 20))) as runtime:
        results: list[str] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                results.append(runtime.run(Prompt("go")).text)
                runtime.kv_cache_size()
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
    assert errors == []
    assert results == ["x " * 20] * 4


def test_consumer_exception_never_reaches_c(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="a b c"))) as runtime:

        def broken(_: str) -> None:
            raise ValueError("consumer bug")

        with pytest.raises(RunError, match="consumer bug"):
            runtime.run(Prompt("hi"), on_text=broken)
        assert runtime.run(Prompt("hi")).text == "a b c"


def test_token_and_embedding_inputs(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        assert runtime.run(Tokens([1, 2, 3, 4])).perf.prefill_tokens == 4
        embeddings = Embeddings([0.5] * 64 * 3, n_tokens=3)
        assert runtime.run(embeddings).perf.prefill_tokens == 3


def test_max_new_tokens_per_run_on_abi_1_3(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="a b c d e f")), max_new_tokens=5) as runtime:
        limited = runtime.run(Prompt("hi"), RunOptions(max_new_tokens=2))
        expected = 2 if runtime.library.abi.PER_RUN_SAMPLING else 5  # else fixed at load (no <|im_end|>: cut)
    assert limited.perf.generate_tokens == expected


def test_lora(emulator_library: Path, make_model: ModelFactory, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.rkllm"
    adapter.write_bytes(b"lora")
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        with pytest.raises(RKLLMError, match="rkllm_load_lora failed"):
            runtime.load_lora(tmp_path / "missing", "style")
        runtime.load_lora(adapter, "style")
        assert runtime.run(Prompt("hi"), RunOptions(lora_adapter="style")).text == "ok"


def test_closed_runtime(emulator_library: Path, make_model: ModelFactory) -> None:
    runtime = open_runtime(emulator_library, make_model(Rule(reply="ok")))
    runtime.close()
    runtime.close()
    assert not runtime.is_running
    with pytest.raises(ClosedError):
        runtime.run(Prompt("hi"))
    with pytest.raises(ClosedError):
        runtime.kv_cache_size()


def test_parameters_start_from_the_runtimes_defaults(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    """Only the fields the binding means to change differ from rkllm_createDefaultParam()."""
    with open_runtime(emulator_library, make_model()) as runtime:
        defaults = runtime.default_param()
        built = param_values(runtime._build_param())
    changed = {name for name in defaults if built[name] != defaults[name]}
    assert changed == {"max_context_len"}  # skip_special_token and is_async already match
    assert built["max_context_len"] == 4096


def test_set_parameters_override_the_defaults(emulator_library: Path, make_model: ModelFactory) -> None:
    params = {"n_keep": 64, "sampling": Sampling(top_k=1), "enabled_cpus_mask": 0xF0}
    with open_runtime(emulator_library, make_model(), **params) as runtime:
        built = param_values(runtime._build_param())
    assert (built["n_keep"], built["top_k"], built["enabled_cpus_num"]) == (64, 1, 4)


@abis_with(lambda abi: abi.PER_RUN_SAMPLING)
def test_a_runs_sampling_keeps_the_runtimes_value_for_each_field_it_leaves_out(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    """``{"temperature": 0.5}`` alone samples with the runtime's top-k 40, not greedily."""
    with open_runtime(emulator_library, make_model()) as runtime:
        c_infer, _ = runtime._build_infer_param(RunOptions(sampling=Sampling(temperature=0.5)))
        sampling = c_infer.sampling_params.contents
        defaults = runtime.default_param()
    assert (sampling.top_k, sampling.temperature, sampling.mirostat) == (40, 0.5, 0)
    assert sampling.top_p == pytest.approx(defaults["top_p"])
    assert sampling.repeat_penalty == pytest.approx(defaults["repeat_penalty"])


def test_the_documented_sampling_is_the_runtimes_own(
    emulator_library: Path, make_model: ModelFactory
) -> None:
    """``RUNTIME_SAMPLING``, shown in the options form, is what ``rkllm_createDefaultParam()`` gives."""
    with open_runtime(emulator_library, make_model()) as runtime:
        defaults = runtime.default_param()
    assert {name: defaults[name] for name in Sampling.__dataclass_fields__} == pytest.approx(
        asdict(RUNTIME_SAMPLING)
    )


def test_logits_of_a_prompt_and_of_fed_tokens(emulator_library: Path, make_model: ModelFactory) -> None:
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        prompt = runtime.logits(Prompt("count"), keep_history=True)
        fed = runtime.logits(Tokens([1, 2, 3]), keep_history=True)
    assert prompt.values.dtype == np.float32
    assert prompt.width == fed.width == 151936  # Qwen2.5's output layer, padding included
    assert prompt.perf.prefill_tokens == TURN_TEMPLATE_TOKENS + 1
    assert fed.perf.prefill_tokens == 3
    assert prompt.perf.generate_tokens == fed.perf.generate_tokens == 0


def test_logits_run_cancelled_before_it_starts(emulator_library: Path, make_model: ModelFactory) -> None:
    token = CancelToken()
    token.set()
    with open_runtime(emulator_library, make_model(Rule(reply="ok"))) as runtime:
        with pytest.raises(AbortedError, match="cancelled before it started"):
            runtime.logits(Prompt("hi"), keep_history=False, token=token)
        assert runtime.logits(Prompt("hi"), keep_history=False).width == 151936
