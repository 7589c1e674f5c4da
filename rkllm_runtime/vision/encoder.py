"""The typed API over one vision encoder (a ``.rknn`` file) on the RKNN runtime.

One encoder, one context: calls are not thread-safe, so the chat engine makes them all on its
own thread, as it does the RKLLM calls.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from rkllm_runtime.closing import Closing
from rkllm_runtime.errors import (
    ClosedError,
    EncoderFailedError,
    EncoderMismatchError,
    NoEncoderError,
)
from rkllm_runtime.types import ImageEmbedding

from . import api
from .families import VisionFamily, encoder_family
from .library import RKNNLibrary, load_rknn_library
from .preprocess import decode, fit, pixels

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EncoderInfo:
    """What an encoder takes and gives, from its tensor attributes."""

    width: int
    height: int
    planar: bool
    """Its input is NCHW (else NHWC)."""
    n_tokens: int
    embed_size: int
    family: VisionFamily
    sdk_version: str
    memory_mb: float
    """Weights and working memory on the NPU."""


def _dims(attr: api.RKNNTensorAttr) -> list[int]:
    return list(attr.dims[: attr.n_dims])


class VisionEncoder(Closing):
    """A loaded vision encoder: image files in, image embeddings out."""

    def __init__(self, library: RKNNLibrary, model_path: Path, context: int, info: EncoderInfo) -> None:
        self.library = library
        self.model_path = model_path
        self.info = info
        self.last_run_ms = 0.0
        """The runtime's own time of the last :meth:`encode` (``RKNN_QUERY_PERF_RUN``)."""
        self._lib = library.cdll
        self._context: int | None = context

    @classmethod
    def open(cls, library: RKNNLibrary | str | Path, model: str | Path) -> Self:
        """Load the RKNN runtime (unless given loaded) and the encoder file.

        Raises :class:`NoEncoderError` for a missing file, :class:`EncoderMismatchError` for one
        converted for another chip, :class:`EncoderFailedError` when the runtime refuses it.
        """
        lib = library if isinstance(library, RKNNLibrary) else load_rknn_library(library)
        path = Path(model)
        if not path.is_file():
            raise NoEncoderError(f"the vision encoder {path} does not exist")
        context = api.rknn_context()
        status = lib.cdll.rknn_init(ctypes.byref(context), str(path).encode(), 0, 0, None)
        if status == api.RKNN_ERR_TARGET_PLATFORM_UNMATCH:
            raise EncoderMismatchError(f"the vision encoder {path.name} was converted for another chip")
        _check(status, f"rknn_init refused {path.name}")
        try:
            info = _query_info(lib.cdll, context.value, path.name)
        except BaseException:
            lib.cdll.rknn_destroy(context.value)
            raise
        _LOGGER.info(
            "Vision encoder %s: %s, %dx%d to %d tokens of %d, RKNN runtime %s",
            path.name, info.family.name, info.width, info.height,
            info.n_tokens, info.embed_size, info.sdk_version,
        )  # fmt: skip
        return cls(lib, path, context.value, info)

    def encode(self, image: bytes) -> ImageEmbedding:
        """Decode, fit and encode one image file.

        Raises :class:`~rkllm_runtime.errors.InvalidImageError` or
        :class:`~rkllm_runtime.errors.ImageTooLargeError` for the file, :class:`EncoderFailedError`
        when the runtime fails.
        """
        context = self._handle()
        info = self.info
        decoded = decode(image, (info.width, info.height))
        data = pixels(fit(decoded, info.width, info.height, info.family.pad), info.planar)
        buffer = ctypes.create_string_buffer(data, len(data))
        tensor = api.RKNNInput(
            index=0,
            buf=ctypes.cast(buffer, ctypes.c_void_p),
            size=len(data),
            type=api.RKNNTensorType.RKNN_TENSOR_UINT8,
            fmt=api.RKNNTensorFormat.RKNN_TENSOR_NCHW
            if info.planar
            else api.RKNNTensorFormat.RKNN_TENSOR_NHWC,
        )
        _check(self._lib.rknn_inputs_set(context, 1, ctypes.byref(tensor)), "rknn_inputs_set failed")
        _check(self._lib.rknn_run(context, None), "rknn_run failed")
        size = info.n_tokens * info.embed_size * ctypes.sizeof(ctypes.c_float)
        out = ctypes.create_string_buffer(size)
        output = api.RKNNOutput(1, 1, 0, ctypes.cast(out, ctypes.c_void_p), size)
        _check(self._lib.rknn_outputs_get(context, 1, ctypes.byref(output), None), "rknn_outputs_get failed")
        self._lib.rknn_outputs_release(context, 1, ctypes.byref(output))
        perf = _query(self._lib, context, api.RKNNQueryCmd.RKNN_QUERY_PERF_RUN, api.RKNNPerfRun())
        self.last_run_ms = perf.run_duration / 1000
        return ImageEmbedding(out.raw, info.n_tokens, info.embed_size, info.width, info.height)

    def _handle(self) -> int:
        if self._context is None:
            raise ClosedError("the vision encoder was closed")
        return self._context

    def close(self) -> None:
        """Free the context (idempotent)."""
        if self._context is not None:
            context, self._context = self._context, None
            self._lib.rknn_destroy(context)


def _check(status: int, what: str) -> None:
    if status != api.RKNN_SUCC:
        name = api.RETURN_CODES.get(status, "an unknown code")
        raise EncoderFailedError(f"{what}: {status} ({name}; see the RKNN runtime's log)")


def _query(lib: ctypes.CDLL, context: int, command: api.RKNNQueryCmd, info: Any) -> Any:
    _check(
        lib.rknn_query(context, command, ctypes.byref(info), ctypes.sizeof(info)),
        f"rknn_query {command.name}",
    )
    return info


def _query_info(lib: ctypes.CDLL, context: int, file_name: str) -> EncoderInfo:
    """The encoder's input and output shapes, family, runtime version and memory."""
    counts = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_IN_OUT_NUM, api.RKNNInputOutputNum())
    if counts.n_input != 1 or counts.n_output != 1:
        raise EncoderMismatchError(
            f"{file_name} has {counts.n_input} inputs and {counts.n_output} outputs; "
            "a vision encoder has one of each"
        )
    tensor_in = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_INPUT_ATTR, api.RKNNTensorAttr(index=0))
    tensor_out = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_OUTPUT_ATTR, api.RKNNTensorAttr(index=0))
    dims_in, dims_out = _dims(tensor_in), _dims(tensor_out)
    planar = tensor_in.fmt == api.RKNNTensorFormat.RKNN_TENSOR_NCHW
    if len(dims_in) != 4 or (dims_in[1] if planar else dims_in[3]) != 3 or len(dims_out) < 2:
        raise EncoderMismatchError(f"{file_name} is no image encoder: input {dims_in}, output {dims_out}")
    height, width = dims_in[2:4] if planar else dims_in[1:3]
    version = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_SDK_VERSION, api.RKNNSDKVersion())
    memory = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_MEM_SIZE, api.RKNNMemSize())
    custom = _query(lib, context, api.RKNNQueryCmd.RKNN_QUERY_CUSTOM_STRING, api.RKNNCustomString())
    return EncoderInfo(
        width=width,
        height=height,
        planar=planar,
        n_tokens=dims_out[-2],
        embed_size=dims_out[-1],
        family=encoder_family(custom.string.decode(errors="replace"), file_name),
        sdk_version=version.api_version.decode(errors="replace"),
        memory_mb=(memory.total_weight_size + memory.total_internal_size) / 2**20,
    )
