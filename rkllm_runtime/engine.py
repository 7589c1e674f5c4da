"""The chat engine: one model, one request at a time, and a KV cache kept warm.

Requests queue in a bounded FIFO. For each one the engine works out what the
runtime's KV cache already holds and sends only what is new, using only what the
vendor documents for every strategy (:class:`KVMode`):

- unchanged system prompt and tools: never set again; a changed one is set with
  ``rkllm_set_function_tools`` followed by an explicit full ``rkllm_clear_kv_cache``
  (whether setting it clears the cache is not documented);
- the KV cache is never cleared by range (the runtime refuses it outside a paused
  ``keep_history=0`` run);
- a prompt-cache file (see :mod:`rkllm_runtime.prompt_cache`) keeps the system prompt
  across restarts; it is restored only for a ``keep_history=0`` run, where the runtime
  detects the cached prefix of the run's input, so context is never duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from enum import StrEnum
from types import TracebackType
from typing import Self

from .aio import AsyncStream
from .conversation import (
    CacheState,
    ChatRequest,
    Message,
    fingerprint,
    new_input,
    rebuild_input,
    split_new,
    system_key,
    trim_turns,
)
from .errors import AbortedError, BusyError, ClosedError, ContextOverflowError, RKLLMError
from .prompt_cache import CacheKey, PromptCacheStore, model_identity
from .runtime import RKLLMRuntime, encode_text
from .types import PerfStats, Prompt, RunOptions

_LOGGER = logging.getLogger(__name__)

# Past this share of max_context_len, the conversation is rebuilt with fewer turns.
CONTEXT_BUDGET = 0.75
# Once whitespace runs are collapsed, a token is hardly ever longer than this: a text of n bytes
# needs at least n / MAX_BYTES_PER_TOKEN tokens, a bound that refuses only what can never fit.
MAX_BYTES_PER_TOKEN = 32
_WHITESPACE = re.compile(r"\s+")


class KVMode(StrEnum):
    """How the engine uses the KV cache."""

    # keep_history=0 for every run, as the vendor's own examples do: the system prompt stays
    # cached, the conversation is re-sent each turn (its closing of turns is not relied on).
    CONSERVATIVE = "conservative"
    # keep_history=1 within a conversation: a follow-up or tool result sends only itself.
    # Relies on how the runtime closes a turn between runs, which the vendor does not document.
    REUSE = "reuse"
    NAIVE = "naive"  # re-prefill everything every time (for comparison)


class EngineState(StrEnum):
    """What the engine is doing."""

    READY = "ready"
    PREFILLING = "prefilling"  # reading the prompt, before the first token
    GENERATING = "generating"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A finished generation with its token accounting."""

    text: str
    perf: PerfStats
    prompt_tokens: int
    cached_tokens: int
    cache_hit: bool


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine started."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    kv_tokens: int = 0
    last: ChatResult | None = None
    last_error: str | None = None  # of the last request, None when it succeeded


@dataclass(slots=True)
class _Plan:
    """What one request sends and what the cache holds afterwards."""

    request: ChatRequest
    key: str
    input: Prompt
    options: RunOptions
    set_system: bool
    clear: bool | None  # None: keep the cache; True/False: clear it, keeping the system prompt or not
    hit: bool
    system_cached: bool  # the run starts with the system section in the KV cache (or a prompt cache)
    consumed: int
    history_fingerprint: str
    history_start: int = 0  # leading messages of the conversation no longer sent (context budget)
    save_cache: CacheKey | None = None  # this run saves the system prompt's prompt-cache file


class ChatEngine:
    """Serialises requests to one :class:`RKLLMRuntime` and keeps its KV cache warm."""

    def __init__(
        self,
        runtime: RKLLMRuntime,
        *,
        max_waiting: int = 2,
        kv_mode: KVMode = KVMode.CONSERVATIVE,
        prompt_caches: PromptCacheStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_waiting = max_waiting
        self.kv_mode = kv_mode
        self.prompt_caches = prompt_caches if kv_mode is not KVMode.NAIVE else None
        self.stats = EngineStats()
        self.state = EngineState.READY
        self._cache = CacheState()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._listeners: list[Callable[[], None]] = []
        # One thread owns every blocking runtime call, so long runs never tie up a shared pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rkllm")
        self._model_identity: str | None = None  # read on the engine thread when first needed
        self._prompt_cache_loaded = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self.state is EngineState.CLOSED

    @property
    def waiting(self) -> int:
        """Requests queued behind the running one."""
        return self._waiting

    def add_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the event loop) whenever state or stats change; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _set_state(self, state: EngineState) -> None:
        self.state = state
        for listener in list(self._listeners):
            listener()

    def chat(self, request: ChatRequest) -> ChatStream:
        """Generate a reply; iterate the returned stream for its text chunks."""
        return ChatStream(self, request)

    async def _generate(self, request: ChatRequest, stream: ChatStream) -> AsyncGenerator[str]:
        if self.closed:
            raise ClosedError("the model was unloaded")
        _check_request(request, self.runtime.params.max_context_len)
        if self._lock.locked() and self._waiting >= self.max_waiting:
            raise BusyError(f"the model is busy: {self._waiting} requests are already waiting")
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        completed = False
        plan: _Plan | None = None
        try:
            if self.closed:
                raise ClosedError("the model was unloaded")
            self._set_state(EngineState.PREFILLING)
            plan = self._plan(request)
            await self._in_executor(self._prepare, plan)
            run = AsyncStream(self.runtime, plan.input, plan.options, self._executor)
            async with run:
                async for chunk in run:
                    if self.state is EngineState.PREFILLING:
                        self._set_state(EngineState.GENERATING)
                    yield chunk
            assert run.result is not None
            kv_tokens = await self._in_executor(self._finish_run, plan)
            stream.result = self._commit(plan, run.result.text, run.result.perf, kv_tokens)
            completed = True
        except AbortedError:
            raise  # cancelled by the caller or an unload: not the model's fault
        except RKLLMError as err:
            self.stats.last_error = str(err)
            raise
        finally:
            if not completed:
                self._cache.forget_conversation()
                if plan is not None and plan.save_cache is not None and self.prompt_caches is not None:
                    # queued behind the aborted run on the engine thread; nothing here may block
                    self._executor.submit(self.prompt_caches.abandon, plan.save_cache)
            if not self.closed:
                self._set_state(EngineState.READY)
            self._lock.release()

    async def _in_executor[T](self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _plan(self, request: ChatRequest) -> _Plan:
        cache = self._cache
        key = system_key(request.system_prompt, request.tools)
        split = split_new(request.messages)
        options = RunOptions(
            keep_history=self.kv_mode is KVMode.REUSE,
            max_new_tokens=request.max_new_tokens,
            sampling=request.sampling,
        )
        consumed = len(split.history) + len(split.new) + 1  # the reply joins the conversation
        history_fingerprint = fingerprint([*split.history, *split.new])
        set_system = self.kv_mode is KVMode.NAIVE or key != cache.system_key
        plan = _Plan(
            request,
            key,
            new_input(split.new, request.enable_thinking),
            options,
            set_system,
            clear=False if set_system else None,  # a new system prompt starts from an empty cache
            # A new system prompt is a hit only if its prompt-cache file loads (decided in _prepare).
            hit=not set_system or self.prompt_caches is not None,
            system_cached=not set_system and cache.system_in_kv,
            consumed=consumed,
            history_fingerprint=history_fingerprint,
        )

        same_conversation = (
            request.conversation_id is not None
            and cache.conversation_id == request.conversation_id
            and cache.consumed == len(split.history)
            and cache.history_fingerprint == fingerprint(split.history)
        )
        over_budget = cache.kv_tokens > CONTEXT_BUDGET * self.runtime.params.max_context_len
        if same_conversation:
            plan.history_start = cache.history_start
        if plan.options.keep_history and not set_system and same_conversation and cache.in_kv:
            if not over_budget:
                return plan  # a follow-up: only the new messages
            plan.clear = True

        history = trim_turns(split.history[plan.history_start :], request.max_history_turns)
        if same_conversation and over_budget:
            history = _drop_oldest_half(history)
            _LOGGER.debug(
                "Conversation %s fills %d of %d context tokens: rebuilt with its last %d messages",
                request.conversation_id,
                cache.kv_tokens,
                self.runtime.params.max_context_len,
                len(history),
            )
        plan.history_start = len(split.history) - len(history)
        plan.input = rebuild_input(history, split.new, request.enable_thinking)
        if plan.options.keep_history and plan.clear is None:
            plan.clear = True  # another conversation is in the cache: back to the system prompt
        # Re-sending the history is by design in the conservative mode; elsewhere it is a miss.
        plan.hit = plan.hit and (not history or self.kv_mode is KVMode.CONSERVATIVE)
        return plan

    def _prepare(self, plan: _Plan) -> None:
        """Bring the runtime's cache to the plan's starting point (runs on the engine thread)."""
        if plan.set_system:
            self.runtime.set_function_tools(plan.request.system_prompt, plan.request.tools or "[]")
            self._cache = CacheState(system_key=plan.key)
        if plan.clear is not None:
            self.runtime.clear_kv_cache(keep_system_prompt=plan.clear)
        if plan.set_system and self.prompt_caches is not None:
            self._use_prompt_cache(plan, self.prompt_caches)

    def _use_prompt_cache(self, plan: _Plan, store: PromptCacheStore) -> None:
        """Load the system prompt's verified prompt-cache file, or let this run save one (engine thread)."""
        try:
            if self._model_identity is None:
                self._model_identity = model_identity(self.runtime.model_path)
        except OSError as err:
            _LOGGER.warning(
                "Cannot read %s (%s); answering without prompt-cache files", self.runtime.model_path, err
            )
            plan.hit = False
            return
        key = CacheKey(self.runtime.library.release, self._model_identity, plan.key)
        path = store.lookup(key)
        if path is not None:
            try:
                if self._prompt_cache_loaded:  # the runtime holds one file at a time
                    self.runtime.release_prompt_cache()
                self.runtime.load_prompt_cache(path)
                self._prompt_cache_loaded = True
            except RKLLMError:
                _LOGGER.warning("The runtime refused prompt cache %s; it will be rebuilt", path.name)
                store.discard(path)
            else:
                # Restored for a keep_history=0 run only: its input is matched against the
                # cached prefix. In a kept conversation the runtime would not match it.
                plan.system_cached = True
                plan.options = replace(plan.options, keep_history=False)
                return
        plan.hit = False
        staging = store.staging_path(key)
        if staging is not None:
            plan.save_cache = key
            plan.options = replace(plan.options, save_prompt_cache=str(staging))

    def _finish_run(self, plan: _Plan) -> int | None:
        """Keep the prompt-cache file the run saved; the KV-cache size if known (engine thread)."""
        if plan.save_cache is not None and self.prompt_caches is not None:
            self.prompt_caches.saved(plan.save_cache)
        if self.runtime.library.has("rkllm_get_kv_cache_size"):
            return self.runtime.kv_cache_size()
        return None

    def _commit(self, plan: _Plan, text: str, perf: PerfStats, kv_tokens: int | None) -> ChatResult:
        cache = self._cache
        if plan.options.keep_history:
            held = cache.kv_tokens if not plan.clear and cache.in_kv else 0
            context = (
                kv_tokens if kv_tokens is not None else held + perf.prefill_tokens + perf.generate_tokens
            )
            prompt_tokens = max(context - perf.generate_tokens, perf.prefill_tokens)
        else:
            # The runtime went back to the system section, which is all it keeps.
            system = kv_tokens or 0
            prompt_tokens = perf.prefill_tokens + (system if plan.system_cached else 0)
            context = prompt_tokens + perf.generate_tokens
        result = ChatResult(
            text=text,
            perf=perf,
            prompt_tokens=prompt_tokens,
            cached_tokens=prompt_tokens - perf.prefill_tokens,
            cache_hit=plan.hit,
        )
        cache.system_key = plan.key
        cache.system_in_kv = True
        cache.conversation_id = plan.request.conversation_id
        cache.consumed = plan.consumed
        cache.history_fingerprint = plan.history_fingerprint
        cache.history_start = plan.history_start
        cache.in_kv = plan.options.keep_history
        cache.kv_tokens = context
        self.stats.requests += 1
        self.stats.kv_tokens = kv_tokens if kv_tokens is not None else context
        if plan.hit:
            self.stats.cache_hits += 1
        else:
            self.stats.cache_misses += 1
        self.stats.last = result
        self.stats.last_error = None
        return result

    async def aclose(self) -> None:
        """Abort what runs, wait for it, destroy the handle and stop the engine thread."""
        if self.closed:
            return
        self._set_state(EngineState.CLOSED)
        self.runtime.abort()
        async with self._lock:
            await self._in_executor(self.runtime.close)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)


class ChatStream:
    """The text chunks of one request; ``result`` is set when it has finished.

    Use ``async with engine.chat(request) as stream: async for chunk in stream``.
    Raises :class:`BusyError` when the queue is full, :class:`RunError` on failure.
    """

    def __init__(self, engine: ChatEngine, request: ChatRequest) -> None:
        self.result: ChatResult | None = None
        self._generator = engine._generate(request, self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        return await self._generator.__anext__()

    async def aclose(self) -> None:
        """Stop early: the run is aborted and the engine freed."""
        await self._generator.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _check_request(request: ChatRequest, limit: int) -> None:
    """Refuse, before queueing, text C cannot carry and a new part that can certainly not fit."""
    for message in request.messages:
        encode_text(message.content)
    texts = [request.system_prompt, request.tools, *(m.content for m in split_new(request.messages).new)]
    tokens = sum(len(encode_text(_WHITESPACE.sub(" ", text))) for text in texts) // MAX_BYTES_PER_TOKEN
    if tokens > limit:
        raise ContextOverflowError(
            f"the input needs at least {tokens} tokens but the context holds {limit}",
            tokens=tokens,
            limit=limit,
        )


def _drop_oldest_half(history: Sequence[Message]) -> Sequence[Message]:
    """The later half of the history's turns (nothing when only one turn remains)."""
    starts = [i for i, message in enumerate(history) if message.role == "user"]
    if len(starts) < 2:
        return []
    return history[starts[len(starts) // 2] :]
