"""The chat engine: one model, one request at a time, and a KV cache kept warm.

Requests queue in a bounded FIFO. For each one, :func:`~rkllm_runtime.chat.plan.plan`
works out what the runtime's KV cache already holds (the system prompt with its
tools, then the turns of one conversation) and what the KV strategy must send.
The system-prompt prefix is also kept as a prompt-cache file (see
:mod:`rkllm_runtime.chat.prepare`) so the first request after a restart does
not prefill it again. A request's images are read by the model's vision encoder
(:mod:`rkllm_runtime.chat.images`) and answered in one multimodal run. Engine state is only
changed on the event loop; the steps on the engine thread return what they did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from rkllm_runtime.aio import AsyncStream
from rkllm_runtime.errors import AbortedError, BusyError, ClosedError, RKLLMError, RunError
from rkllm_runtime.runtime import CancelToken, RKLLMRuntime, encode_text
from rkllm_runtime.types import PerfStats

from .checks import check_request, check_texts, note_context_room
from .constrained import ConstrainedDecoder, decoding_run, prepare_decoder, request_grammar
from .evaluate import EvaluationRequest, EvaluationResult, run_evaluation
from .evaluate import system_prompt as evaluation_system_prompt
from .events import ChatEvent, ChatResult, Finished, ToolCallDelta
from .images import EncodedImages, ImageReader
from .messages import ChatRequest, Message, fingerprint, new_images, split_new, system_key
from .plan import KVCacheState, KVMode, RunEnd, is_hit, overflow_suspected, plan, ready, settle
from .prepare import Preparer
from .prompt_cache import PromptCacheStore
from .round import Round
from .status import EngineState, EngineStatus, Observed
from .stream import ChatStream
from .warm import WarmOutcome, warm_plan, warm_run

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

MAX_WAITING = 2
"""Requests that wait for a model while it answers another (in every mode); more are told it is busy."""


class ChatEngine(Observed):
    """Serialises requests to one :class:`RKLLMRuntime` and keeps its KV cache warm."""

    def __init__(
        self,
        runtime: RKLLMRuntime,
        *,
        max_waiting: int = MAX_WAITING,
        kv_mode: KVMode = KVMode.CONSERVATIVE,
        prompt_caches: PromptCacheStore | None = None,
        encoder_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.images = ImageReader(runtime, encoder_path)
        self.max_waiting = max_waiting
        self.kv_mode = kv_mode
        self.preparer = Preparer(runtime, prompt_caches if kv_mode is not KVMode.NAIVE else None)
        self.kv_cache = KVCacheState()
        self._lock = asyncio.Lock()
        self._waiting = 0
        # One thread owns every blocking runtime call, so long runs never tie up a shared pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rkllm")
        self._decoder: ConstrainedDecoder | None = None

    @property
    def waiting(self) -> int:
        """Requests queued behind the running one."""
        return self._waiting

    @property
    def status(self) -> EngineStatus:
        """The engine's description of itself."""
        return EngineStatus(
            model_file=self.runtime.model_path.name,
            release=self.runtime.library.release,
            state=self.state,
            waiting=self.waiting,
            stats=self.stats,
            kv_mode=self.kv_mode,
            params=self.runtime.params,
            reads_images=self.images.encoder_path is not None,
        )

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
            step = warm_plan(self.kv_cache, request, self.runtime.params.max_context_len)
            if step is None:
                return WarmOutcome.ALREADY_WARM
            self._set_state(EngineState.PREFILLING)
            try:
                prepared = await self._in_executor(self.preparer.prepare, request, step)
                self.kv_cache = KVCacheState(
                    system_key=step.system_key
                )  # prefilled once the run has succeeded
                kv_tokens = await warm_run(self._executor, self.preparer, step, prepared)
                self.kv_cache = replace(self.kv_cache, system_in_kv=True, kv_tokens=kv_tokens)
                self.stats.kv_tokens = kv_tokens
            finally:
                if not self.closed:
                    self._set_state(EngineState.READY)
        return WarmOutcome.WARMED

    def chat(self, request: ChatRequest) -> ChatStream:
        """Answer a request; iterate the returned stream for its events, :class:`Finished` last."""
        return ChatStream(self._chat(request))

    async def _chat(self, request: ChatRequest) -> AsyncGenerator[ChatEvent]:
        if self.closed:
            raise ClosedError("the model was unloaded")
        check_request(request, self.runtime.params.max_context_len)
        images = new_images(split_new(request.messages).new)
        self.images.check(images)
        note_context_room(self.stats, request, self.runtime.params.max_context_len)
        await self._queue()
        completed = False
        try:
            if self.closed:
                raise ClosedError("the model was unloaded")
            rounds: list[Round] = []
            messages = list(request.messages)
            encoded = None
            if images:
                self._set_state(EngineState.PREFILLING)
                encoded = await self._in_executor(self.images.read, images)
                check_request(request, self.runtime.params.max_context_len, encoded.tokens)
            decoder = await self._constrained_decoder() if request.constrained else None
            # Retried here, under the lock: an unreadable call is fixed within the request. A readable
            # reply that does not fit the request is asked again as a new request (.retry.ask_fit).
            for attempt in range(request.malformed_call_retries + 1):
                step = plan(
                    self.kv_cache,
                    replace(request, messages=messages),
                    kv_mode=self.kv_mode,
                    max_context_len=self.runtime.params.max_context_len,
                    image_tokens=encoded.tokens if encoded is not None and not attempt else 0,
                )
                if encoded is not None and not attempt:  # a retry answers a tool result, in text
                    step = replace(step, input=encoded.input(step.input))
                self._set_state(EngineState.PREFILLING)
                said = Round.of(request, step, await self._in_executor(self.preparer.prepare, request, step))
                self.kv_cache = ready(self.kv_cache, step)
                try:
                    async for event in self._run(said, request, decoder):
                        yield event
                except RunError as err:
                    # The runtime says an input is too long only by failing while it reads it.
                    overflow = overflow_suspected(step, request, self.runtime.params.max_context_len)
                    if overflow is None or isinstance(err, AbortedError) or said.decoding:
                        raise
                    raise overflow from err
                rounds.append(said)
                malformed = said.to_ask_again(request)
                if malformed is None or attempt == request.malformed_call_retries:
                    break
                # The model is told what was wrong and answers again, within this request.
                self.stats.malformed_calls += 1
                messages += said.correction(malformed)
            result = self._commit(rounds, encoded)
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
            kv_tokens = await self._in_executor(self.preparer.after_run, None, True) or 0
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

    async def _run(
        self, said: Round, request: ChatRequest, decoder: ConstrainedDecoder | None = None
    ) -> AsyncGenerator[ChatEvent]:
        """One run of the runtime (or the decoder): stream and parse, then record what the cache holds."""
        step, prepared = said.step, said.prepared
        runner = None
        if decoder is not None:
            grammar = request_grammar(request, decoder.vocabulary)
            runner = decoding_run(self.runtime, decoder, request.top_logprobs, grammar, lambda: self.closed)
            said.constrained = grammar is not None
        run = AsyncStream(self.runtime, step.input, prepared.options, self._executor, runner)
        finished = False  # the run ended, completed or aborted: its prompt-cache file is whole
        completed = False  # every event was passed on (the runtime has no figures after a stop string)
        try:
            async with run:  # leaving early (a stop string) aborts the run
                async for chunk in run:
                    said.decoding = True
                    if self.state is EngineState.PREFILLING:
                        self._set_state(EngineState.GENERATING)
                    for event in said.read(chunk):
                        if isinstance(event, ToolCallDelta) and not prepared.options.keep_history:
                            run.end_early()  # the call is whole: its closing tokens are not decoded
                        yield event
                    if said.stop.stopped:
                        break
            for event in said.finish():
                yield event
            finished = completed = True
        except (AbortedError, asyncio.CancelledError):
            finished = True  # the runtime ends an aborted run normally, file included
            raise
        finally:
            # The decoder's logits runs save no prompt-cache file.
            saved = finished and decoder is None
            kv_tokens = await self._in_executor(self.preparer.after_run, prepared.save_prompt_cache, saved)
            end = RunEnd(
                keep_history=prepared.options.keep_history,
                system_warm=said.system_warm,
                prefilled=said.decoding,
                reply=said.reply(),
                chunks=len(said.text),
                perf=run.result.perf if completed and run.result is not None else None,
                kv_tokens=kv_tokens,
            )
            settled = settle(self.kv_cache, step, end)
            self.kv_cache = settled.cache
        said.perf, said.prompt_tokens = settled.perf, settled.prompt_tokens
        said.logprobs = run.result.logprobs if run.result is not None else ()
        self.stats.kv_tokens = settled.kv_tokens

    async def _in_executor(self, function: Callable[..., _T], *args: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _commit(self, rounds: list[Round], encoded: EncodedImages | None = None) -> ChatResult:
        first, prompt_tokens = rounds[0].step, rounds[0].prompt_tokens
        visible = Message(
            "assistant",
            "".join(text for said in rounds for text in said.text),
            tool_calls=tuple(call for said in rounds for call in said.calls),
        )
        perfs = [said.perf for said in rounds]
        hit = is_hit(first, loaded_prompt_cache=rounds[0].prepared.loaded_prompt_cache)
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
            image_encode_ms=encoded.encode_ms if encoded is not None else 0.0,
            encoder_memory_mb=self.images.memory_mb,
            logprobs=tuple(item for said in rounds for item in said.logprobs),
            constrained=any(said.constrained for said in rounds),
        )
        # The caller sends the conversation back as it saw it: without the rounds that retried a call.
        self.kv_cache = replace(
            self.kv_cache,
            cached_messages=first.conversation.cached_messages,
            fingerprint=fingerprint([visible], first.conversation.fingerprint),
        )
        self.stats.count(result)
        return result

    async def aclose(self) -> None:
        """Abort what runs, wait for it, destroy the handle and stop the engine thread."""
        if self.closed:
            return
        self._set_state(EngineState.CLOSED)
        self.runtime.abort()
        async with self._lock:
            await self._in_executor(self._close_handles)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    def _close_handles(self) -> None:
        """Destroy the model's handle and the vision encoder's context (engine thread)."""
        self.runtime.close()
        self.images.close()
