"""Evaluation: labels, the tokens each answer starts with, and probabilities from logits."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from rkllm_runtime import ModelParams, RKLLMRuntime
from rkllm_runtime.chat import ChatEngine, ChatRequest, Message
from rkllm_runtime.chat.evaluate import (
    EvaluationRequest,
    EvaluationResult,
    Question,
    QuestionKind,
    answer,
    first_tokens,
    label_encoder,
    labels,
    probabilities,
    turn,
)
from rkllm_runtime.emulator import Rule
from rkllm_runtime.types import PerfStats
from tests.conftest import ModelFactory

NOUL = Question(QuestionKind.NOUL, "Is anyone home?")
CHOICE = Question(QuestionKind.CHOICE, "Which room?", (("kitchen", "where food is"), ("hall", "the way in")))
SCORE = Question(QuestionKind.SCORE, "How warm?", tuple((str(i), f"level {i}") for i in range(4)))


def by_character(text: str) -> Sequence[int]:
    """A tokenizer of one token per character, its id the code point."""
    return [ord(character) for character in text]


def test_labels_per_kind() -> None:
    assert labels(NOUL) == ("yes", "no")
    assert labels(CHOICE) == ("A", "B")
    assert labels(SCORE) == ("0", "1", "2", "3")
    eleven = Question(QuestionKind.SCORE, "How much?", tuple((str(i), str(i)) for i in range(11)))
    assert labels(eleven)[-1] == "K"  # more levels than digits: letters


def test_the_turn_lists_the_options_under_their_labels() -> None:
    assert turn(CHOICE).text == (
        "Which room?\nThe options:\nA: kitchen (where food is)\nB: hall (the way in)\n"
        "Answer with the label of one option."
    )
    assert turn(NOUL).text == "Is anyone home?\nAnswer yes or no."


def test_first_tokens_take_every_written_form_and_drop_shared_ones() -> None:
    yes, no = first_tokens(by_character, ["yes", "no"])
    assert yes == {ord("y"), ord("Y")}  # " yes" starts with the space, which both answers share
    assert no == {ord("n"), ord("N")}
    with pytest.raises(ValueError, match="cannot tell the answers"):
        first_tokens(by_character, ["yes", "yellow"])


def test_probabilities_are_the_answers_shares_of_the_distribution() -> None:
    logits = np.full(128, -5.0, dtype=np.float32)
    logits[ord("y")], logits[ord("Y")], logits[ord("n")] = 2.0, 2.0, 1.0
    tokens = first_tokens(by_character, ["yes", "no"])
    yes, no = probabilities(logits, tokens)
    expected = 2 * math.e**2 / (2 * math.e**2 + math.e + math.exp(-5))
    assert yes == pytest.approx(expected)
    assert yes + no == pytest.approx(1.0)
    assert answer(NOUL, [yes, no]) == {"yes": yes, "no": no}
    assert answer(CHOICE, [0.25, 0.75]) == {"kitchen": 0.25, "hall": 0.75}


def test_huge_logits_do_not_overflow() -> None:
    logits = np.zeros(128, dtype=np.float32)
    logits[ord("A")] = 3e38
    assert probabilities(logits, first_tokens(by_character, ["A", "B"])) == [1.0, 0.0]


def test_requests_and_results_cross_the_wire_whole() -> None:
    request = EvaluationRequest('{"light": "on"}', {"home": NOUL, "room": CHOICE, "warm": SCORE})
    assert EvaluationRequest.from_dict(request.as_dict()) == request
    result = EvaluationResult({"home": {"yes": 0.9, "no": 0.1}}, PerfStats(prefill_tokens=12))
    assert EvaluationResult.from_dict(result.as_dict()) == result


@pytest.mark.parametrize(
    ("questions", "error"),
    [
        ({}, "non-empty"),
        ({"q": {"kind": "maybe", "instructions": "?"}}, "maybe"),
        ({"q": {"kind": "choice", "instructions": "Which?", "criteria": [["a", "b"]]}}, "between 2 and 26"),
        ({"q": {"kind": "noul", "instructions": " "}}, "no instructions"),
    ],
)
def test_a_request_that_cannot_be_asked_is_refused(questions: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        EvaluationRequest.from_dict({"state": "{}", "questions": questions})


# --------------------------------------------------------------- the engine, on the emulator

STATE = '{"kitchen light": "on", "hall light": "off", "outside": "18 °C"}'
EVALUATION_RULES = (
    Rule(match="Is the kitchen light on?", reply="yes"),
    Rule(match="Is the hall light on?", reply="No, it is off."),
    Rule(match="Which room is lit?", reply="B"),
    Rule(match="How warm is it outside?", reply="1"),
    Rule(reply="Sure."),
)
LIT = Question(QuestionKind.NOUL, "Is the kitchen light on?")
DARK = Question(QuestionKind.NOUL, "Is the hall light on?")
ROOM = Question(
    QuestionKind.CHOICE, "Which room is lit?", (("hall", "the way in"), ("kitchen", "for cooking"))
)
WARMTH = Question(QuestionKind.SCORE, "How warm is it outside?", (("0", "cold"), ("1", "mild"), ("2", "hot")))


@pytest.fixture
async def engine(
    emulator_library: Path, make_model: ModelFactory, qwen_vocabulary: Path
) -> AsyncIterator[ChatEngine]:
    runtime = RKLLMRuntime.open(emulator_library, make_model(*EVALUATION_RULES), ModelParams())
    engine = ChatEngine(runtime)
    yield engine
    await engine.aclose()


async def test_answers_follow_what_the_model_would_say(engine: ChatEngine) -> None:
    result = await engine.evaluate(
        EvaluationRequest(STATE, {"lit": LIT, "dark": DARK, "room": ROOM, "warmth": WARMTH})
    )
    assert result.answers["lit"]["yes"] > 0.99
    assert result.answers["dark"]["no"] > 0.99  # "No, it is off.": the first token decides
    assert max(result.answers["room"], key=result.answers["room"].__getitem__) == "kitchen"
    assert result.answers["warmth"]["1"] > 0.99
    for shares in result.answers.values():
        assert sum(shares.values()) == pytest.approx(1)
    assert result.perf.generate_tokens == 0  # nothing sampled


async def test_the_state_is_prefilled_once(engine: ChatEngine) -> None:
    first = await engine.evaluate(EvaluationRequest(STATE, {"lit": LIT}))
    both = await engine.evaluate(EvaluationRequest(STATE, {"lit": LIT, "dark": DARK}))
    # The same state again: only the two question turns, each no longer than the first run's turn.
    question_turn = both.perf.prefill_tokens / 2
    assert question_turn < first.perf.prefill_tokens / 2
    other = await engine.evaluate(EvaluationRequest('{"kitchen light": "off"}', {"lit": LIT}))
    assert other.perf.prefill_tokens > question_turn * 2  # a new state is prefilled


async def test_a_chat_after_an_evaluation_sets_its_own_system_prompt(engine: ChatEngine) -> None:
    request = ChatRequest("You are a voice assistant.", [Message("user", "hello")])
    async with engine.chat(request) as stream:
        async for _ in stream:
            pass
    await engine.evaluate(EvaluationRequest(STATE, {"lit": LIT}))
    async with engine.chat(request) as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    assert stream.result.text == "Sure."
    assert not stream.result.cache_hit
    assert stream.result.cached_tokens == 0


def test_the_vocabulary_alone_gives_the_tokens_the_tokenizer_starts_labels_with(
    qwen_vocabulary: Path,
) -> None:
    """Read from tokenizer.json without the grammar library: what that library's tokenizer says first."""
    from llguidance import LLTokenizer

    encode = label_encoder(qwen_vocabulary.parent / "model.rkllm")
    tokenizer = LLTokenizer(str(qwen_vocabulary))
    forms = [
        f"{space}{form}"
        for label in ("yes", "no", "a", "b", "k", "0", "7")
        for form in {label, label.upper(), label.capitalize()}
        for space in ("", " ")
    ]
    assert [encode(form) for form in forms] == [tokenizer.tokenize_str(form)[:1] for form in forms]
