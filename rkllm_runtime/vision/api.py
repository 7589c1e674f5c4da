"""Raw ctypes mirror of the part of Rockchip's ``rknn_api.h`` (``librknnrt.so``) a vision encoder needs.

Names, values and layouts as the vendor header declares them; :mod:`.encoder` is the typed API.
"""

from __future__ import annotations

import ctypes
from enum import IntEnum

RKNN_MAX_DIMS = 16
RKNN_MAX_NAME_LEN = 256

# A pointer-sized handle on 64-bit boards, 32 bits on 32-bit ARM (the header's ``__arm__``).
rknn_context = ctypes.c_uint64 if ctypes.sizeof(ctypes.c_void_p) == 8 else ctypes.c_uint32

RETURN_CODES = {
    0: "RKNN_SUCC",
    -1: "RKNN_ERR_FAIL",
    -2: "RKNN_ERR_TIMEOUT",
    -3: "RKNN_ERR_DEVICE_UNAVAILABLE",
    -4: "RKNN_ERR_MALLOC_FAIL",
    -5: "RKNN_ERR_PARAM_INVALID",
    -6: "RKNN_ERR_MODEL_INVALID",
    -7: "RKNN_ERR_CTX_INVALID",
    -8: "RKNN_ERR_INPUT_INVALID",
    -9: "RKNN_ERR_OUTPUT_INVALID",
    -10: "RKNN_ERR_DEVICE_UNMATCH",
    -11: "RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL",
    -12: "RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION",
    -13: "RKNN_ERR_TARGET_PLATFORM_UNMATCH",
}
RKNN_SUCC = 0
RKNN_ERR_MALLOC_FAIL = -4
RKNN_ERR_TARGET_PLATFORM_UNMATCH = -13


class RKNNQueryCmd(IntEnum):
    """``rknn_query_cmd`` (the commands used here)."""

    RKNN_QUERY_IN_OUT_NUM = 0
    RKNN_QUERY_INPUT_ATTR = 1
    RKNN_QUERY_OUTPUT_ATTR = 2
    RKNN_QUERY_PERF_RUN = 4
    RKNN_QUERY_SDK_VERSION = 5
    RKNN_QUERY_MEM_SIZE = 6
    RKNN_QUERY_CUSTOM_STRING = 7


class RKNNTensorType(IntEnum):
    """``rknn_tensor_type``."""

    RKNN_TENSOR_FLOAT32 = 0
    RKNN_TENSOR_FLOAT16 = 1
    RKNN_TENSOR_INT8 = 2
    RKNN_TENSOR_UINT8 = 3
    RKNN_TENSOR_INT16 = 4
    RKNN_TENSOR_UINT16 = 5
    RKNN_TENSOR_INT32 = 6
    RKNN_TENSOR_UINT32 = 7
    RKNN_TENSOR_INT64 = 8
    RKNN_TENSOR_BOOL = 9
    RKNN_TENSOR_INT4 = 10
    RKNN_TENSOR_BFLOAT16 = 11


class RKNNTensorFormat(IntEnum):
    """``rknn_tensor_format``."""

    RKNN_TENSOR_NCHW = 0
    RKNN_TENSOR_NHWC = 1
    RKNN_TENSOR_NC1HWC2 = 2
    RKNN_TENSOR_UNDEFINED = 3


class RKNNInputOutputNum(ctypes.Structure):
    """``rknn_input_output_num``."""

    _fields_ = [("n_input", ctypes.c_uint32), ("n_output", ctypes.c_uint32)]


class RKNNTensorAttr(ctypes.Structure):
    """``rknn_tensor_attr``: set ``index`` before querying."""

    _fields_ = [
        ("index", ctypes.c_uint32),
        ("n_dims", ctypes.c_uint32),
        ("dims", ctypes.c_uint32 * RKNN_MAX_DIMS),
        ("name", ctypes.c_char * RKNN_MAX_NAME_LEN),
        ("n_elems", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("fmt", ctypes.c_int),
        ("type", ctypes.c_int),
        ("qnt_type", ctypes.c_int),
        ("fl", ctypes.c_int8),
        ("zp", ctypes.c_int32),
        ("scale", ctypes.c_float),
        ("w_stride", ctypes.c_uint32),
        ("size_with_stride", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("h_stride", ctypes.c_uint32),
    ]


class RKNNPerfRun(ctypes.Structure):
    """``rknn_perf_run``: the last run's time in microseconds."""

    _fields_ = [("run_duration", ctypes.c_int64)]


class RKNNSDKVersion(ctypes.Structure):
    """``rknn_sdk_version``."""

    _fields_ = [("api_version", ctypes.c_char * 256), ("drv_version", ctypes.c_char * 256)]


class RKNNMemSize(ctypes.Structure):
    """``rknn_mem_size``."""

    _fields_ = [
        ("total_weight_size", ctypes.c_uint32),
        ("total_internal_size", ctypes.c_uint32),
        ("total_dma_allocated_size", ctypes.c_uint64),
        ("total_sram_size", ctypes.c_uint32),
        ("free_sram_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 10),
    ]


class RKNNCustomString(ctypes.Structure):
    """``rknn_custom_string``: set at conversion."""

    _fields_ = [("string", ctypes.c_char * 1024)]


class RKNNInput(ctypes.Structure):
    """``rknn_input``: ``pass_through`` 0 lets the runtime convert and normalise the data."""

    _fields_ = [
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
        ("pass_through", ctypes.c_uint8),
        ("type", ctypes.c_int),
        ("fmt", ctypes.c_int),
    ]


class RKNNOutput(ctypes.Structure):
    """``rknn_output``: ``is_prealloc`` 1 has the runtime fill ``buf``."""

    _fields_ = [
        ("want_float", ctypes.c_uint8),
        ("is_prealloc", ctypes.c_uint8),
        ("index", ctypes.c_uint32),
        ("buf", ctypes.c_void_p),
        ("size", ctypes.c_uint32),
    ]


FUNCTIONS = {
    "rknn_init": [
        ctypes.POINTER(rknn_context), ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p
    ],
    "rknn_destroy": [rknn_context],
    "rknn_query": [rknn_context, ctypes.c_int, ctypes.c_void_p, ctypes.c_uint32],
    "rknn_inputs_set": [rknn_context, ctypes.c_uint32, ctypes.POINTER(RKNNInput)],
    "rknn_run": [rknn_context, ctypes.c_void_p],
    "rknn_outputs_get": [rknn_context, ctypes.c_uint32, ctypes.POINTER(RKNNOutput), ctypes.c_void_p],
    "rknn_outputs_release": [rknn_context, ctypes.c_uint32, ctypes.POINTER(RKNNOutput)],
}  # fmt: skip
"""The functions used, with their argument types; each returns an ``int`` status."""


def declare(cdll: ctypes.CDLL) -> None:
    """Set the argument and return types of :data:`FUNCTIONS` on a loaded library."""
    for name, argtypes in FUNCTIONS.items():
        function = getattr(cdll, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
