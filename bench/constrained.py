"""What decoding under a grammar costs per token, against free decoding, at RK3588 timing.

The scripted emulator plays Qwen2.5-1.5B-Instruct at Rockchip's published RK3588 figures (16.7
tokens/s decode, 378 ms for a 128-token prompt: airockchip/rknn-llm benchmark.md, 1.3.0): a free
token is one decode step of the runtime; a constrained token is a logits run of the token fed back
(the emulator charges it one decode step, as a token fed back reads every weight once, as a
generated one does), plus what the host does for it for real: the ctypes call and callback, the
copy of 151,936 logits, the grammar library's mask and the choice. The vendor publishes no
per-call overhead of ``rkllm_run``: the emulator's ``run_overhead_ms`` is 0 unless given
(``--run-overhead-ms``), and the report states how much of one a 1.2x target leaves room for.

With ``--real``, the share of valid JSON and required calls on the accuracy benchmark's real model
with and without the decoder instead (bench/constrained_real.py).

Usage: uv run python bench/constrained.py [--decode-tps 16.7] [--abi 1.3] [--repeats 3] [--run-overhead-ms 0]
       uv run python bench/constrained.py --real [--limit N per kind] [--threads 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from constrained_real import KINDS, REQUESTS, measure, report, summarise

from rkllm_runtime import Prompt, RKLLMRuntime
from rkllm_runtime.chat.constrained import ConstrainedDecoder, tool_call_grammar
from rkllm_runtime.chat.messages import ToolSpec
from rkllm_runtime.chat.vocabulary import load_vocabulary
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.emulator.build import cache_dir
from rkllm_runtime.emulator.real_model import qwen_coder_model
from rkllm_runtime.emulator.tokenizer_json import convert, tokenizer_json

TOOL = ToolSpec(
    "HassLightSet",
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "area": {"type": "string"},
            "brightness": {"type": "integer"},
            "color": {"type": "string"},
        },
        "required": ["name"],
    },
)
ARGUMENTS = {"name": "kitchen ceiling light", "area": "kitchen", "brightness": 40, "color": "warm white"}
REPLY = f"<tool_call>\n{json.dumps({'name': TOOL.name, 'arguments': ARGUMENTS})}\n</tool_call>"


class Clock:
    """Wall time from the first streamed text to the end of a run."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, _text: str) -> None:
        if self.first is None:
            self.first = time.perf_counter()


def free_token_ms(runtime: RKLLMRuntime) -> float:
    """Wall ms per token of a generating run after its first token."""
    runtime.clear_kv_cache()
    clock = Clock()
    result = runtime.run(Prompt("dim the kitchen light"), on_text=clock)
    assert clock.first is not None
    return (time.perf_counter() - clock.first) * 1000 / (result.perf.generate_tokens - 1)


def constrained_ms(decoder: ConstrainedDecoder, grammar: str) -> tuple[float, float, int]:
    """Wall ms per logits run and per token after the first choice, and the tokens decoded."""
    decoder.runtime.clear_kv_cache()
    runs = 0
    logits = decoder.runtime.logits

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal runs
        runs += 1
        return logits(*args, **kwargs)  # type: ignore[arg-type]

    decoder.runtime.logits = counted  # type: ignore[method-assign]
    clock = Clock()
    try:
        result = decoder.run(Prompt("dim the kitchen light"), grammar, on_text=clock)
    finally:
        del decoder.runtime.logits
    assert clock.first is not None
    assert result.text == REPLY
    elapsed = (time.perf_counter() - clock.first) * 1000
    after_prompt = runs - 1  # the first choice comes with the prompt's logits
    return elapsed / after_prompt, elapsed / (result.perf.generate_tokens - 1), result.perf.generate_tokens


async def real(limit: int) -> dict[str, dict[str, dict[str, Any]]]:
    """The real model's requests, checked then decoded: the summaries of both."""
    library = build_cached("1.3", engine="llama")
    model = qwen_coder_model(cache_dir())
    requests = [
        r for r in REQUESTS if not limit or [q for q in REQUESTS if q.kind == r.kind].index(r) < limit
    ]
    with tempfile.TemporaryDirectory() as tmp:
        # The model's own vocabulary, as its base model's tokenizer.json holds it.
        tokenizer = convert(model, Path(tmp) / "tokenizer.json")
        checked = await measure(library, model, None, requests, Path(tmp))
        decoded = await measure(library, model, tokenizer, requests, Path(tmp))
    return {"checked": summarise(checked), "decoded": summarise(decoded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode-tps", type=float, default=16.7)
    parser.add_argument("--abi", default="1.3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-overhead-ms", type=float, default=0.0)
    parser.add_argument("--real", action="store_true", help="valid replies on the real model instead")
    parser.add_argument(
        "--limit", type=int, default=0, help=f"--real: at most this many of each kind {KINDS}"
    )
    parser.add_argument("--threads", type=int, default=1, help="--real: llama.cpp threads")
    parser.add_argument("--json", type=Path, help="--real: save the summaries to this file")
    args = parser.parse_args()
    if args.real:
        os.environ["RKLLM_EMU_THREADS"] = str(args.threads)
        summaries = asyncio.run(real(args.limit))
        report(summaries["checked"], summaries["decoded"])
        if args.json:
            args.json.write_text(json.dumps(summaries, indent=1))
        return
    os.environ["RKLLM_EMU_TIME_SCALE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").symlink_to(tokenizer_json())
        model = EmulatedModel(
            rules=[Rule(reply=REPLY)],
            name="qwen2.5-1.5b-rk3588",
            prefill_tps=128 / 0.378,
            decode_tps=args.decode_tps,
            run_overhead_ms=args.run_overhead_ms,
        ).write(Path(tmp) / "qwen2.5-1.5b.rkllm")
        with RKLLMRuntime.open(build_cached(args.abi), model) as runtime:
            decoder = ConstrainedDecoder(runtime, load_vocabulary(model, 151936))
            grammar = tool_call_grammar([TOOL], [TOOL.name], decoder.vocabulary)
            free = statistics.median(free_token_ms(runtime) for _ in range(args.repeats))
            measured = [constrained_ms(decoder, grammar) for _ in range(args.repeats)]
            per_run = statistics.median(m[0] for m in measured)
            per_token = statistics.median(m[1] for m in measured)
            # No modelled NPU time at all: the host's own cost alone.
            os.environ |= {
                "RKLLM_EMU_DECODE_TPS": "0",
                "RKLLM_EMU_PREFILL_TPS": "0",
                "RKLLM_EMU_RUN_OVERHEAD_MS": "0",
            }
            host = statistics.median(constrained_ms(decoder, grammar)[0] for _ in range(args.repeats))
    step = 1000 / args.decode_tps
    print(
        f"emulated Qwen2.5-1.5B on RK3588: decode step {step:.1f} ms, run overhead {args.run_overhead_ms} ms"
    )
    print(f"call: {measured[0][2]} tokens, end of turn included")
    print(f"free token (generating run):            {free:6.1f} ms")
    print(f"constrained run (one token fed back):   {per_run:6.1f} ms  = {per_run / free:.2f}x a free token")
    print(
        f"constrained token (forced batched):     {per_token:6.1f} ms  = {per_token / free:.2f}x a free token"
    )
    print(f"host cost of a constrained run:         {host:6.1f} ms (ctypes, logits copy, mask, choice)")
    print(f"room for the runtime's own per-call overhead within 1.2x: {0.2 * free - host:.1f} ms")


if __name__ == "__main__":
    main()
