"""Per-token cost of the binding and the rate it delivers to an asyncio consumer.

1. Zero-delay emulator: the interval between tokens leaving the runtime thread
   (emulator + ctypes callback + UTF-8 decoding + hand-over to the loop), median
   and p95: the binding's overhead per token, which bounds its throughput.
2. Emulator paced at 500 tokens/s: latency from the C callback to the asyncio
   consumer while the loop keeps up (median and p95).
3. Emulator decoding at 30 tokens/s: the rate the consumer actually receives,
   against the configured rate and the rate the runtime reports in its perf stats.

Usage: uv run python bench/runtime_overhead.py [--abi 1.3] [--tokens 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

from figures import publish

from rkllm_runtime import AsyncStream, ModelParams, Prompt, RKLLMRuntime, RunResult
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached

CONFIGURED_RATE = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class TimedStream(AsyncStream):
    """Records when the runtime thread hands each chunk over."""

    def __init__(self, runtime: RKLLMRuntime, prompt: str) -> None:
        self.produced: list[int] = []
        super().__init__(runtime, Prompt(prompt))

    def _push(self, text: str) -> None:
        self.produced.append(time.perf_counter_ns())
        super()._push(text)


async def stream(runtime: RKLLMRuntime, prompt: str) -> tuple[list[int], list[int], RunResult]:
    """Per chunk: when the runtime thread produced it and when the consumer got it (ns)."""
    consumed: list[int] = []
    async with TimedStream(runtime, prompt) as timed:
        async for _ in timed:
            consumed.append(time.perf_counter_ns())
    assert timed.result is not None
    return timed.produced, consumed, timed.result


def micros(values: list[float]) -> tuple[float, float]:
    """Median and p95, in microseconds, of values in nanoseconds."""
    return round(statistics.median(values) / 1000, 2), round(percentile(values, 0.95) / 1000, 2)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--abi", default="1.3", choices=["1.2", "1.3"])
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--rate-tokens", type=int, default=90)
    args = parser.parse_args()
    library = build_cached(args.abi)
    context = max(4096, args.tokens * 2 + 64)
    with tempfile.TemporaryDirectory() as tmp:
        model = EmulatedModel(
            rules=[
                Rule(match="fast", reply="tok " * args.tokens),
                Rule(match="paced", reply="tok " * 1000),
                Rule(match="rated", reply="tok " * args.rate_tokens),
            ],
            max_context=context,
        ).write(Path(tmp) / "bench.rkllm")
        with RKLLMRuntime.open(library, model, ModelParams(max_context_len=context)) as runtime:
            await stream(runtime, "fast")  # warm-up
            produced, _, _ = await stream(runtime, "fast")
            os.environ["RKLLM_EMU_DECODE_TPS"] = "500"
            paced_out, paced_in, _ = await stream(runtime, "paced")
            os.environ["RKLLM_EMU_DECODE_TPS"] = str(CONFIGURED_RATE)
            _, rated, result = await stream(runtime, "rated")
            del os.environ["RKLLM_EMU_DECODE_TPS"]
    overhead = micros([b - a for a, b in itertools.pairwise(produced)])
    latency = micros([c - p for p, c in zip(paced_out, paced_in, strict=True)])
    delivered = (len(rated) - 1) / ((rated[-1] - rated[0]) / 1e9)
    runtime_rate = result.perf.decode_tokens_per_second
    figures = {
        "abi": args.abi,
        "tokens": len(produced),
        "overhead_us_median": overhead[0],
        "overhead_us_p95": overhead[1],
        "latency_us_median": latency[0],
        "latency_us_p95": latency[1],
        "configured_tokens_per_s": CONFIGURED_RATE,
        "runtime_reported_tokens_per_s": round(runtime_rate, 3),
        "delivered_tokens_per_s": round(delivered, 3),
        "delivered_ratio": round(delivered / CONFIGURED_RATE, 4),
    }
    lines = [
        f"ABI {args.abi}, {len(produced)} tokens from a zero-delay emulator:",
        f"  overhead per token (runtime thread): median {overhead[0]} us, p95 {overhead[1]} us",
        f"Paced at 500 tokens/s, C callback -> asyncio consumer: median {latency[0]} us, p95 {latency[1]} us",
        f"Decoding at {CONFIGURED_RATE:g} tokens/s (runtime reports {runtime_rate:.3f}): "
        f"the consumer receives {delivered:.3f} tokens/s, "
        f"{figures['delivered_ratio']:.2%} of the configured rate",
    ]
    publish(lines, figures)


if __name__ == "__main__":
    asyncio.run(main())
