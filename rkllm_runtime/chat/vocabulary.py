"""A model's own vocabulary: the Hugging Face ``tokenizer.json`` its base model ships, beside the model file.

The constrained decoder needs it to know what text each of the runtime's logits stands for.
``MODEL.tokenizer.json`` (what the model download saves) is tried first, then ``tokenizer.json``
in the model's folder. Reading one takes a second or two (the grammar library indexes every
token), so each is read once per process and logits width.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rkllm_runtime.errors import RKLLMError

TOKENIZER_FILE = "tokenizer.json"
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")
"""Tokens that close an assistant turn, in the order they are looked for (Qwen, Llama 3, Gemma, Phi)."""


class VocabularyError(RKLLMError):
    """The model's vocabulary cannot be read, or does not fit its logits."""


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A tokenizer for the grammar library, and what the decoder needs to know beside it."""

    path: Path
    tokenizer: Any
    """``llguidance.LLTokenizer`` over the logits' whole width."""
    size: int
    """Entries of ``tokenizer.json`` (the logits may be wider: padding)."""
    end_of_turn: int

    def piece(self, token_id: int) -> bytes:
        """The bytes a token stands for (a special token: its name)."""
        return bytes(self.tokenizer.decode_bytes([token_id]))


def tokenizer_file(model_path: Path) -> Path | None:
    """The ``tokenizer.json`` for a model file, if there is one."""
    for candidate in (
        model_path.with_name(f"{model_path.stem}.{TOKENIZER_FILE}"),
        model_path.parent / TOKENIZER_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None


_cache: dict[tuple[Path, int, int], Vocabulary] = {}
_lock = threading.Lock()


def load_vocabulary(model_path: Path, width: int) -> Vocabulary:
    """The vocabulary of ``model_path`` for logits ``width`` wide; raises :class:`VocabularyError`."""
    path = tokenizer_file(model_path)
    if path is None:
        raise VocabularyError(f"no {TOKENIZER_FILE} beside {model_path.name} (the base model's vocabulary)")
    try:
        path = path.resolve()
        key = (path, path.stat().st_mtime_ns, width)
        with _lock:
            if key not in _cache:
                _cache[key] = _read(path, width)
            return _cache[key]
    except OSError as err:
        raise VocabularyError(f"cannot read {path.name}: {err}") from err


def _read(path: Path, width: int) -> Vocabulary:
    try:
        from llguidance import LLTokenizer  # noqa: PLC0415 - a native module, loaded when first needed
    except ImportError as err:  # a platform without its wheel (musl), installed without dependencies
        raise VocabularyError(f"the grammar library llguidance cannot be loaded: {err}") from err

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        added = {item["content"]: int(item["id"]) for item in data.get("added_tokens", [])}
        size = max([*map(int, data["model"]["vocab"].values()), *added.values()]) + 1
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise VocabularyError(f"{path.name} is not a Hugging Face tokenizer: {err!r}") from err
    if size > width:
        raise VocabularyError(
            f"{path.name} has {size} tokens but the model's logits have {width}: another model's"
        )
    end = next((added[name] for name in END_OF_TURN if name in added), None)
    if end is None:
        raise VocabularyError(f"{path.name} has no end-of-turn token ({', '.join(END_OF_TURN)})")
    try:
        tokenizer = LLTokenizer(str(path), n_vocab=width, eos_token=end)
    except (ValueError, RuntimeError) as err:
        raise VocabularyError(f"the grammar library cannot read {path.name}: {err}") from err
    return Vocabulary(path, tokenizer, size, end)
