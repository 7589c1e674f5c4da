"""The scripted engine's vocabulary as a Hugging Face ``tokenizer.json``, for the constrained decoder.

On a board the decoder reads the ``tokenizer.json`` the base model ships. The scripted engine
tokenizes with llama.cpp's ``ggml-vocab-qwen2.gguf`` (``vocab.c``), so ``scripts/setup``
converts that very file with transformers' GGUF tokenizer converter (the ``tokenizer``
dependency group; ``gguf`` reads the file), after giving the four added tokens ``vocab.c`` adds
their names, as it does. The result is kept beside the built emulators.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .build import cache_dir
from .real_model import SETUP_COMMAND, MissingAssetError, qwen2_vocab

TOKENIZER_JSON = "qwen2.5-tokenizer.json"
# The ids vocab.c gives the Qwen2.5/Qwen3 added tokens that the GGUF holds as padding.
ADDED_TOKENS = {151657: "<tool_call>", 151658: "</tool_call>", 151667: "<think>", 151668: "</think>"}
CONTROL = 3  # llama.cpp's token type of a special token


def tokenizer_json() -> Path:
    """The converted ``tokenizer.json``, or :class:`MissingAssetError` naming set-up."""
    path = cache_dir() / TOKENIZER_JSON
    if not path.is_file():
        raise MissingAssetError(f"{TOKENIZER_JSON} was not made: run {SETUP_COMMAND}")
    return path


def make_tokenizer_json() -> Path:
    """Convert the scripted engine's vocabulary into the cache (what set-up runs)."""
    return convert(qwen2_vocab(), cache_dir() / TOKENIZER_JSON)


def convert(gguf_path: Path, out: Path) -> Path:
    """Convert a GGUF vocabulary to ``out`` (a ``tokenizer.json``), with the added tokens named."""
    import gguf  # noqa: PLC0415 - the tokenizer group, at set-up only
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (  # noqa: PLC0415
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    reader = gguf.GGUFReader(gguf_path)
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    tokenizer: dict[str, Any] = {
        name: reader.fields[f"tokenizer.{key}"].contents()
        for key, name in renames.items()
        if f"tokenizer.{key}" in reader.fields
    }
    for token_id, text in ADDED_TOKENS.items():
        tokenizer["tokens"][token_id] = text
        tokenizer["token_type"][token_id] = CONTROL
    architecture = reader.fields["general.architecture"].contents()
    backend, _ = convert_gguf_tokenizer(architecture, tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    backend.save(str(partial))
    partial.replace(out)
    return out
