"""How long an evaluation takes at RK3588 speed: a ``noul`` question over a 300-token state.

The scripted emulator runs at Rockchip's published RK3588 figures (128-token prompt: 378 ms for
Qwen2.5-1.5B, 199 ms for Qwen3-0.6B; the prefill rate falls with the context's length, as the
emulator's timing model has it) in RK3588 time (time scale 1), through the chat engine as Home
Assistant's AI task calls it, with Qwen2.5's own tokenizer counting the state. A logits run
costs its prefill, at least one decode step; the emulator adds no fixed per-run overhead (its
``run_overhead_ms`` is 0), so the figures are the timing model's plus this process's own work.

Per model: the first evaluation of a new state (the vocabulary already read: once per process),
the same question again on that state (kept in the KV cache), and three questions (noul, choice,
score) on another new state.

Usage: uv run python bench/evaluate.py [--abi 1.3] [--state-tokens 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from figures import publish

from rkllm_runtime import ModelParams, RKLLMRuntime
from rkllm_runtime.chat import ChatEngine
from rkllm_runtime.chat.evaluate import (
    EvaluationRequest,
    EvaluationResult,
    Question,
    QuestionKind,
    label_encoder,
)
from rkllm_runtime.chat.vocabulary import load_vocabulary
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.emulator.tokenizer_json import tokenizer_json

MODELS = {  # name: (tokens/s of a 128-token prompt, decode tokens/s), Rockchip's RK3588 table
    "qwen2.5-1.5b": (128 / 0.378, 16.7),
    "qwen3-0.6b": (128 / 0.199, 32.9),
}
QWEN_LOGITS = 151_936  # Qwen2.5's output layer
NOUL = Question(QuestionKind.NOUL, "Is any light on in an empty room?")
CHOICE = Question(
    QuestionKind.CHOICE, "Which room needs attention first?", (("kitchen", "cooking"), ("hall", "the way in"))
)
SCORE = Question(QuestionKind.SCORE, "How warm is the house?", (("0", "cold"), ("1", "mild"), ("2", "hot")))


def home_state(tokens: int, count: Callable[[str], int], salt: str) -> str:
    """A home's state as Home Assistant sends it (JSON) of ``tokens`` tokens, give or take one."""
    entities: dict[str, dict[str, str]] = {}
    note = salt
    while count(state := json.dumps({"entities": entities, "note": note})) < tokens:
        n = len(entities)
        entity = {"state": "on" if n % 3 else "off", "area": f"Room {n}", "brightness": "70 %"}
        grown = {**entities, f"light.room_{n}": entity}
        if count(json.dumps({"entities": grown, "note": note})) <= tokens:
            entities = grown
        else:
            note += " ok"  # the last few tokens
    return state


async def timed(engine: ChatEngine, request: EvaluationRequest) -> tuple[float, EvaluationResult]:
    started = time.perf_counter()
    result = await engine.evaluate(request)
    return (time.perf_counter() - started) * 1000, result


async def measure(library: Path, model: Path, state_tokens: int) -> dict[str, Any]:
    vocabulary = load_vocabulary(model, QWEN_LOGITS)  # to count the state's tokens
    label_encoder(model)  # what an evaluation reads of the vocabulary, once per process

    def count(text: str) -> int:
        return len(vocabulary.tokenizer.tokenize_str(text))

    runtime = RKLLMRuntime.open(library, model, ModelParams(max_context_len=4096))
    engine = ChatEngine(runtime)
    try:
        first_state, other_state = (home_state(state_tokens, count, salt) for salt in ("first", "second"))
        first_ms, first = await timed(engine, EvaluationRequest(first_state, {"q": NOUL}))
        again_ms, again = await timed(engine, EvaluationRequest(first_state, {"q": NOUL}))
        three_ms, three = await timed(
            engine, EvaluationRequest(other_state, {"noul": NOUL, "choice": CHOICE, "score": SCORE})
        )
    finally:
        await engine.aclose()
    return {
        "state_tokens": count(first_state),
        "noul_new_state_ms": round(first_ms),
        "noul_new_state_runtime_ms": round(first.perf.prefill_time_ms),
        "noul_new_state_prefilled_tokens": first.perf.prefill_tokens,
        "noul_same_state_ms": round(again_ms),
        "noul_same_state_prefilled_tokens": again.perf.prefill_tokens,
        "three_questions_new_state_ms": round(three_ms),
        "three_questions_prefilled_tokens": three.perf.prefill_tokens,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--abi", default="1.3", choices=["1.2", "1.3"])
    parser.add_argument("--state-tokens", type=int, default=300)
    args = parser.parse_args()
    os.environ["RKLLM_EMU_TIME_SCALE"] = "1"  # RK3588 time: this process's own work counts once
    library = build_cached(args.abi)
    figures: dict[str, Any] = {"abi": args.abi}
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").symlink_to(tokenizer_json())
        for name, (prefill_tps, decode_tps) in MODELS.items():
            model = EmulatedModel(
                rules=[Rule(match="empty room", reply="no"), Rule(reply="A")],
                name=name,
                prefill_tps=prefill_tps,
                decode_tps=decode_tps,
            ).write(Path(tmp) / f"{name}.rkllm")
            figures[name] = measured = await measure(library, model, args.state_tokens)
            m = measured
            lines.append(
                f"{name}: noul over a {m['state_tokens']}-token state: {m['noul_new_state_ms']} ms "
                f"({m['noul_new_state_prefilled_tokens']} tokens prefilled, "
                f"{m['noul_new_state_runtime_ms']} ms in the runtime); "
                f"the same state again: {m['noul_same_state_ms']} ms "
                f"({m['noul_same_state_prefilled_tokens']} tokens); three questions on a new state: "
                f"{m['three_questions_new_state_ms']} ms"
            )
    publish(lines, figures)


if __name__ == "__main__":
    asyncio.run(main())
