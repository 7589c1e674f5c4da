"""Declarations of ``rkllm.h`` that are identical in every supported ABI."""

import ctypes
from enum import IntEnum

LLMHandle = ctypes.c_void_p

CPU0, CPU1, CPU2, CPU3, CPU4, CPU5, CPU6, CPU7 = (1 << i for i in range(8))


class LLMCallState(IntEnum):
    """State passed to the result callback."""

    RKLLM_RUN_NORMAL = 0
    RKLLM_RUN_WAITING = 1
    RKLLM_RUN_FINISH = 2
    RKLLM_RUN_ERROR = 3


class RKLLMInputType(IntEnum):
    """Kind of data in ``RKLLMInput``'s union."""

    RKLLM_INPUT_PROMPT = 0
    RKLLM_INPUT_TOKEN = 1
    RKLLM_INPUT_EMBED = 2
    RKLLM_INPUT_MULTIMODAL = 3


class RKLLMInferMode(IntEnum):
    """What a run produces."""

    RKLLM_INFER_GENERATE = 0
    RKLLM_INFER_GET_LAST_HIDDEN_LAYER = 1
    RKLLM_INFER_GET_LOGITS = 2


class RKLLMExtendParam(ctypes.Structure):
    _fields_ = [
        ("base_domain_id", ctypes.c_int32),
        ("embed_flash", ctypes.c_int8),
        ("enabled_cpus_num", ctypes.c_int8),
        ("enabled_cpus_mask", ctypes.c_uint32),
        ("n_batch", ctypes.c_uint8),
        ("use_cross_attn", ctypes.c_int8),
        ("reserved", ctypes.c_uint8 * 104),
    ]


class RKLLMLoraAdapter(ctypes.Structure):
    _fields_ = [
        ("lora_adapter_path", ctypes.c_char_p),
        ("lora_adapter_name", ctypes.c_char_p),
        ("scale", ctypes.c_float),
    ]


class RKLLMEmbedInput(ctypes.Structure):
    _fields_ = [("embed", ctypes.POINTER(ctypes.c_float)), ("n_tokens", ctypes.c_size_t)]


class RKLLMTokenInput(ctypes.Structure):
    _fields_ = [("input_ids", ctypes.POINTER(ctypes.c_int32)), ("n_tokens", ctypes.c_size_t)]


class RKLLMLoraParam(ctypes.Structure):
    _fields_ = [("lora_adapter_name", ctypes.c_char_p)]


class RKLLMPromptCacheParam(ctypes.Structure):
    _fields_ = [("save_prompt_cache", ctypes.c_int), ("prompt_cache_path", ctypes.c_char_p)]


class RKLLMCrossAttnParam(ctypes.Structure):
    _fields_ = [
        ("encoder_k_cache", ctypes.POINTER(ctypes.c_float)),
        ("encoder_v_cache", ctypes.POINTER(ctypes.c_float)),
        ("encoder_mask", ctypes.POINTER(ctypes.c_float)),
        ("encoder_pos", ctypes.POINTER(ctypes.c_int32)),
        ("num_tokens", ctypes.c_int),
    ]


class RKLLMResultLastHiddenLayer(ctypes.Structure):
    _fields_ = [
        ("hidden_states", ctypes.POINTER(ctypes.c_float)),
        ("embd_size", ctypes.c_int),
        ("num_tokens", ctypes.c_int),
    ]


class RKLLMResultLogits(ctypes.Structure):
    _fields_ = [
        ("logits", ctypes.POINTER(ctypes.c_float)),
        ("vocab_size", ctypes.c_int),
        ("num_tokens", ctypes.c_int),
    ]


class RKLLMPerfStat(ctypes.Structure):
    _fields_ = [
        ("prefill_time_ms", ctypes.c_float),
        ("prefill_tokens", ctypes.c_int),
        ("generate_time_ms", ctypes.c_float),
        ("generate_tokens", ctypes.c_int),
        ("memory_usage_mb", ctypes.c_float),
    ]


class RKLLMResult(ctypes.Structure):
    _fields_ = [
        # c_void_p, not c_char_p: the text may be a partial UTF-8 sequence (or NULL).
        ("text", ctypes.c_void_p),
        ("token_id", ctypes.c_int32),
        ("last_hidden_layer", RKLLMResultLastHiddenLayer),
        ("logits", RKLLMResultLogits),
        ("perf", RKLLMPerfStat),
    ]


LLMResultCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(RKLLMResult), ctypes.c_void_p, ctypes.c_int)


def field_values(struct: ctypes.Structure) -> dict[str, float]:
    """The numbers and flags of a struct, by field name (nested structs flattened)."""
    values: dict[str, float] = {}
    for name, *_ in struct._fields_:
        value = getattr(struct, name)
        if isinstance(value, ctypes.Structure):
            values.update(field_values(value))
        elif isinstance(value, (bool, int, float)):
            values[name] = value
    return values


def declare_functions(
    lib: ctypes.CDLL,
    *,
    param: type[ctypes.Structure],
    input_: type[ctypes.Structure],
    infer_param: type[ctypes.Structure],
    init_callback: type,
) -> None:
    """Set argument and result types of every function the library exports, given one ABI's struct types."""
    handle = LLMHandle
    run_args: list[type] = [handle, ctypes.POINTER(input_), ctypes.POINTER(infer_param), ctypes.c_void_p]
    signatures: dict[str, tuple[list[type], type]] = {
        "rkllm_createDefaultParam": ([], param),
        "rkllm_init": ([ctypes.POINTER(handle), ctypes.POINTER(param), init_callback], ctypes.c_int),
        "rkllm_run": (run_args, ctypes.c_int),
        "rkllm_run_async": (run_args, ctypes.c_int),
        "rkllm_load_lora": ([handle, ctypes.POINTER(RKLLMLoraAdapter)], ctypes.c_int),
        "rkllm_load_prompt_cache": ([handle, ctypes.c_char_p], ctypes.c_int),
        "rkllm_release_prompt_cache": ([handle], ctypes.c_int),
        "rkllm_destroy": ([handle], ctypes.c_int),
        "rkllm_abort": ([handle], ctypes.c_int),
        "rkllm_is_running": ([handle], ctypes.c_int),
        "rkllm_clear_kv_cache": (
            [handle, ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
            ctypes.c_int,
        ),
        "rkllm_get_kv_cache_size": ([handle, ctypes.POINTER(ctypes.c_int)], ctypes.c_int),
        "rkllm_set_chat_template": (
            [handle, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
            ctypes.c_int,
        ),
        "rkllm_set_function_tools": (
            [handle, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p],
            ctypes.c_int,
        ),
        "rkllm_set_cross_attn_params": ([handle, ctypes.POINTER(RKLLMCrossAttnParam)], ctypes.c_int),
    }
    for name, (argtypes, restype) in signatures.items():
        if not hasattr(lib, name):
            continue  # the caller checks what its release must export
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = restype
