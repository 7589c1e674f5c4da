"""The typed, high-level API over one RKLLM handle."""

from __future__ import annotations

import codecs
import ctypes
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from .abi.common import (
    LLMCallState,
    LLMHandle,
    LLMResultCallback,
    RKLLMInferMode,
    RKLLMInputType,
    RKLLMLoraAdapter,
    RKLLMLoraParam,
    RKLLMPromptCacheParam,
)
from .errors import (
    AbortedError,
    ClosedError,
    InsufficientMemoryError,
    InvalidTextError,
    ModelNotFoundError,
    ModelRejectedError,
    NotAModelError,
    RKLLMError,
    RunError,
)
from .library import Library, load_library
from .system import available_memory_mb
from .types import (
    Embeddings,
    Input,
    Logits,
    ModelParams,
    PerfStats,
    Prompt,
    RunOptions,
    RunResult,
    Sampling,
    Tokens,
)

_LOGGER = logging.getLogger(__name__)

# Loading needs the weights in memory plus working buffers.
MEMORY_HEADROOM = 1.1

TextCallback = Callable[[str], None]


class CancelToken(threading.Event):
    """Set to cancel one run, whether it is running yet or still waiting for the handle."""

    ended_early = False
    """Set by :meth:`RKLLMRuntime.end_early`: the run ends as a completed one."""


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


class RKLLMRuntime:
    """One model loaded on the NPU through one ``LLMHandle``.

    Every call on the handle is serialised: a second ``run`` waits for the first.
    Only :meth:`abort` and :attr:`is_running` may be called while a run is going.
    """

    def __init__(self, library: Library, model_path: str | Path, params: ModelParams | None = None) -> None:
        """Load a model; raises a :class:`~rkllm_runtime.errors.ModelError` when it cannot."""
        self.library = library
        self.model_path = Path(model_path)
        self.params = params or ModelParams()
        self._lib = library.cdll
        self._abi = library.abi
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._active: _ActiveRun | None = None
        self._handle = LLMHandle()
        check_model_file(self.model_path)
        c_param = self._build_param()
        # A run's sampling starts from these: a field it leaves out keeps the runtime's value.
        self._sampling = {name: getattr(c_param, name) for name in Sampling.__dataclass_fields__}
        # The callback objects must live as long as the handle.
        self._c_callback = LLMResultCallback(self._on_result)
        init_callback: Any = self._c_callback
        if library.abi_version == "1.3":
            self._c_callbacks = self._abi.RKLLMCallback(result_callback=self._c_callback)
            init_callback = ctypes.byref(self._c_callbacks)
        if self._lib.rkllm_init(ctypes.byref(self._handle), ctypes.byref(c_param), init_callback) != 0:
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

    def _build_param(self) -> Any:
        """The runtime's default parameters with this model's changes.

        Always changed: ``model_path``; ``max_context_len`` (the default 512 is too small for a
        chat); ``skip_special_token`` on (template tokens such as ``<|im_end|>`` must not reach
        the text); ``is_async`` off (the binding runs ``rkllm_run`` on its own thread, and the
        asynchronous mode was broken before 1.2.2). Everything else only when set.
        """
        p = self.params
        param = self._lib.rkllm_createDefaultParam()
        self._model_path_bytes = str(self.model_path).encode()
        param.model_path = self._model_path_bytes
        param.max_context_len = p.max_context_len
        param.skip_special_token = True
        param.is_async = False
        if p.max_new_tokens is not None:
            param.max_new_tokens = p.max_new_tokens
        if p.n_keep is not None:
            param.n_keep = p.n_keep
        if p.sampling is not None:
            _apply_sampling(param, p.sampling)
        if p.base_domain_id is not None:
            param.extend_param.base_domain_id = p.base_domain_id
        if p.embed_flash is not None:
            param.extend_param.embed_flash = int(p.embed_flash)
        if p.enabled_cpus_mask is not None:
            param.extend_param.enabled_cpus_mask = p.enabled_cpus_mask
            param.extend_param.enabled_cpus_num = bin(p.enabled_cpus_mask).count("1")
        return param

    def default_param(self) -> dict[str, object]:
        """The runtime's own ``rkllm_createDefaultParam()`` values (numbers and flags only)."""
        return param_values(self._lib.rkllm_createDefaultParam())

    # ------------------------------------------------------------------ running

    def run(
        self,
        input_: Input,
        options: RunOptions | None = None,
        on_text: TextCallback | None = None,
        token: CancelToken | None = None,
    ) -> RunResult:
        """Run the model to the end, calling ``on_text`` with each decoded chunk.

        Blocks (use an executor thread). ``on_text`` runs on the runtime's thread.
        Raises :class:`AbortedError` when aborted, :class:`RunError` on failure.
        """
        options = options or RunOptions()
        run = _ActiveRun(on_text, token or CancelToken())
        self._run_locked(input_, options, RKLLMInferMode.RKLLM_INFER_GENERATE, run)
        tail = run.decoder.decode(b"", final=True)
        if tail:
            run.chunks.append(tail)
            if on_text is not None:
                on_text(tail)
        return RunResult("".join(run.chunks), run.perf or PerfStats())

    def logits(self, input_: Input, *, keep_history: bool, token: CancelToken | None = None) -> Logits:
        """Prefill ``input_`` and return the next-token logits of its last position (no token is chosen).

        A :class:`Tokens` input feeds chosen ids back. Whether the runtime keeps a logits run's
        input in the KV cache with ``keep_history`` is not documented (see ``board_check``).
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
            c_infer, keep_alive_infer = self._build_infer_param(options)
            c_infer.mode = mode
            with self._state_lock:
                self._active = run
            try:
                status = self._lib.rkllm_run(self._handle, ctypes.byref(c_input), ctypes.byref(c_infer), None)
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
        return Generation(self, input_, options)

    def _on_result(self, result: Any, _userdata: int | None, state: int) -> int:
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
        self._lib.rkllm_abort(self._handle)
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
        return not self._closed and bool(self._lib.rkllm_is_running(self._handle))

    def _build_input(self, input_: Input) -> tuple[Any, list[Any]]:
        c_input = self._abi.RKLLMInput()
        keep_alive: list[Any] = [encode_text(input_.role)]
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

    def _build_infer_param(self, options: RunOptions) -> tuple[Any, list[Any]]:
        c_infer = self._abi.RKLLMInferParam()
        keep_alive: list[Any] = []
        c_infer.mode = RKLLMInferMode.RKLLM_INFER_GENERATE
        c_infer.keep_history = int(options.keep_history)
        if options.lora_adapter:
            lora = RKLLMLoraParam(options.lora_adapter.encode())
            keep_alive.append(lora)
            c_infer.lora_params = ctypes.pointer(lora)
        if options.save_prompt_cache:
            cache = RKLLMPromptCacheParam(1, options.save_prompt_cache.encode())
            keep_alive.append(cache)
            c_infer.prompt_cache_params = ctypes.pointer(cache)
        if self.library.abi_version == "1.3":
            c_infer.max_new_tokens = max(options.max_new_tokens, 0)
            if options.sampling is not None:
                sampling = self._abi.RKLLMSamplingParam(**self._sampling)
                _apply_sampling(sampling, options.sampling)
                keep_alive.append(sampling)
                c_infer.sampling_params = ctypes.pointer(sampling)
        return c_infer, keep_alive

    # ------------------------------------------------------------- KV and cache

    def _call(self, name: str, *args: Any) -> None:
        """Call a status-returning function under the handle lock; raise on -1."""
        with self._lock:
            self._check_open()
            if getattr(self._lib, name)(self._handle, *args) != 0:
                raise RKLLMError(f"{name} failed (see the RKLLM runtime log)")

    def clear_kv_cache(self, keep_system_prompt: bool = True) -> None:
        """Drop the KV cache, optionally keeping the system prompt."""
        self._call("rkllm_clear_kv_cache", int(keep_system_prompt), None, None)

    def clear_kv_cache_range(self, start: int, end: int) -> None:
        """Clear KV positions ``[start, end)``.

        The runtime allows it only while a ``keep_history=0`` run is paused by its callback.
        """
        self._call(
            "rkllm_clear_kv_cache", 0, ctypes.byref(ctypes.c_int(start)), ctypes.byref(ctypes.c_int(end))
        )

    def kv_cache_size(self) -> int:
        """Tokens in the KV cache (batch slot 0)."""
        sizes = (ctypes.c_int * 8)()
        self._call("rkllm_get_kv_cache_size", sizes)
        return int(sizes[0])

    def load_prompt_cache(self, path: str | Path) -> None:
        """Load a prompt-cache file saved by a run with ``save_prompt_cache``."""
        self._call("rkllm_load_prompt_cache", str(path).encode())

    def release_prompt_cache(self) -> None:
        """Forget the loaded prompt cache."""
        self._call("rkllm_release_prompt_cache")

    def set_chat_template(self, system_prompt: str, prefix: str, postfix: str) -> None:
        """Replace the model's chat template (no tools or thinking switch); clear the KV cache after it."""
        self._call("rkllm_set_chat_template", *map(encode_text, (system_prompt, prefix, postfix)))

    def set_function_tools(
        self, system_prompt: str, tools_json: str, tool_response: str = "tool_response"
    ) -> None:
        """Set the system prompt and the OpenAI-style tools (a JSON array) for the built-in template.

        Whether this clears the KV cache is not documented: clear it after.
        """
        self._call("rkllm_set_function_tools", *map(encode_text, (system_prompt, tools_json, tool_response)))

    def load_lora(self, path: str | Path, name: str, scale: float = 1.0) -> None:
        """Load a LoRA adapter; select it per run with ``RunOptions.lora_adapter``."""
        adapter = RKLLMLoraAdapter(str(path).encode(), name.encode(), scale)
        self._call("rkllm_load_lora", ctypes.byref(adapter))

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
            self._lib.rkllm_destroy(self._handle)
            self._handle = LLMHandle()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Generation(Iterator[str]):
    """Decoded chunks of a run on a worker thread; ``result`` is set once exhausted.

    Closing it early (or leaving a ``with`` block) aborts the run.
    """

    _DONE = object()

    def __init__(self, runtime: RKLLMRuntime, input_: Input, options: RunOptions | None) -> None:
        self.result: RunResult | None = None
        self._runtime = runtime
        self._token = CancelToken()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._work, args=(input_, options), name="rkllm-generate", daemon=True
        )
        self._thread.start()

    def _work(self, input_: Input, options: RunOptions | None) -> None:
        try:
            self.result = self._runtime.run(input_, options, self._queue.put, self._token)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._error = err
        finally:
            self._queue.put(self._DONE)

    def __next__(self) -> str:
        item = self._queue.get()
        if item is self._DONE:
            self._thread.join()
            if self._error is not None:
                raise self._error
            raise StopIteration
        assert isinstance(item, str)
        return item

    def close(self) -> None:
        """Abort the run if it is still going and wait for the worker thread."""
        self._token.set()
        while self._thread.is_alive():
            self._runtime.abort(self._token)
            self._thread.join(0.05)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_text(text: str) -> bytes:
    """UTF-8 for a C string; raises :class:`InvalidTextError` for text one cannot carry whole."""
    if "\0" in text:
        raise InvalidTextError(f"the text contains a NUL character at position {text.index(chr(0))}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidTextError(f"the text contains an unpaired surrogate at position {err.start}") from err


def check_model_file(path: Path) -> None:
    """Raise unless the model file exists, is not empty and fits in the memory available now."""
    if path.is_dir():
        raise NotAModelError(f"{path} is a folder, not a model file")
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} does not exist")
    if path.stat().st_size == 0:
        raise NotAModelError(f"{path} is empty, not a model file")
    need_mb = path.stat().st_size / 2**20 * MEMORY_HEADROOM
    free_mb = available_memory_mb()
    if free_mb is not None and need_mb > free_mb:
        raise InsufficientMemoryError(
            f"{path.name} needs about {need_mb:.0f} MB but only {free_mb:.0f} MB of memory is available"
        )


def param_values(struct: Any) -> dict[str, object]:
    """The numbers and flags of an ``RKLLMParam`` (nested structs flattened)."""
    values: dict[str, object] = {}
    for name, *_ in struct._fields_:
        value = getattr(struct, name)
        if isinstance(value, ctypes.Structure):
            values.update(param_values(value))
        elif isinstance(value, (bool, int, float)):
            values[name] = round(value, 4) if isinstance(value, float) else value
    return values


def _apply_sampling(target: Any, sampling: Sampling) -> None:
    for name in Sampling.__dataclass_fields__:
        if (value := getattr(sampling, name)) is not None:
            setattr(target, name, value)
