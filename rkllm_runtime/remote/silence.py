"""How long an answer from an rkllm-server may go without a byte before the server counts as away.

The answer's first event comes after the prefill
(the response starts with it); after it, what takes longest without a word is another
prefill (a badly written tool call is answered inside the request, and the model's retry
prefills again), which at most fills the context. A tool call, sent whole, takes less. On an
RK3588 a token's prefill costs about 1.6 ms per GB of w8a8 model file at the start of the
context, growing with its position (twice that at 810 tokens): Rockchip's 378 ms for a
128-token prompt on Qwen2.5-1.5B (1.7 GB), the maintainers' 20 s for 4,000 tokens on
Qwen3-0.6B (0.95 GB; rknn-llm #372), as the emulator's timing model has it. Boards run up to
twice as slow as Rockchip's figures. Qwen2.5-1.5B with 4,096 tokens: 79 s; Qwen3-4B: 208 s.
"""

from __future__ import annotations

PREFILL_S_PER_TOKEN_GB = 0.0016
PREFILL_DOUBLE_AT = 810
SLOW_BOARD = 2.0
SILENCE_FLOOR_S = 30.0
"""The bound is never shorter (the network; a file whose size says nothing, as the emulator's)."""


def longest_prefill_s(model_bytes: int, context: int) -> float:
    """Seconds the slowest board takes to prefill ``context`` tokens with a model file this size."""
    first_token_s = PREFILL_S_PER_TOKEN_GB * model_bytes / 1e9
    return SLOW_BOARD * first_token_s * (context + context**2 / (2 * PREFILL_DOUBLE_AT))


def silence_bound_s(model_bytes: int, context: int) -> float:
    """The longest a stream may stay silent: the longest prefill, never under :data:`SILENCE_FLOOR_S`."""
    return max(SILENCE_FLOOR_S, longest_prefill_s(model_bytes, context))
