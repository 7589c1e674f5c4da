"""Iterating over a run from a worker thread, against the emulator, for both ABIs."""

from __future__ import annotations

import threading
from pathlib import Path

from rkllm_runtime import Prompt
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory
from tests.runtime.test_runtime import open_runtime


def test_generation_iterator_and_early_close(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(Rule(match="long", reply="word " * 400), Rule(reply="a b c"))
    threads_before = set(threading.enumerate())
    with open_runtime(emulator_library, model) as runtime:
        generation = runtime.generate(Prompt("hi"))
        assert list(generation) == ["a", " b", " c"]
        assert generation.result is not None
        assert generation.result.perf.generate_tokens == 3 + 1
        with runtime.generate(Prompt("long")) as stream:
            assert next(stream) == "word"
        assert runtime.run(Prompt("hi")).text == "a b c"
    assert set(threading.enumerate()) == threads_before
