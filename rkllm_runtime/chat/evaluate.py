"""Evaluation: questions answered with probabilities read from the logits, nothing sampled.

The state goes into the system section, so it is prefilled once and stays in the KV cache
while each question is one more turn, run in logits mode. The model is asked to answer with
a label (``yes``/``no``, a letter per option, a number per level); the probability of a label
is the mass of the tokens its answer can start with, among the labels' masses. Those tokens
come from the model's ``tokenizer.json`` alone (the longest entry each written form starts
with), so evaluations need no grammar library.
"""

from __future__ import annotations

import functools
import json
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rkllm_runtime.runtime import CancelToken, RKLLMRuntime
from rkllm_runtime.types import PerfStats, Prompt

from .vocabulary import TOKENIZER_FILE, VocabularyError, tokenizer_file

Encode = Callable[[str], Sequence[int]]
"""The model's tokenizer: text to token ids."""

INSTRUCTIONS = (
    "You evaluate the state of a home, given below. Each question offers labels: answer with "
    "exactly one of them and nothing else."
)
NO_STATE = "(no state given)"


class QuestionKind(StrEnum):
    """What a question asks for."""

    NOUL = "noul"
    """The probability of yes."""
    CHOICE = "choice"
    """One of named alternatives."""
    SCORE = "score"
    """One of ordered levels."""


@dataclass(frozen=True, slots=True)
class Question:
    """One question; ``criteria``: the alternatives (name, description) or levels (index, description)."""

    kind: QuestionKind
    instructions: str
    criteria: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """Questions about one state (text, usually JSON)."""

    state: str
    questions: Mapping[str, Question]

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return {"state": self.state, "questions": {key: asdict(q) for key, q in self.questions.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationRequest:
        """The inverse of :meth:`as_dict`; raises ``ValueError`` (or ``TypeError``) on anything else."""
        state, questions = data["state"], data["questions"]
        if not isinstance(state, str) or not isinstance(questions, dict) or not questions:
            raise ValueError('"state" must be a string and "questions" a non-empty object')
        read: dict[str, Question] = {}
        for key, item in questions.items():
            criteria = tuple((str(name), str(text)) for name, text in item.get("criteria", ()))
            question = Question(QuestionKind(item["kind"]), str(item["instructions"]), criteria)
            check_question(key, question)
            read[str(key)] = question
        return cls(state, read)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """Per question, the probability of each answer (noul: ``yes`` and ``no``), and the runs' figures."""

    answers: dict[str, dict[str, float]]
    perf: PerfStats

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """The inverse of :meth:`as_dict`."""
        answers = {
            str(key): {str(name): float(p) for name, p in probabilities.items()}
            for key, probabilities in data["answers"].items()
        }
        return cls(answers, PerfStats(**data["perf"]))


def check_question(key: str, question: Question) -> None:
    """Raise ``ValueError`` for a question this module cannot ask."""
    if not question.instructions.strip():
        raise ValueError(f"question {key!r} has no instructions")
    if question.kind is QuestionKind.NOUL:
        if question.criteria:
            raise ValueError(f"question {key!r}: a noul question has no criteria")
    elif not 2 <= len(question.criteria) <= len(string.ascii_uppercase):
        raise ValueError(f"question {key!r} must have between 2 and 26 criteria")


def labels(question: Question) -> tuple[str, ...]:
    """What the model answers with: yes/no, a letter per alternative, a number per level (up to 10)."""
    if question.kind is QuestionKind.NOUL:
        return ("yes", "no")
    count = len(question.criteria)
    if question.kind is QuestionKind.SCORE and count <= len(string.digits):
        return tuple(string.digits[:count])
    return tuple(string.ascii_uppercase[:count])


def system_prompt(request: EvaluationRequest) -> str:
    """The system section: the instructions and the state, shared by every question."""
    return f"{INSTRUCTIONS}\n\nThe state:\n{request.state.strip() or NO_STATE}"


def turn(question: Question) -> Prompt:
    """The user turn asking one question."""
    if question.kind is QuestionKind.NOUL:
        return Prompt(f"{question.instructions}\nAnswer yes or no.")
    noun = "option" if question.kind is QuestionKind.CHOICE else "level"
    lines = [
        f"{label}: {name} ({text})" if question.kind is QuestionKind.CHOICE else f"{label}: {text}"
        for label, (name, text) in zip(labels(question), question.criteria, strict=True)
    ]
    return Prompt(
        f"{question.instructions}\nThe {noun}s:\n"
        + "\n".join(lines)
        + f"\nAnswer with the label of one {noun}."
    )


def first_tokens(encode: Encode, answers: Sequence[str]) -> list[frozenset[int]]:
    """For each answer, the tokens its written forms (any case, after a space or not) start with.

    A token two answers could start with tells neither apart: it counts for none.
    """
    starts: list[set[int]] = []
    for answer in answers:
        forms = {answer, answer.lower(), answer.upper(), answer.capitalize()}
        starts.append({ids[0] for form in forms for text in (form, " " + form) if (ids := encode(text))})
    shared = {token for i, a in enumerate(starts) for b in starts[i + 1 :] for token in a & b}
    tokens = [frozenset(start - shared) for start in starts]
    if not all(tokens):
        raise ValueError(f"the vocabulary cannot tell the answers {list(answers)} apart by their first token")
    return tokens


def probabilities(logits: npt.NDArray[np.float32], tokens: Sequence[frozenset[int]]) -> list[float]:
    """The share of each answer's first tokens in the next-token distribution, among the answers."""
    values = logits.astype(np.float64)
    masses = np.array([np.logaddexp.reduce(values[sorted(ids)]) for ids in tokens])
    shares = np.exp(masses - masses.max())
    return [float(share) for share in shares / shares.sum()]


def answer(question: Question, shares: Sequence[float]) -> dict[str, float]:
    """The probabilities by answer: ``yes``/``no``, or the criteria's names (levels by their index)."""
    if question.kind is QuestionKind.NOUL:
        return dict(zip(("yes", "no"), shares, strict=True))
    return {name: share for (name, _), share in zip(question.criteria, shares, strict=True)}


def run_evaluation(
    runtime: RKLLMRuntime, request: EvaluationRequest, *, set_system: bool, token: CancelToken | None = None
) -> EvaluationResult:
    """Ask every question in logits mode (blocks: run it on the engine thread).

    With ``set_system``, the state's system section is set and the cache emptied first; else the
    cache must hold that section alone. Either way it is all the cache holds afterwards. Raises
    :class:`~rkllm_runtime.chat.vocabulary.VocabularyError` without the model's vocabulary, and
    ``ValueError`` for answers its tokens cannot tell apart (both before any run).
    """
    encode = label_encoder(runtime.model_path)
    asked = [(key, q, first_tokens(encode, labels(q))) for key, q in request.questions.items()]
    if set_system:
        runtime.set_function_tools(system_prompt(request), "[]")
        runtime.clear_kv_cache(keep_system_prompt=False)
    answers: dict[str, dict[str, float]] = {}
    perfs: list[PerfStats] = []
    for key, question, tokens in asked:
        # keep_history=0: the runtime goes back to the system section, which holds the state.
        logits = runtime.logits(turn(question), keep_history=False, token=token)
        perfs.append(logits.perf)
        answers[key] = answer(question, probabilities(logits.values, tokens))
    return EvaluationResult(
        answers,
        PerfStats(
            prefill_time_ms=sum(p.prefill_time_ms for p in perfs),
            prefill_tokens=sum(p.prefill_tokens for p in perfs),
            memory_usage_mb=max(p.memory_usage_mb for p in perfs),
        ),
    )


def label_encoder(model_path: Path) -> Encode:
    """The first token of a short text: the longest entry of the model's vocabulary it starts with.

    Raises :class:`~rkllm_runtime.chat.vocabulary.VocabularyError` without a readable ``tokenizer.json``.
    """
    path = tokenizer_file(model_path)
    if path is None:
        raise VocabularyError(f"no {TOKENIZER_FILE} beside {model_path.name} (the base model's vocabulary)")
    try:
        texts = _vocabulary_texts(path.resolve(), path.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VocabularyError(f"cannot read {path.name}: {err!r}") from err

    def encode(text: str) -> Sequence[int]:
        return next(([texts[text[:end]]] for end in range(len(text), 0, -1) if text[:end] in texts), [])

    return encode


@functools.cache
def _vocabulary_texts(path: Path, _mtime_ns: int) -> dict[str, int]:
    """Each plain entry of a ``tokenizer.json`` as the text it stands for (once per file version)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    byte_level = "ByteLevel" in json.dumps(data.get("decoder"))  # GPT-2's byte alphabet, else "▁" spaces
    texts: dict[str, int] = {}
    for piece, token_id in data["model"]["vocab"].items():
        text = _from_byte_alphabet(piece) if byte_level else piece.replace("\u2581", " ")
        if text:
            texts.setdefault(text, int(token_id))
    return texts


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte, back to the byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + n): b for n, b in enumerate(shifted)}


_BYTES = _byte_alphabet()


def _from_byte_alphabet(piece: str) -> str | None:
    try:
        return bytes(_BYTES[character] for character in piece).decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None
