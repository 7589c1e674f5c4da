"""The converted tokenizer.json tokenizes exactly as the scripted engine does (Qwen2.5's vocabulary)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rkllm_runtime import Prompt, RKLLMRuntime, Tokens
from rkllm_runtime.chat.vocabulary import load_vocabulary
from rkllm_runtime.emulator import Rule
from tests.conftest import ModelFactory, call

IM_END = 151645
TEXTS = [
    "The kitchen light is now on.",
    "Licht an: 日本語, Ελληνικά, emoji 🎉 and ü.",
    call("HassTurnOn", name="kitchen light", brightness=40),
    "<think>\nthe user wants light\n</think>\n\n  spaces   and\ttabs\n\nnumbers 12345.678",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_scripted_reply_is_the_vocabularys_tokenization(
    emulator_library: Path, make_model: ModelFactory, qwen_vocabulary: Path, text: str
) -> None:
    with RKLLMRuntime.open(emulator_library, make_model(Rule(reply=text))) as runtime:
        vocabulary = load_vocabulary(runtime.model_path, 151936)
        logits = runtime.logits(Prompt("hi"), keep_history=True)
        emulated: list[int] = []
        while not emulated or emulated[-1] != IM_END:
            emulated.append(int(np.argmax(logits.values)))
            logits = runtime.logits(Tokens(emulated[-1:]), keep_history=True)
        prompt = runtime.logits(Prompt(text), keep_history=False).perf.prefill_tokens
    assert emulated == [*vocabulary.tokenizer.tokenize_str(text), IM_END]
    assert vocabulary.tokenizer.decode_str(emulated[:-1]) == text
    assert prompt == len(vocabulary.tokenizer.tokenize_str(text)) + 9  # the chat template's 9 tokens
