"""The typed, high-level API over one RKLLM handle."""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import numpy as np
import numpy.typing as npt

from .abi.common import (
    LLMCallState,
    LLMHandle,
    LLMResultCallback,
    RKLLMInferMode,
    RKLLMLoraAdapter,
    RKLLMResult,
    field_values,
)
from .closing import Closing
from .errors import (
    AbortedError,
    ClosedError,
    KVCacheError,
    ModelRejectedError,
    PromptCacheError,
    RKLLMError,
    RunError,
)
from .generation import CancelToken, Generation
from .init_param import build_param, param_values
from .library import Library, load_library
from .model_file import check_model_file
from .run_input import build_infer_param, build_input, encode_text
from .types import Input, Logits, ModelParams, PerfStats, RunOptions, RunResult, Sampling

if TYPE_CHECKING:
    from ctypes import _Pointer

__all__ = ["CancelToken", "Generation", "RKLLMRuntime", "check_model_file", "encode_text", "param_values"]

_LOGGER = logging.getLogger(__name__)

TextCallback = Callable[[str], None]


@dataclass(slots=True)
class _ActiveRun:
    """Book-keeping of the run in progress, shared with the C callback."""

    on_text: TextCallback | None
    token: CancelToken
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    chunks: list[str] = field(default_factory=list)
    perf: PerfStats | None = None
    logits: npt.NDArray[np.float32] | None = None
    failed: bool = False
    callback_error: BaseException | None = None


class RKLLMRuntime(Closing):
    """One model loaded on the NPU through one ``LLMHandle``.

    Every call on the handle is serialised: a second ``run`` waits for the first.
    Only :meth:`abort` and :attr:`is_running` may be called while a run is going.
    """

    def __init__(self, library: Library, model_path: str | Path, params: ModelParams | None = None) -> None:
        """Load a model; raises a :class:`~rkllm_runtime.errors.ModelError` when it cannot."""
        self.library = library
        self.model_path = Path(model_path)
        self.params = params or ModelParams()
        self._rkllm = library.rkllm
        self._abi = library.abi
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._active: _ActiveRun | None = None
        self._handle = LLMHandle()
        check_model_file(self.model_path)
        c_param = self._build_param()
        # A run's sampling starts from these: a field it leaves out keeps the runtime's value.
        self._sampling = {
            name: value
            for name, value in field_values(c_param).items()
            if name in Sampling.__dataclass_fields__
        }
        # The callback objects must live as long as the handle.
        self._c_callback = LLMResultCallback(self._on_result)
        self._init_callback = self._abi.init_callback(self._c_callback)
        if self._rkllm.init(self._handle, c_param, self._init_callback) != 0:
            raise ModelRejectedError(
                f"the RKLLM runtime rejected {self.model_path} (see the runtime log: a corrupt file, "
                "a model converted for another platform or runtime, or a context length above the model's)"
            )
        self._closed = False

    @classmethod
    def open(
        cls,
        library_path: str | Path,
        model_path: str | Path,
        params: ModelParams | None = None,
        *,
        release: str | None = None,
    ) -> Self:
        """Check and load the library, then the model."""
        return cls(load_library(library_path, release), model_path, params)

    def _build_param(self) -> ctypes.Structure:
        """The runtime's default parameters with this model's changes (:func:`build_param`)."""
        param, self._param_bytes = build_param(
            self._rkllm.create_default_param(), self.model_path, self.params, self._abi.PER_INPUT_IMAGE_TAGS
        )
        return param

    def default_param(self) -> dict[str, object]:
        """The runtime's own ``rkllm_createDefaultParam()`` values (numbers and flags only)."""
        return param_values(self._rkllm.create_default_param())

    # ------------------------------------------------------------------ running

    def run(
        self,
        input_: Input,
        options: RunOptions | None = None,
        on_text: TextCallback | None = None,
        token: CancelToken | None = None,
        mode: RKLLMInferMode = RKLLMInferMode.RKLLM_INFER_GENERATE,
    ) -> RunResult:
        """Run the model to the end, calling ``on_text`` with each decoded chunk.

        Blocks (use an executor thread). ``on_text`` runs on the runtime's thread.
        Raises :class:`AbortedError` when aborted, :class:`RunError` on failure.
        """
        run = _ActiveRun(on_text, token or CancelToken())
        self._run_locked(input_, options or RunOptions(), mode, run)
        tail = run.decoder.decode(b"", final=True)
        if tail:
            run.chunks.append(tail)
            if on_text is not None:
                on_text(tail)
        return RunResult("".join(run.chunks), run.perf or PerfStats())

    def logits(self, input_: Input, *, keep_history: bool, token: CancelToken | None = None) -> Logits:
        """Prefill ``input_`` and return the next-token logits of its last position (no token is chosen).

        A :class:`~rkllm_runtime.types.Tokens` input feeds chosen ids back. Whether the runtime keeps a
        logits run's input in the KV cache with ``keep_history`` is not documented (see ``board_check``).
        Blocks like :meth:`run`; raises :class:`AbortedError` or :class:`RunError`.
        """
        run = _ActiveRun(None, token or CancelToken())
        self._run_locked(
            input_, RunOptions(keep_history=keep_history), RKLLMInferMode.RKLLM_INFER_GET_LOGITS, run
        )
        if run.logits is None:
            raise RunError("the RKLLM runtime returned no logits")
        return Logits(run.logits, run.perf or PerfStats())

    def _run_locked(self, input_: Input, options: RunOptions, mode: RKLLMInferMode, run: _ActiveRun) -> None:
        """One ``rkllm_run`` under the handle lock; raises as :meth:`run` says."""
        with self._lock:
            self._check_open()
            if run.token.is_set():
                raise AbortedError("the request was cancelled before it started")
            c_input, keep_alive = self._build_input(input_)
            c_infer, keep_alive_infer = self._build_infer_param(options, mode)
            with self._state_lock:
                self._active = run
            try:
                status = self._rkllm.run(self._handle, c_input, c_infer)
            finally:
                with self._state_lock:
                    self._active = None
                del keep_alive, keep_alive_infer
        if run.callback_error is not None:
            raise RunError(f"the text consumer failed: {run.callback_error!r}") from run.callback_error
        if run.token.is_set() and not run.token.ended_early:
            raise AbortedError("the run was aborted")
        if (status != 0 or run.failed) and not run.token.ended_early:
            raise RunError("the RKLLM runtime reported an error while generating (see its log)")

    def generate(self, input_: Input, options: RunOptions | None = None) -> Generation:
        """Run on a worker thread and iterate over the decoded chunks as they come."""
        return Generation(self, input_, options, CancelToken())

    def _on_result(self, result: _Pointer[RKLLMResult], _userdata: int | None, state: int) -> int:
        """The C callback: never raises, always returns 0 (continue)."""
        try:
            run = self._active
            if run is None:
                return 0
            if state == LLMCallState.RKLLM_RUN_ERROR:
                run.failed = True
            elif state == LLMCallState.RKLLM_RUN_FINISH:
                perf = result.contents.perf
                run.perf = PerfStats(
                    perf.prefill_time_ms,
                    perf.prefill_tokens,
                    perf.generate_time_ms,
                    perf.generate_tokens,
                    perf.memory_usage_mb,
                )
            elif result and result.contents.logits.logits and result.contents.logits.vocab_size > 0:
                # Valid only inside the callback: copy the last position's row.
                logits = result.contents.logits
                width, rows = logits.vocab_size, max(logits.num_tokens, 1)
                values = np.ctypeslib.as_array(logits.logits, shape=(rows * width,))
                run.logits = values[(rows - 1) * width :].astype(np.float32, copy=True)
            elif result and result.contents.text and not run.token.is_set():
                text = run.decoder.decode(ctypes.string_at(result.contents.text))
                if text:
                    run.chunks.append(text)
                    if run.on_text is not None and run.callback_error is None:
                        run.on_text(text)
        except BaseException as err:
            if self._active is not None:
                self._active.callback_error = err
            _LOGGER.exception("Error in the RKLLM result callback")
        return 0

    def abort(self, token: CancelToken | None = None) -> bool:
        """Abort the running request (only the one owning ``token`` when given).

        Safe from any thread. Returns whether a run was told to stop.
        """
        with self._state_lock:
            run = self._active
            if run is None or (token is not None and run.token is not token):
                return False
            run.token.set()
        self._rkllm.abort(self._handle)
        return True

    def end_early(self, token: CancelToken) -> bool:
        """Stop decoding the run of ``token`` now, with ``rkllm_abort``: it returns what was said so far.

        For a reply that is complete before the model closes it (a whole tool call). Safe from any thread.
        """
        token.ended_early = True
        return self.abort(token)

    @property
    def is_running(self) -> bool:
        """Whether ``rkllm_run`` is in progress on the handle."""
        return not self._closed and self._rkllm.is_running(self._handle)

    def _build_input(self, input_: Input) -> tuple[ctypes.Structure, list[object]]:
        return build_input(self._abi, input_)

    def _build_infer_param(
        self, options: RunOptions, mode: RKLLMInferMode = RKLLMInferMode.RKLLM_INFER_GENERATE
    ) -> tuple[ctypes.Structure, list[object]]:
        return build_infer_param(self._abi, options, self._sampling, mode)

    # ------------------------------------------------------------- KV and cache

    def _checked(self, call: Callable[[LLMHandle], int], error: type[RKLLMError], name: str) -> None:
        """Call a status-returning function on the handle under the handle lock; raise ``error`` on -1."""
        with self._lock:
            self._check_open()
            if call(self._handle) != 0:
                raise error(f"{name} failed (see the RKLLM runtime log)")

    def clear_kv_cache(self, keep_system_prompt: bool = True) -> None:
        """Drop the KV cache, optionally keeping the system prompt."""
        self._checked(
            lambda handle: self._rkllm.clear_kv_cache(handle, keep_system_prompt),
            KVCacheError,
            "rkllm_clear_kv_cache",
        )

    def clear_kv_cache_range(self, start: int, end: int) -> None:
        """Clear KV positions ``[start, end)``.

        The runtime allows it only while a ``keep_history=0`` run is paused by its callback.
        """
        self._checked(
            lambda handle: self._rkllm.clear_kv_cache(handle, False, (start, end)),
            KVCacheError,
            "rkllm_clear_kv_cache",
        )

    def kv_cache_size(self) -> int:
        """Tokens in the KV cache (batch slot 0)."""
        sizes = (ctypes.c_int * 8)()
        self._checked(
            lambda handle: self._rkllm.get_kv_cache_size(handle, sizes),
            KVCacheError,
            "rkllm_get_kv_cache_size",
        )
        return int(sizes[0])

    def load_prompt_cache(self, path: str | Path) -> None:
        """Load a prompt-cache file saved by a run with ``save_prompt_cache``."""
        self._checked(
            lambda handle: self._rkllm.load_prompt_cache(handle, str(path).encode()),
            PromptCacheError,
            "rkllm_load_prompt_cache",
        )

    def release_prompt_cache(self) -> None:
        """Forget the loaded prompt cache."""
        self._checked(self._rkllm.release_prompt_cache, PromptCacheError, "rkllm_release_prompt_cache")

    def set_chat_template(self, system_prompt: str, prefix: str, postfix: str) -> None:
        """Replace the model's chat template (no tools or thinking switch); clear the KV cache after it."""
        texts = [encode_text(text) for text in (system_prompt, prefix, postfix)]
        self._checked(
            lambda handle: self._rkllm.set_chat_template(handle, *texts),
            RKLLMError,
            "rkllm_set_chat_template",
        )

    def set_function_tools(
        self, system_prompt: str, tools_json: str, tool_response: str = "tool_response"
    ) -> None:
        """Set the system prompt and the OpenAI-style tools (a JSON array) for the built-in template.

        Whether this clears the KV cache is not documented: clear it after.
        """
        texts = [encode_text(text) for text in (system_prompt, tools_json, tool_response)]
        self._checked(
            lambda handle: self._rkllm.set_function_tools(handle, *texts),
            RKLLMError,
            "rkllm_set_function_tools",
        )

    def load_lora(self, path: str | Path, name: str, scale: float = 1.0) -> None:
        """Load a LoRA adapter; select it per run with ``RunOptions.lora_adapter``."""
        adapter = RKLLMLoraAdapter(str(path).encode(), name.encode(), scale)
        self._checked(lambda handle: self._rkllm.load_lora(handle, adapter), RKLLMError, "rkllm_load_lora")

    # -------------------------------------------------------------------- close

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the RKLLM runtime was closed")

    def close(self) -> None:
        """Abort any run, then destroy the handle. Idempotent."""
        self.abort()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._rkllm.destroy(self._handle)
            self._handle = LLMHandle()
