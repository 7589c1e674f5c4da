"""The check of whether a logits run with keep_history keeps its input, against both emulator behaviours."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime import RKLLMRuntime
from rkllm_runtime.emulator import Rule
from rkllm_runtime.logits_cache import logits_keep_input
from tests.conftest import ModelFactory

WIDTH = 151936


@pytest.mark.parametrize(("logits_history", "kept"), [("keep", True), ("drop", False)])
def test_the_check_tells_whether_a_logits_run_keeps_its_input(
    emulator_library: Path, make_model: ModelFactory, logits_history: str, kept: bool
) -> None:
    model = make_model(Rule(reply="ok"), logits_history=logits_history, system="You are helpful.")
    with RKLLMRuntime.open(emulator_library, model) as runtime:
        assert logits_keep_input(runtime) == (kept, WIDTH)
