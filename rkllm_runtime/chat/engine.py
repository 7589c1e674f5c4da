"""The chat engine: one model, one request at a time, and a KV cache kept warm.

Requests queue in a bounded FIFO. For each one, :func:`~rkllm_runtime.chat.plan.plan`
works out what the runtime's KV cache already holds (the system prompt with its
tools, then the turns of one conversation) and what the KV strategy must send.
The system-prompt prefix is also kept as a prompt-cache file (see
:mod:`rkllm_runtime.chat.prompt_cache`) so the first request after a restart does
not prefill it again. Engine state is only changed on the event loop; the steps on
the engine thread return what they did.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import partial
from types import TracebackType
from typing import Self, TypeVar

from rkllm_runtime.aio import AsyncStream, Runner
from rkllm_runtime.errors import (
    AbortedError,
    BusyError,
    ClosedError,
    ContextOverflowError,
    RKLLMError,
    RunError,
)
from rkllm_runtime.runtime import CancelToken, RKLLMRuntime, TextCallback, encode_text
from rkllm_runtime.types import Input, PerfStats, RunOptions, RunResult, TokenLogprob

from .constrained import ConstrainedDecoder, GrammarError, prepare_decoder, request_grammar
from .evaluate import EvaluationRequest, EvaluationResult, run_evaluation
from .evaluate import system_prompt as evaluation_system_prompt
from .events import ChatEvent, ChatResult, Finished, MalformedToolCall, TextDelta, ToolCallDelta
from .messages import (
    ChatRequest,
    Message,
    ToolCall,
    current_turn_start,
    fingerprint,
    history_text,
    render_tools,
    split_new,
    system_key,
)
from .parser import StreamParser
from .plan import (
    TURN_TOKENS,
    KVCacheState,
    KVMode,
    KVReset,
    Plan,
    context_room,
    overflow_suspected,
    plan,
)
from .prompt_cache import PromptCacheKey, PromptCacheStore, model_identity
from .stop import StopFilter
from .tool_calls import MALFORMED_CALL_TOOL, malformed_call_result

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

# Once whitespace runs are collapsed, a token is hardly ever longer than this: a text of n bytes
# needs at least n / MAX_BYTES_PER_TOKEN tokens, a bound that refuses only what can never fit.
MAX_BYTES_PER_TOKEN = 32
_WHITESPACE = re.compile(r"\s+")
MAX_WAITING = 2
"""Requests that wait for a model while it answers another (in every mode); more are told it is busy."""


class WarmOutcome(StrEnum):
    """What :meth:`ChatEngine.warm` did."""

    WARMED = "warmed"
    """The system prompt and tools were set and prefilled (or restored from their prompt-cache file)."""
    ALREADY_WARM = "already_warm"
    BUSY = "busy"
    """A request runs or waits: left alone, so that it is never delayed."""
    NOT_KEPT = "not_kept"
    """The naive strategy keeps nothing between requests."""


class EngineState(StrEnum):
    """What the engine is doing."""

    READY = "ready"
    PREFILLING = "prefilling"
    """Reading the prompt, before the first token."""
    GENERATING = "generating"
    CLOSED = "closed"


@dataclass(slots=True)
class EngineStats:
    """Counters since the engine started."""

    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    malformed_calls: int = 0
    kv_tokens: int = 0
    last: ChatResult | None = None
    last_error: str | None = None
    """Of the last request, None when it succeeded."""
    context_room: int | None = None
    """Tokens (estimated) the last request's system prompt and tools left in the context."""
    constrained: bool | None = None
    """Whether output that must follow a grammar is decoded under it (None: not needed yet)."""
    constrained_note: str = ""
    """Why not: then such output is checked and asked for again instead."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """How the runtime was made ready for a plan."""

    options: RunOptions
    loaded_prompt_cache: bool = False
    """The system prompt was restored from its file (for a ``keep_history=0`` run)."""
    save_prompt_cache: PromptCacheKey | None = None


@dataclass(slots=True)
class _Round:
    """One run of a chat: its plan, what it said and what it cost."""

    step: Plan
    prepared: _Prepared
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    malformed: MalformedToolCall | None = None
    perf: PerfStats = field(default_factory=PerfStats)
    prompt_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] = ()
    constrained: bool = False
    """Decoded under the request's grammar."""
    decoding: bool = False
    """A token came: the runtime read the whole input (what it says may still be held back)."""

    @property
    def system_warm(self) -> bool:
        """The run found the system section prefilled, in the KV cache or from its file."""
        return self.step.system_cached or self.prepared.loaded_prompt_cache

    def reply(self) -> Message:
        """What the model said, as it stays in the conversation (an unreadable call included)."""
        unread = f"<tool_call>\n{self.malformed.raw}\n</tool_call>" if self.malformed else ""
        return Message("assistant", "".join(self.text) + unread, tool_calls=tuple(self.calls))


class ChatEngine:
    """Serialises requests to one :class:`RKLLMRuntime` and keeps its KV cache warm."""

    def __init__(
        self,
        runtime: RKLLMRuntime,
        *,
        max_waiting: int = MAX_WAITING,
        kv_mode: KVMode = KVMode.CONSERVATIVE,
        prompt_caches: PromptCacheStore | None = None,
    ) -> None:
        self.runtime = runtime
        self.max_waiting = max_waiting
        self.kv_mode = kv_mode
        self.prompt_caches = prompt_caches if kv_mode is not KVMode.NAIVE else None
        self.stats = EngineStats()
        self.state = EngineState.READY
        self.kv_cache = KVCacheState()
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._listeners: list[Callable[[], None]] = []
        # One thread owns every blocking runtime call, so long runs never tie up a shared pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rkllm")
        self._model_identity: str | None = None  # read on the engine thread when first needed
        self._prompt_cache_loaded = False
        self._decoder: ConstrainedDecoder | None = None

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

    async def warm(self, request: ChatRequest) -> WarmOutcome:
        """Bring the request's system prompt and tools into the KV cache, ahead of the request itself.

        For a voice command, while the user is still speaking. Its messages are not read. A run
        of an empty user turn prefills the system section (from its prompt-cache file when there
        is one, else saving it) and stops at its first token; the cache keeps the system section.
        """
        if self.closed:
            raise ClosedError("the model was unloaded")
        check_texts(request)
        if self.kv_mode is KVMode.NAIVE:
            return WarmOutcome.NOT_KEPT
        if self._lock.locked():
            return WarmOutcome.BUSY
        async with self._lock:  # free: taken at once
            request = replace(request, messages=[Message("user", "")], max_new_tokens=1)
            step = plan(
                self.kv_cache,
                request,
                kv_mode=KVMode.CONSERVATIVE,
                max_context_len=self.runtime.params.max_context_len,
            )
            if not step.set_system and self.kv_cache.system_in_kv:
                return WarmOutcome.ALREADY_WARM
            self._set_state(EngineState.PREFILLING)
            try:
                await self._warm_run(request, step)
            finally:
                if not self.closed:
                    self._set_state(EngineState.READY)
        return WarmOutcome.WARMED

    async def _warm_run(self, request: ChatRequest, step: Plan) -> None:
        """Prefill the system section and an empty turn, then end the run at its first token."""
        prepared = await self._in_executor(self._prepare, request, step)
        self.kv_cache = KVCacheState(system_key=step.system_key)  # prefilled once the run has succeeded
        if prepared.loaded_prompt_cache:
            self._prompt_cache_loaded = True
        run = AsyncStream(self.runtime, step.input, prepared.options, self._executor)
        finished = False
        try:
            async with run:
                async for _chunk in run:
                    run.end_early()
            finished = True
        except AbortedError:
            finished = True  # an aborted run saves its prompt-cache file whole
            raise
        finally:
            kv_tokens = await self._in_executor(self._after_run, prepared.save_prompt_cache, finished)
        self.kv_cache = replace(self.kv_cache, system_in_kv=True, kv_tokens=kv_tokens or 0)
        self.stats.kv_tokens = kv_tokens or 0

    def _set_state(self, state: EngineState) -> None:
        self.state = state
        for listener in list(self._listeners):
            listener()

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request; iterate the returned stream for its events, :class:`Finished` last."""
        return ChatStream(self._chat(request))

    async def _chat(self, request: ChatRequest) -> AsyncGenerator[ChatEvent]:
        if self.closed:
            raise ClosedError("the model was unloaded")
        _check_request(request, self.runtime.params.max_context_len)
        self._note_context_room(request)
        await self._queue()
        completed = False
        try:
            if self.closed:
                raise ClosedError("the model was unloaded")
            rounds: list[_Round] = []
            messages = list(request.messages)
            decoder = await self._constrained_decoder() if request.constrained else None
            for attempt in range(request.malformed_call_retries + 1):
                step = plan(
                    self.kv_cache,
                    replace(request, messages=messages),
                    kv_mode=self.kv_mode,
                    max_context_len=self.runtime.params.max_context_len,
                )
                self._set_state(EngineState.PREFILLING)
                said = _Round(step, await self._in_executor(self._prepare, request, step))
                try:
                    async for event in self._run(request, said, decoder):
                        yield event
                except RunError as err:
                    # The runtime says an input is too long only by failing while it reads it.
                    overflow = overflow_suspected(step, request, self.runtime.params.max_context_len)
                    if overflow is None or isinstance(err, AbortedError) or said.decoding:
                        raise
                    raise overflow from err
                rounds.append(said)
                # Only a round that called nothing is retried: calls it made are being run.
                malformed = said.malformed if request.tools and not said.calls else None
                if malformed is None or attempt == request.malformed_call_retries:
                    break
                # The model is told what was wrong and answers again, within this request.
                self.stats.malformed_calls += 1
                error = json.dumps(malformed_call_result(malformed.error))
                messages += [said.reply(), Message("tool", error, name=MALFORMED_CALL_TOOL)]
            result = self._commit(rounds)
            completed = True
            yield Finished(result)
        except AbortedError:
            raise  # cancelled by the caller or an unload: not the model's fault
        except RKLLMError as err:
            self.stats.last_error = str(err)
            raise
        finally:
            if not completed:
                self.kv_cache = self.kv_cache.without_conversation()
            if not self.closed:
                self._set_state(EngineState.READY)
            self._lock.release()

    async def _queue(self) -> None:
        """Take the engine's lock, waiting behind the running request; busy when too many wait."""
        if self._lock.locked() and self._waiting >= self.max_waiting:
            raise BusyError(f"the model is busy: {self._waiting} requests are already waiting")
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1

    async def evaluate(self, request: EvaluationRequest) -> EvaluationResult:
        """Answer questions about a state with probabilities (see :mod:`~rkllm_runtime.chat.evaluate`).

        Queued like a chat. The state is the system section: while it stays the same, it stays
        prefilled. Needs the model's vocabulary (:mod:`~rkllm_runtime.chat.vocabulary`); raises
        :class:`RunError` for answers its tokens cannot tell apart.
        """
        if self.closed:
            raise ClosedError("the model was unloaded")
        encode_text(request.state)
        key = system_key(evaluation_system_prompt(request), "")
        await self._queue()
        token = CancelToken()
        try:
            if self.closed:
                raise ClosedError("the model was unloaded")
            kept = self.kv_cache
            set_system = kept.system_key != key or not kept.system_in_kv or kept.in_kv
            self.kv_cache = KVCacheState()  # unknown until the runs have succeeded
            self._set_state(EngineState.PREFILLING)
            try:
                result = await self._in_executor(
                    partial(run_evaluation, set_system=set_system, token=token), self.runtime, request
                )
            except ValueError as err:
                raise RunError(str(err)) from err
            kv_tokens = await self._in_executor(self._after_run, None, True) or 0
            self.kv_cache = KVCacheState(system_key=key, system_in_kv=True, kv_tokens=kv_tokens)
            self.stats.kv_tokens = kv_tokens
            return result
        except asyncio.CancelledError:
            token.set()  # a question not yet asked is not asked
            self.runtime.abort(token)
            raise
        finally:
            if not self.closed:
                self._set_state(EngineState.READY)
            self._lock.release()

    def _note_context_room(self, request: ChatRequest) -> None:
        """Keep the room the system prompt and tools leave; warn when it first falls short of a turn."""
        room, limit = context_room(request, self.runtime.params.max_context_len), TURN_TOKENS
        if room < limit and room != self.stats.context_room:
            _LOGGER.warning(
                "The system prompt and tools take about %d of the %d tokens of the context, leaving "
                "%d where a turn needs about %d: raise the context length, or shorten the prompt and tools",
                self.runtime.params.max_context_len - room,
                self.runtime.params.max_context_len,
                room,
                limit,
            )
        self.stats.context_room = room

    async def why_not_decoded(self) -> str | None:
        """Why replies cannot be decoded from logits here, or None when they can.

        Checked once per load (:attr:`EngineStats.constrained`), queued like a request.
        """
        if self.stats.constrained is None and not self.closed:
            await self._queue()
            try:
                await self._constrained_decoder()
            finally:
                self._lock.release()
        return None if self.stats.constrained else self.stats.constrained_note

    async def _constrained_decoder(self) -> ConstrainedDecoder | None:
        """The decoder, checked once per load; without one, says why once (engine state: on the loop)."""
        if self.stats.constrained is None:
            prepared = await self._in_executor(prepare_decoder, self.runtime)
            self.kv_cache = self.kv_cache.without_conversation()  # the check cleared it
            if isinstance(prepared, str):
                self.stats.constrained, self.stats.constrained_note = False, prepared
                _LOGGER.warning(
                    "%s: output that must follow a grammar (JSON, a schema, a required tool call) is "
                    "checked and asked for again instead of decoded under the grammar: %s",
                    self.runtime.model_path.name,
                    prepared,
                )
            else:
                self.stats.constrained, self._decoder = True, prepared
        return self._decoder

    def _decoding(self, decoder: ConstrainedDecoder, request: ChatRequest) -> Runner:
        """A drop-in for ``RKLLMRuntime.run`` that decodes the request's reply under its grammar.

        The decoder appends to the cache: a ``keep_history=0`` plan is brought back to the system
        section afterwards, as the runtime itself does after such a run.
        """
        grammar = request_grammar(request, decoder.vocabulary)

        def run(
            input_: Input, options: RunOptions | None, on_text: TextCallback, token: CancelToken
        ) -> RunResult:
            options = options or RunOptions()
            try:
                if grammar is not None:
                    decoder.matcher(grammar)
            except GrammarError as err:
                _LOGGER.warning(
                    "The grammar library cannot compile this request's schema (%s): checking instead", err
                )
                return self.runtime.run(input_, options, on_text, token)
            try:
                return decoder.run(
                    input_,
                    grammar,
                    sampling=options.sampling,
                    max_new_tokens=options.max_new_tokens,
                    top_logprobs=request.top_logprobs,
                    on_text=on_text,
                    token=token,
                )
            finally:
                if not options.keep_history and not self.closed:
                    self.runtime.clear_kv_cache(keep_system_prompt=True)

        return run

    async def _run(
        self, request: ChatRequest, said: _Round, decoder: ConstrainedDecoder | None = None
    ) -> AsyncGenerator[ChatEvent]:
        """One run of the runtime (or the decoder): stream and parse, then record what the cache holds."""
        step, prepared = said.step, said.prepared
        if prepared.loaded_prompt_cache:
            self._prompt_cache_loaded = True
        before = KVCacheState(system_key=step.system_key) if step.set_system else self.kv_cache
        self.kv_cache = before.without_conversation()  # until the run has succeeded
        parser = StreamParser([tool.name for tool in request.tools])
        stop = StopFilter(request.stop)
        runner = self._decoding(decoder, request) if decoder is not None else None
        said.constrained = decoder is not None and request_grammar(request, decoder.vocabulary) is not None
        run = AsyncStream(self.runtime, step.input, prepared.options, self._executor, runner)
        finished = False  # the run ended, completed or aborted: its prompt-cache file is whole
        try:
            async with run:  # leaving early (a stop string) aborts the run
                async for chunk in run:
                    said.decoding = True
                    if self.state is EngineState.PREFILLING:
                        self._set_state(EngineState.GENERATING)
                        # Prefilled: the system section stays in the cache even if the run is cancelled.
                        self.kv_cache = replace(self.kv_cache, system_in_kv=True)
                    for event in stop.events(parser.feed(chunk)):
                        if isinstance(event, ToolCallDelta) and not prepared.options.keep_history:
                            run.end_early()  # the call is whole: its closing tokens are not decoded
                        yield _noted(event, said)
                    if stop.stopped:
                        break
            for event in stop.events([*parser.finish(), TextDelta(stop.flush())]):
                yield _noted(event, said)
            finished = True
        except (AbortedError, asyncio.CancelledError):
            finished = True  # the runtime ends an aborted run normally, file included
            raise
        finally:
            # The decoder's logits runs save no prompt-cache file.
            saved = finished and decoder is None
            kv_tokens = await self._in_executor(self._after_run, prepared.save_prompt_cache, saved)
        if run.result is None:  # stopped at a stop string: the runtime reports no figures
            said.perf = PerfStats(generate_tokens=len(said.text))
            said.prompt_tokens = max((kv_tokens or 0) - len(said.text), 0)
            self.stats.kv_tokens = kv_tokens or 0
            return
        said.perf = perf = run.result.perf
        said.logprobs = run.result.logprobs
        if prepared.options.keep_history:
            held = before.kv_tokens if step.reset is KVReset.NONE and before.in_kv else 0
            context = (
                kv_tokens if kv_tokens is not None else held + perf.prefill_tokens + perf.generate_tokens
            )
            said.prompt_tokens = max(context - perf.generate_tokens, perf.prefill_tokens)
        else:
            # The runtime went back to the system section, which is all it keeps.
            said.prompt_tokens = perf.prefill_tokens + ((kv_tokens or 0) if said.system_warm else 0)
            context = said.prompt_tokens + perf.generate_tokens
        self.kv_cache = replace(
            step.conversation,
            fingerprint=fingerprint([said.reply()], step.conversation.fingerprint),
            in_kv=prepared.options.keep_history,
            kv_tokens=context,
        )
        self.stats.kv_tokens = kv_tokens if kv_tokens is not None else context

    async def _in_executor(self, function: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _prepare(self, request: ChatRequest, step: Plan) -> _Prepared:
        """Bring the runtime's cache to the plan's starting point (runs on the engine thread)."""
        if step.set_system:
            self.runtime.set_function_tools(request.system_prompt, step.tools or "[]")
        if step.reset is not KVReset.NONE:
            self.runtime.clear_kv_cache(keep_system_prompt=step.reset is KVReset.KEEP_SYSTEM)
        if step.use_prompt_cache and self.prompt_caches is not None:
            return self._restore_prompt_cache(self.prompt_caches, step)
        return _Prepared(step.options)

    def _restore_prompt_cache(self, store: PromptCacheStore, step: Plan) -> _Prepared:
        """Load the system prompt's verified prompt-cache file, or let the run save one (engine thread)."""
        try:
            if self._model_identity is None:
                self._model_identity = model_identity(self.runtime.model_path)
        except OSError as err:
            _LOGGER.warning(
                "Cannot read %s (%s); answering without prompt-cache files", self.runtime.model_path, err
            )
            return _Prepared(step.options)
        key = PromptCacheKey(self.runtime.library.release, self._model_identity, step.system_key)
        if (path := store.lookup(key)) is not None:
            try:
                if self._prompt_cache_loaded:  # the runtime holds one file at a time
                    self.runtime.release_prompt_cache()
                self.runtime.load_prompt_cache(path)
            except RKLLMError:
                _LOGGER.warning("The runtime refused prompt cache %s; it will be rebuilt", path.name)
                store.discard(path)
            else:
                # Restored for a keep_history=0 run only: its input is matched against the
                # cached prefix. In a kept conversation the runtime would not match it.
                return _Prepared(replace(step.options, keep_history=False), loaded_prompt_cache=True)
        staging = store.staging_path(key)
        if staging is None:
            return _Prepared(step.options)
        return _Prepared(replace(step.options, save_prompt_cache=str(staging)), save_prompt_cache=key)

    def _after_run(self, saving: PromptCacheKey | None, finished: bool) -> int | None:
        """Keep the prompt-cache file a finished run saved, drop a failed run's (engine thread).

        Returns the KV cache's size when the library tells it.
        """
        if saving is not None and self.prompt_caches is not None:
            if finished:
                self.prompt_caches.saved(saving)
            else:
                self.prompt_caches.abandon(saving)
        if self.runtime.library.has("rkllm_get_kv_cache_size"):
            return self.runtime.kv_cache_size()
        return None

    def _commit(self, rounds: list[_Round]) -> ChatResult:
        first, prompt_tokens = rounds[0].step, rounds[0].prompt_tokens
        visible = Message(
            "assistant",
            "".join(text for said in rounds for text in said.text),
            tool_calls=tuple(call for said in rounds for call in said.calls),
        )
        perfs = [said.perf for said in rounds]
        hit = first.hit and (not first.set_system or rounds[0].prepared.loaded_prompt_cache)
        result = ChatResult(
            text=visible.content,
            tool_calls=visible.tool_calls,
            perf=PerfStats(
                prefill_time_ms=sum(p.prefill_time_ms for p in perfs),
                prefill_tokens=sum(p.prefill_tokens for p in perfs),
                generate_time_ms=sum(p.generate_time_ms for p in perfs),
                generate_tokens=sum(p.generate_tokens for p in perfs),
                memory_usage_mb=max(p.memory_usage_mb for p in perfs),
            ),
            prompt_tokens=prompt_tokens,
            cached_tokens=prompt_tokens - rounds[0].perf.prefill_tokens,
            cache_hit=hit,
            kv_tokens=self.stats.kv_tokens,
            runs=len(rounds),
            logprobs=tuple(item for said in rounds for item in said.logprobs),
            constrained=any(said.constrained for said in rounds),
        )
        # The caller sends the conversation back as it saw it: without the rounds that retried a call.
        self.kv_cache = replace(
            self.kv_cache,
            cached_messages=first.conversation.cached_messages,
            fingerprint=fingerprint([visible], first.conversation.fingerprint),
        )
        self.stats.requests += 1
        if hit:
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


def check_texts(request: ChatRequest) -> None:
    """Refuse text a C string cannot carry: raises :class:`~rkllm_runtime.errors.InvalidTextError`."""
    for text in (request.system_prompt, *(message.content for message in request.messages)):
        encode_text(text)


def _check_request(request: ChatRequest, limit: int) -> None:
    """Refuse, before queueing, text C cannot carry and a current turn that can certainly not fit."""
    check_texts(request)
    split = split_new(request.messages)
    texts = [
        request.system_prompt,
        render_tools(request.tools),
        *map(history_text, split.history[current_turn_start(split) :]),
        *(m.content for m in split.new),
    ]
    tokens = sum(len(encode_text(_WHITESPACE.sub(" ", text))) for text in texts) // MAX_BYTES_PER_TOKEN
    if tokens > limit:
        raise ContextOverflowError(
            f"the input needs at least {tokens} tokens but the context holds {limit}",
            tokens=tokens,
            limit=limit,
        )


def _noted(event: ChatEvent, said: _Round) -> ChatEvent:
    """Pass an event on, keeping what the round said."""
    match event:
        case TextDelta(text):
            said.text.append(text)
        case ToolCallDelta(call):
            said.calls.append(call)
        case MalformedToolCall():
            said.malformed = event
    return event


class ChatStream:
    """The events of one request; ``result`` is set once :class:`Finished` has passed.

    Use ``async with engine.chat(request) as stream: async for event in stream``.
    Raises :class:`BusyError` when the queue is full, :class:`RunError` on failure.
    """

    def __init__(self, events: AsyncGenerator[ChatEvent]) -> None:
        self.result: ChatResult | None = None
        self._events = events

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatEvent:
        event = await self._events.__anext__()
        if isinstance(event, Finished):
            self.result = event.result
        return event

    async def aclose(self) -> None:
        """Stop early: the run is aborted and the engine freed."""
        await self._events.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
