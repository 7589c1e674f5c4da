"""The C structs of one run: its input and its inference parameters, built from the typed values.

Each builder returns the struct with what must live as long as the run (the C side keeps
pointers into it). A new kind of input is a new case of :func:`build_input`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import asdict

from .abi.common import RKLLMInferMode, RKLLMInputType, RKLLMLoraParam, RKLLMPromptCacheParam
from .abi.interface import ABIModule
from .errors import InvalidTextError
from .types import Embeddings, Input, Prompt, RunOptions, Sampling, Tokens


def build_input(abi: ABIModule, input_: Input) -> tuple[ctypes.Structure, list[object]]:
    """The ``RKLLMInput`` of one run."""
    c_input = abi.RKLLMInput()
    keep_alive: list[object] = [encode_text(input_.role)]
    c_input.role = keep_alive[0]
    match input_:
        case Prompt():
            keep_alive.append(encode_text(input_.text))
            c_input.input_type = RKLLMInputType.RKLLM_INPUT_PROMPT
            c_input.enable_thinking = input_.enable_thinking
            c_input.prompt_input = keep_alive[-1]
        case Tokens():
            ids = (ctypes.c_int32 * len(input_.ids))(*input_.ids)
            keep_alive.append(ids)
            c_input.input_type = RKLLMInputType.RKLLM_INPUT_TOKEN
            c_input.token_input.input_ids = ids
            c_input.token_input.n_tokens = len(input_.ids)
        case Embeddings():
            values = (ctypes.c_float * len(input_.values))(*input_.values)
            keep_alive.append(values)
            c_input.input_type = RKLLMInputType.RKLLM_INPUT_EMBED
            c_input.embed_input.embed = values
            c_input.embed_input.n_tokens = input_.n_tokens
    return c_input, keep_alive


def build_infer_param(
    abi: ABIModule, options: RunOptions, sampling: Mapping[str, float], mode: RKLLMInferMode
) -> tuple[ctypes.Structure, list[object]]:
    """The ``RKLLMInferParam`` of one run; ``sampling`` is the runtime's, which the run's fields override."""
    c_infer = abi.RKLLMInferParam()
    keep_alive: list[object] = []
    c_infer.mode = mode
    c_infer.keep_history = int(options.keep_history)
    if options.lora_adapter:
        lora = RKLLMLoraParam(options.lora_adapter.encode())
        keep_alive.append(lora)
        c_infer.lora_params = ctypes.pointer(lora)
    if options.save_prompt_cache:
        cache = RKLLMPromptCacheParam(1, options.save_prompt_cache.encode())
        keep_alive.append(cache)
        c_infer.prompt_cache_params = ctypes.pointer(cache)
    run_sampling = None if options.sampling is None else {**sampling, **chosen(options.sampling)}
    keep_alive.append(abi.run_limits(c_infer, options.max_new_tokens, run_sampling))
    return c_infer, keep_alive


def chosen(sampling: Sampling) -> dict[str, float]:
    """The fields of ``sampling`` that are set."""
    return {name: value for name, value in asdict(sampling).items() if value is not None}


def encode_text(text: str) -> bytes:
    """UTF-8 for a C string; raises :class:`InvalidTextError` for text one cannot carry whole."""
    if "\0" in text:
        raise InvalidTextError(f"the text contains a NUL character at position {text.index(chr(0))}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidTextError(f"the text contains an unpaired surrogate at position {err.start}") from err
