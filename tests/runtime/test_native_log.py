"""The runtime's stderr lines reach Python logging levels; everything else passes through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rkllm_runtime import ModelParams, Prompt, RKLLMRuntime, RunError
from rkllm_runtime.emulator import Rule
from rkllm_runtime.native_log import StderrRouter
from tests.conftest import ModelFactory


def test_runtime_lines_are_routed_and_other_output_passes_through(
    emulator_library: Path, make_model: ModelFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    lines: list[tuple[int, str]] = []
    router = StderrRouter(lambda level, text: lines.append((level, text)))
    router.start()
    try:
        os.write(2, b"not the runtime's\n")
        with (
            RKLLMRuntime.open(
                emulator_library, make_model(Rule(reply="ok")), ModelParams(max_context_len=256)
            ) as rt,
            pytest.raises(RunError),
        ):
            rt.run(Prompt("lamp " * 400))  # longer than the context
    finally:
        router.stop()
    assert any(level == 20 and text.startswith("rkllm-runtime version:") for level, text in lines)
    assert any(level == 40 and "does not fit in max_context_len 256" in text for level, text in lines)
    captured = capfd.readouterr().err
    assert "not the runtime's\n" in captured
    assert "RKLLM:" not in captured  # the runtime's own lines went to the sink only


def test_stop_gives_stderr_back(capfd: pytest.CaptureFixture[str]) -> None:
    router = StderrRouter(lambda level, text: None)
    router.start()
    router.stop()
    router.stop()  # idempotent
    os.write(2, b"E rkllm: after the router\n")
    assert "E rkllm: after the router" in capfd.readouterr().err
