"""The silence bound follows the published prefill figures."""

from __future__ import annotations

import pytest

from rkllm_runtime.remote.silence import SILENCE_FLOOR_S, SLOW_BOARD, longest_prefill_s, silence_bound_s
from tests.remote.test_client import QWEN3_0_6B, QWEN25_1_5B


def test_the_bound_follows_the_published_prefill_figures() -> None:
    """Rockchip's 378 ms for 128 tokens on Qwen2.5-1.5B; 20 s for 4,000 tokens on Qwen3-0.6B."""
    assert longest_prefill_s(QWEN25_1_5B, 128) / SLOW_BOARD == pytest.approx(0.378, rel=0.01)
    assert longest_prefill_s(QWEN3_0_6B, 4000) / SLOW_BOARD == pytest.approx(20, rel=0.1)


def test_the_bound_grows_with_the_model_and_faster_than_the_context() -> None:
    assert longest_prefill_s(QWEN25_1_5B, 4096) == pytest.approx(79, rel=0.01)
    assert longest_prefill_s(2 * QWEN25_1_5B, 4096) == pytest.approx(2 * 79, rel=0.01)
    assert longest_prefill_s(QWEN25_1_5B, 8192) > 2 * longest_prefill_s(QWEN25_1_5B, 4096)


def test_the_bound_is_never_under_its_floor() -> None:
    assert silence_bound_s(0, 4096) == SILENCE_FLOOR_S
    assert silence_bound_s(QWEN25_1_5B, 4096) == longest_prefill_s(QWEN25_1_5B, 4096)
