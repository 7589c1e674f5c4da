"""The constrained decoder on the emulator: the grammar wins over what the scripted model wants to say."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from rkllm_runtime import AbortedError, CancelToken, Prompt, RKLLMRuntime, Sampling
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatResult, KVMode, Message
from rkllm_runtime.chat.constrained import (
    ConstrainedDecoder,
    GrammarError,
    json_grammar,
    tool_call_grammar,
)
from rkllm_runtime.chat.messages import ToolSpec
from rkllm_runtime.chat.structured import InvalidReplyError, answer
from rkllm_runtime.chat.tool_choice import MissingCallError, answer_with_call
from rkllm_runtime.chat.vocabulary import VocabularyError, load_vocabulary
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call

SWITCH = {"type": "object", "properties": {"state": {"enum": ["on", "off"]}}, "required": ["state"]}
TOOLS = [
    ToolSpec(
        "HassTurnOn", {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    ),
    ToolSpec(
        "HassTurnOff", {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    ),
]
WIDTH = 151936


@pytest.fixture
def open_decoder(
    emulator_library: Path, make_model: ModelFactory, qwen_vocabulary: Path
) -> Iterator[type[ConstrainedDecoder]]:
    opened: list[RKLLMRuntime] = []

    def factory(*rules: Rule, **fields: object) -> ConstrainedDecoder:
        runtime = RKLLMRuntime.open(emulator_library, make_model(*rules, **fields))
        opened.append(runtime)
        return ConstrainedDecoder(runtime, load_vocabulary(runtime.model_path, WIDTH), seed=7)

    yield factory  # type: ignore[misc]
    for runtime in opened:
        runtime.close()


def test_without_a_grammar_the_scripted_reply_comes_back(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply="Sure, the light is on."))
    generated = decoder.runtime.run(Prompt("hi"))
    decoder.runtime.clear_kv_cache()
    decoded = decoder.run(Prompt("hi"), None)
    assert decoded.text == generated.text == "Sure, the light is on."
    assert decoded.perf.generate_tokens == generated.perf.generate_tokens


def test_a_schema_overrides_the_scripted_greedy_reply(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='Sure! {"state": "maybe"} Anything else?'))
    decoded = decoder.run(Prompt("switch"), json_grammar(SWITCH))
    assert json.loads(decoded.text)["state"] in {"on", "off"}
    assert decoded.text.startswith('{"state": "')  # the script's own tokens where the grammar allows them


def test_any_json_object(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='Here you are: {"kitchen": "on", "hall": "off"}'))
    decoded = decoder.run(Prompt("state"), json_grammar({"type": "object"}))
    assert isinstance(json.loads(decoded.text), dict)


def test_a_named_tool_call_with_valid_arguments(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply="I would rather not."))
    grammar = tool_call_grammar(TOOLS, ["HassTurnOff"], decoder.vocabulary)
    decoded = decoder.run(Prompt("off please"), grammar)
    body = decoded.text.removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    assert json.loads(body)["name"] == "HassTurnOff"
    assert isinstance(json.loads(body)["arguments"]["name"], str)


def test_a_required_call_keeps_the_one_the_model_wanted(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply=call("HassTurnOn", name="kitchen")))
    decoded = decoder.run(
        Prompt("on"), tool_call_grammar(TOOLS, ["HassTurnOn", "HassTurnOff"], decoder.vocabulary)
    )
    assert decoded.text == call("HassTurnOn", name="kitchen")
    # The forced stretches are fed in one run each: fewer runs than tokens.
    assert decoded.perf.generate_tokens == len(decoder.vocabulary.tokenizer.tokenize_str(decoded.text)) + 1


def test_a_call_ended_early_during_a_logits_run_is_the_reply(open_decoder: type[ConstrainedDecoder]) -> None:
    """The chat engine ends a run once its call is whole; the runtime ends a logits run under way
    then without logits, and the call said so far is the reply."""
    decoder = open_decoder(Rule(reply=call("HassTurnOn", name="kitchen")), run_overhead_ms=300)
    token = CancelToken()
    ended: list[bool] = []
    timers: list[threading.Timer] = []

    def heard(text: str) -> None:
        if "</tool_call>" in text:  # the end of the turn follows, fed in the next logits run
            timers.append(threading.Timer(0.05, lambda: ended.append(decoder.runtime.end_early(token))))
            timers[0].start()

    grammar = tool_call_grammar(TOOLS, ["HassTurnOn"], decoder.vocabulary)
    decoded = decoder.run(Prompt("on"), grammar, on_text=heard, token=token)
    timers[0].join()
    assert decoded.text == call("HassTurnOn", name="kitchen")
    assert ended == [True]  # ended while a run was under way


def test_the_cache_holds_the_reply_and_its_end_of_turn(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='{"state": "on"}'))
    decoded = decoder.run(Prompt("switch"), json_grammar(SWITCH))
    assert decoder.runtime.kv_cache_size() == decoded.perf.prefill_tokens + decoded.perf.generate_tokens


def test_utf8_split_across_tokens_streams_whole_characters(open_decoder: type[ConstrainedDecoder]) -> None:
    reply = '{"name": "Küche 🎉 日本"}'
    decoder = open_decoder(Rule(reply=reply))
    chunks: list[str] = []
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    decoded = decoder.run(Prompt("name"), json_grammar(schema), on_text=chunks.append)
    assert "".join(chunks) == decoded.text == reply
    assert "\ufffd" not in "".join(chunks)


def test_cancelled_mid_reply(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='{"state": "on"}'))
    token = CancelToken()
    seen: list[str] = []

    def cancel_after_first(text: str) -> None:
        seen.append(text)
        token.set()

    with pytest.raises(AbortedError):
        decoder.run(Prompt("switch"), json_grammar(SWITCH), on_text=cancel_after_first, token=token)
    assert "".join(seen) == '{"state": "'  # the first choice and the tokens it forces: one run, then no more


def test_cancelled_from_another_thread_before_the_run(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='{"state": "on"}'))
    token = CancelToken()
    threading.Thread(target=token.set).start()
    token.wait()
    with pytest.raises(AbortedError, match="cancelled before it started"):
        decoder.run(Prompt("switch"), json_grammar(SWITCH), token=token)


def test_logprobs_of_the_chosen_tokens_and_their_alternatives(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='{"state": "maybe"}'))
    decoded = decoder.run(Prompt("switch"), json_grammar(SWITCH), top_logprobs=3)
    assert "".join(item.token for item in decoded.logprobs) == decoded.text
    assert all(len(item.top) == 3 for item in decoded.logprobs)
    first = decoded.logprobs[0]
    assert first.top[0].token == first.token == '{"'  # the model's own choice, allowed here
    overridden = [item for item in decoded.logprobs if item.top[0].token == "maybe"]
    assert overridden  # the model wanted "maybe"; the grammar chose "on" or "off", less likely to the model
    assert all(item.logprob < item.top[0].logprob for item in overridden)


def test_sampling_with_a_temperature_stays_within_the_grammar(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply='{"state": "maybe"}'))
    sampling = Sampling(temperature=1.0, top_k=5, top_p=0.9)
    states = {
        json.loads(decoder.run(Prompt("switch"), json_grammar(SWITCH), sampling=sampling).text)["state"]
    }
    for _ in range(5):
        decoder.runtime.clear_kv_cache()
        states.add(
            json.loads(decoder.run(Prompt("switch"), json_grammar(SWITCH), sampling=sampling).text)["state"]
        )
    assert states <= {"on", "off"}


def test_top_k_of_one_is_greedy(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply="Sure, the light is on."))
    decoded = decoder.run(Prompt("hi"), None, sampling=Sampling(temperature=1.0, top_k=1))
    assert decoded.text == "Sure, the light is on."


def test_a_schema_the_library_cannot_compile(open_decoder: type[ConstrainedDecoder]) -> None:
    decoder = open_decoder(Rule(reply="{}"))
    with pytest.raises(GrammarError):
        decoder.run(Prompt("x"), json_grammar({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}))


def test_no_vocabulary_beside_the_model(make_model: ModelFactory) -> None:
    model = make_model(Rule(reply="ok"))
    with pytest.raises(VocabularyError, match=r"no tokenizer\.json beside model1\.rkllm"):
        load_vocabulary(model, WIDTH)


def test_a_vocabulary_wider_than_the_logits(make_model: ModelFactory, qwen_vocabulary: Path) -> None:
    model = make_model(Rule(reply="ok"))
    with pytest.raises(VocabularyError, match=r"has 151936 tokens but the model's logits have 32000"):
        load_vocabulary(model, 32000)


# ---------------------------------------------------------------- through the chat engine

SYSTEM = "You are a voice assistant."
ENGINE_RULES = (
    Rule(match="how are you", reply="Fine, thanks."),  # first: a re-sent history holds earlier words
    Rule(match="switch", reply='Sure! {"state": "maybe"}'),
    Rule(match="lights", reply="I would rather chat about the weather."),
    Rule(match="gate", reply=call("HassTurnOn", name="gate")),
    Rule(reply="Fine, thanks."),
)


@pytest.fixture
async def grammar_engine(
    emulator_library: Path, make_model: ModelFactory
) -> AsyncIterator[Callable[..., ChatEngine]]:
    engines: list[ChatEngine] = []

    def factory(kv_mode: KVMode = KVMode.CONSERVATIVE, **fields: object) -> ChatEngine:
        runtime = RKLLMRuntime.open(emulator_library, make_model(*ENGINE_RULES, **fields))
        engines.append(ChatEngine(runtime, kv_mode=kv_mode))
        return engines[-1]

    yield factory
    for engine in engines:
        await engine.aclose()


async def asked(engine: ChatEngine, request: ChatRequest) -> ChatResult:
    async with engine.chat(request) as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    return stream.result


def turn(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(SYSTEM, [Message("user", text)], conversation_id="c", **fields)


async def test_engine_answers_a_schema_in_one_run(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path
) -> None:
    engine = grammar_engine()
    result, data = await answer(partial(asked, engine), turn("switch"), SWITCH)
    assert data["state"] in {"on", "off"}
    assert (result.runs, result.constrained) == (1, True)
    assert engine.stats.constrained is True


async def test_engine_makes_a_required_call(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path
) -> None:
    engine = grammar_engine()
    result = await answer_with_call(partial(asked, engine), turn("lights", tools=TOOLS), ["HassTurnOff"])
    assert [call.name for call in result.tool_calls] == ["HassTurnOff"]
    assert isinstance(result.tool_calls[0].arguments["name"], str)
    assert result.constrained


async def test_with_a_schema_and_tools_a_call_may_come_first(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path
) -> None:
    engine = grammar_engine()
    result, data = await answer(partial(asked, engine), turn("open the gate", tools=TOOLS), SWITCH)
    assert data is None  # the caller runs the call, then asks again
    assert [(call.name, call.arguments) for call in result.tool_calls] == [("HassTurnOn", {"name": "gate"})]
    assert result.constrained


@pytest.mark.parametrize("kv_mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_engine_keeps_the_cache_right_after_a_constrained_turn(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path, kv_mode: KVMode
) -> None:
    engine = grammar_engine(kv_mode)
    conversation = [Message("user", "switch")]
    first = await asked(engine, turn("switch", output_schema=SWITCH))
    conversation += [Message("assistant", first.text), Message("user", "how are you")]
    follow_up = await asked(engine, ChatRequest(SYSTEM, conversation, conversation_id="c"))
    assert follow_up.text == "Fine, thanks."
    if kv_mode is KVMode.REUSE:  # the constrained reply stayed in the cache, closed as a generated one
        assert follow_up.cache_hit
        assert (
            follow_up.prompt_tokens
            == first.prompt_tokens + first.perf.generate_tokens + follow_up.perf.prefill_tokens
        )
    else:  # back to the system section, as after any keep_history=0 run
        assert engine.runtime.kv_cache_size() == follow_up.prompt_tokens - follow_up.perf.prefill_tokens


async def test_engine_gives_log_probabilities(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path
) -> None:
    engine = grammar_engine()
    result = await asked(engine, turn("hello", top_logprobs=2))
    assert result.text == "Fine, thanks."
    assert "".join(item.token for item in result.logprobs) == "Fine, thanks."
    assert not result.constrained


async def test_without_a_vocabulary_the_engine_checks_and_asks_again(
    grammar_engine: Callable[..., ChatEngine], caplog: pytest.LogCaptureFixture
) -> None:
    engine = grammar_engine()
    with pytest.raises(InvalidReplyError):
        await answer(partial(asked, engine), turn("switch"), SWITCH)
    assert engine.stats.constrained is False
    assert (
        engine.stats.constrained_note == "no tokenizer.json beside model1.rkllm (the base model's vocabulary)"
    )
    await asked(engine, turn("switch", output_schema=SWITCH))
    assert caplog.text.count("checked and asked for again instead") == 1  # said once


async def test_when_logits_runs_keep_nothing_the_engine_checks_and_asks_again(
    grammar_engine: Callable[..., ChatEngine], qwen_vocabulary: Path
) -> None:
    engine = grammar_engine(logits_history="drop")
    with pytest.raises(MissingCallError):
        await answer_with_call(partial(asked, engine), turn("lights", tools=TOOLS), ["HassTurnOff"])
    assert engine.stats.constrained is False
    assert "does not keep a logits run's input" in engine.stats.constrained_note
    assert engine.stats.requests == 2  # the answer and the retry, generated as before
