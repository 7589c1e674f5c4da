"""Python binding for the Rockchip RKLLM runtime (``librkllmrt.so``), ABIs 1.2 and 1.3.

Layers, bottom up: :mod:`rkllm_runtime.abi` mirrors the C header per ABI; this
package's top level is the typed API (:class:`RKLLMRuntime`, :class:`AsyncStream`);
:mod:`rkllm_runtime.chat` is the chat engine (messages and tools in, typed events
out, KV cache kept warm); :mod:`rkllm_runtime.models` gets a model that fits the board
and checks it; :mod:`rkllm_runtime.server` serves it over HTTP
(``rkllm-server``, needs the ``server`` extra), and :mod:`rkllm_runtime.remote.client`
uses a model on such a server as if it were a local chat engine.
"""

from .aio import AsyncStream
from .errors import (
    AbortedError,
    BusyError,
    ClosedError,
    ContextOverflowError,
    InsufficientMemoryError,
    InvalidTextError,
    LibraryError,
    LibraryNotFoundError,
    ModelError,
    ModelNotFoundError,
    ModelRejectedError,
    NotALibraryError,
    RKLLMError,
    RunError,
    UnsupportedVersionError,
    VersionMismatchError,
    WrongArchitectureError,
)
from .generation import CancelToken, Generation
from .library import Library, find_library, load_library
from .runtime import RKLLMRuntime
from .types import (
    Embeddings,
    Input,
    Logits,
    ModelParams,
    PerfStats,
    Prompt,
    Role,
    RunOptions,
    RunResult,
    Sampling,
    Tokens,
)

__all__ = [
    "AbortedError",
    "AsyncStream",
    "BusyError",
    "CancelToken",
    "ClosedError",
    "ContextOverflowError",
    "Embeddings",
    "Generation",
    "Input",
    "InsufficientMemoryError",
    "InvalidTextError",
    "Library",
    "LibraryError",
    "LibraryNotFoundError",
    "Logits",
    "ModelError",
    "ModelNotFoundError",
    "ModelParams",
    "ModelRejectedError",
    "NotALibraryError",
    "PerfStats",
    "Prompt",
    "RKLLMError",
    "RKLLMRuntime",
    "Role",
    "RunError",
    "RunOptions",
    "RunResult",
    "Sampling",
    "Tokens",
    "UnsupportedVersionError",
    "VersionMismatchError",
    "WrongArchitectureError",
    "find_library",
    "load_library",
]
