"""Decoding under a grammar, through the runtime's logits mode.

The prompt is prefilled once in logits mode (``RKLLM_INFER_GET_LOGITS``); then, token by token,
the grammar library (llguidance) masks every token the grammar forbids, one is chosen with the
request's sampling, and it is fed back as a token input (``RKLLM_INPUT_TOKEN``) with
``keep_history``, so the KV cache grows as in ordinary decoding. Tokens the grammar forces are fed
in one run. The reply ends with the grammar, its end-of-turn token in the cache as after a
generating run. Whether the runtime keeps a logits run's input at all is not documented:
:func:`~rkllm_runtime.logits_cache.logits_keep_input` checks it.
"""

from __future__ import annotations

import codecs
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from rkllm_runtime.aio import RunCall
from rkllm_runtime.errors import AbortedError, RKLLMError, RunError
from rkllm_runtime.logits_cache import logits_keep_input
from rkllm_runtime.runtime import CancelToken, RKLLMRuntime, TextCallback
from rkllm_runtime.types import (
    Input,
    Logits,
    PerfStats,
    RunOptions,
    RunResult,
    Sampling,
    TokenLogprob,
    Tokens,
    TopLogprob,
)

from .messages import ChatRequest, ToolSpec
from .vocabulary import TOKENIZER_FILE, Vocabulary, VocabularyError, load_vocabulary, tokenizer_file

_LOGGER = logging.getLogger(__name__)

TOP_LOGPROBS_MAX = 20
"""Alternatives a position reports at most (OpenAI's limit)."""
JSON_STYLE = {"whitespace_flexible": False, "key_separator": ": ", "item_separator": ", "}
"""JSON as models write it: one space after ``:`` and ``,``, no other whitespace."""
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class GrammarError(ValueError):
    """The grammar library refused a grammar (a schema it cannot compile)."""


def json_grammar(schema: Mapping[str, Any]) -> str:
    """A grammar for one JSON value following ``schema``."""
    return _lark_json("start", schema)


def tool_call_grammar(tools: Sequence[ToolSpec], names: Sequence[str], vocabulary: Vocabulary) -> str:
    """A grammar for one call of one of ``names``, its arguments following the tool's schema."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
        if tool.name in names
    ]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    opening, closing = (_literal(vocabulary, text) for text in (CALL_OPEN, CALL_CLOSE))
    return f'start: {opening} "\\n" call "\\n" {closing}\n' + _lark_json("call", schema)


def _lark_json(rule: str, schema: Mapping[str, Any]) -> str:
    return f"{rule}: %json {json.dumps({**schema, 'x-guidance': JSON_STYLE})}\n"


def _literal(vocabulary: Vocabulary, text: str) -> str:
    """``text`` in a grammar: its special token when the vocabulary has one, else the string."""
    ids = vocabulary.tokenizer.tokenize_str(text)
    if len(ids) == 1 and vocabulary.tokenizer.is_special_token(ids[0]):
        return f"<[{ids[0]}]>"
    return json.dumps(text)


def choose(values: npt.NDArray[np.float32], sampling: Sampling | None, rng: np.random.Generator) -> int:
    """A token from masked logits (forbidden ones at -inf): greedy without a temperature, else sampled."""
    temperature = sampling.temperature if sampling is not None else None
    if not temperature or temperature <= 0:
        return int(np.argmax(values))
    allowed = np.flatnonzero(np.isfinite(values))
    scores = values[allowed].astype(np.float64) / temperature
    if sampling is not None and sampling.top_k and 0 < sampling.top_k < len(allowed):
        keep = np.argpartition(scores, -sampling.top_k)[-sampling.top_k :]
        allowed, scores = allowed[keep], scores[keep]
    order = np.argsort(scores)[::-1]
    allowed, scores = allowed[order], scores[order]
    probs = np.exp(scores - scores[0])
    probs /= probs.sum()
    if sampling is not None and sampling.top_p is not None and 0 < sampling.top_p < 1:
        cut = int(np.searchsorted(np.cumsum(probs), sampling.top_p)) + 1
        allowed, probs = allowed[:cut], probs[:cut] / probs[:cut].sum()
    return int(rng.choice(allowed, p=probs))


@dataclass(slots=True)
class _Reply:
    """What a decoding has produced so far."""

    vocabulary: Vocabulary
    on_text: TextCallback | None
    chunks: list[str]
    decoder: codecs.IncrementalDecoder
    logprobs: list[TokenLogprob]
    generated: int = 0

    def say(self, token_id: int) -> None:
        self.generated += 1
        if token_id == self.vocabulary.end_of_turn:
            return
        text = self.decoder.decode(self.vocabulary.piece(token_id))
        if text:
            self.chunks.append(text)
            if self.on_text is not None:
                self.on_text(text)

    def note(self, logits: Logits, token_id: int, top: int) -> None:
        raw = logits.values.astype(np.float64)
        logz = float(np.log(np.exp(raw - raw.max()).sum()) + raw.max())
        best = np.argpartition(raw, -top)[-top:] if top else np.array([], dtype=np.int64)
        best = best[np.argsort(raw[best])[::-1]]
        self.logprobs.append(
            TokenLogprob(
                self._text(token_id),
                float(raw[token_id]) - logz,
                tuple(TopLogprob(self._text(int(i)), float(raw[i]) - logz) for i in best),
            )
        )

    def _text(self, token_id: int) -> str:
        return self.vocabulary.piece(token_id).decode(errors="replace")


def _allowed(matcher: Any, width: int | None = None) -> npt.NDArray[np.bool_]:
    """Which of the first ``width`` tokens (None: all) the grammar allows next."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:width].astype(bool)


def _only_end(matcher: Any, end: int) -> bool:
    """Whether the grammar allows nothing but the end of the turn now."""
    if matcher.is_stopped():
        return True
    if not matcher.is_accepting():
        return False
    allowed = _allowed(matcher)
    return bool(allowed[end]) and int(np.count_nonzero(allowed)) == 1


class ConstrainedDecoder:
    """Decodes on one runtime with its vocabulary: :meth:`run` is a drop-in for ``RKLLMRuntime.run``."""

    def __init__(self, runtime: RKLLMRuntime, vocabulary: Vocabulary, *, seed: int | None = None) -> None:
        self.runtime = runtime
        self.vocabulary = vocabulary
        self._rng = np.random.default_rng(seed)

    def matcher(self, grammar: str) -> Any:
        """An ``llguidance.LLMatcher`` for ``grammar``; raises :class:`GrammarError`."""
        from llguidance import LLMatcher  # noqa: PLC0415 - a native module, loaded when first needed

        matcher = LLMatcher(self.vocabulary.tokenizer, grammar)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        return matcher

    def run(
        self,
        input_: Input,
        grammar: str | None,
        *,
        sampling: Sampling | None = None,
        max_new_tokens: int = 0,
        top_logprobs: int | None = None,
        on_text: TextCallback | None = None,
        token: CancelToken | None = None,
    ) -> RunResult:
        """Prefill ``input_`` and decode to the end of ``grammar`` (None: free), appending to the cache.

        ``top_logprobs``: report each chosen token's log-probability with that many alternatives
        (None: none). Blocks; ``on_text`` runs on this thread. Raises :class:`AbortedError` when
        ``token`` is set (unless ended early: then what was said so far is the reply).
        """
        token = token or CancelToken()
        matcher = self.matcher(grammar) if grammar is not None else None
        top = min(top_logprobs or 0, TOP_LOGPROBS_MAX)
        reply = _Reply(self.vocabulary, on_text, [], codecs.getincrementaldecoder("utf-8")("replace"), [])
        logits = self.runtime.logits(input_, keep_history=True, token=token)
        prompt, later = logits.perf, [PerfStats()]
        end = self.vocabulary.end_of_turn
        while True:
            values = logits.values.copy()
            if matcher is not None:
                values[~_allowed(matcher, values.shape[0])] = -np.inf
            chosen = choose(values, sampling, self._rng)
            if top_logprobs is not None and chosen != end:  # the end of the turn is no token of the reply
                reply.note(logits, chosen, top)
            feed = [chosen]
            if matcher is not None and chosen != end:
                matcher.consume_token(chosen)
                if top_logprobs is None:
                    forced = matcher.compute_ff_tokens()  # fed in the same run
                    matcher.consume_tokens(forced)
                    feed += forced
                if _only_end(matcher, end):
                    feed.append(end)  # the grammar is complete: the turn ends
            for fed in feed:
                reply.say(fed)
            done = end in feed or (max_new_tokens > 0 and reply.generated >= max_new_tokens)
            if token.is_set() and not token.ended_early:
                raise AbortedError("the run was aborted")
            if token.ended_early:
                break
            try:
                logits = self.runtime.logits(Tokens(feed), keep_history=True, token=token)
            except RunError:
                if token.ended_early:  # ended during this run, which then has no logits
                    break
                raise
            later.append(logits.perf)
            if done:
                break
        tail = reply.decoder.decode(b"", final=True)
        if tail:
            reply.chunks.append(tail)
            if on_text is not None:
                on_text(tail)
        perf = PerfStats(
            prefill_time_ms=prompt.prefill_time_ms,
            prefill_tokens=prompt.prefill_tokens,
            generate_time_ms=sum(p.prefill_time_ms + p.generate_time_ms for p in later),
            generate_tokens=reply.generated,
            memory_usage_mb=max(p.memory_usage_mb for p in [prompt, *later]),
        )
        return RunResult("".join(reply.chunks), perf, tuple(reply.logprobs))


def request_grammar(request: ChatRequest, vocabulary: Vocabulary) -> str | None:
    """The grammar a request's reply must follow (None: free, for log-probabilities alone).

    With a schema and tools, a call of any tool is allowed instead of the JSON (it is run first).
    """
    if request.call_tools:
        return tool_call_grammar(request.tools, request.call_tools, vocabulary)
    if request.output_schema is None:
        return None
    if not request.tools:
        return json_grammar(request.output_schema)
    calls = tool_call_grammar(request.tools, [tool.name for tool in request.tools], vocabulary)
    return (
        "start: answer | call_turn\n"
        + _lark_json("answer", request.output_schema)
        + calls.replace("start:", "call_turn:", 1)
    )


def prepare_decoder(runtime: RKLLMRuntime) -> ConstrainedDecoder | str:
    """A decoder for ``runtime``, or why it cannot have one (checks run once per load: runs twice).

    The checks: the model's vocabulary is beside it, the runtime can report its KV cache size,
    a logits run with ``keep_history`` keeps its input, and the vocabulary fits the logits.
    The conversation in the KV cache is cleared (the system section stays).
    """
    if tokenizer_file(runtime.model_path) is None:
        return f"no {TOKENIZER_FILE} beside {runtime.model_path.name} (the base model's vocabulary)"
    if not runtime.library.reports_kv_cache_size:
        return (
            "this runtime cannot report its KV cache size (no rkllm_get_kv_cache_size), so whether a "
            "logits run keeps its input cannot be checked"
        )
    try:
        kept, width = logits_keep_input(runtime)
    except RKLLMError as err:
        return f"the runtime's logits mode failed: {err}"
    if not kept:
        return "the runtime does not keep a logits run's input in its KV cache with keep_history"
    try:
        return ConstrainedDecoder(runtime, load_vocabulary(runtime.model_path, width))
    except VocabularyError as err:
        return str(err)


def decoding_run(
    runtime: RKLLMRuntime,
    decoder: ConstrainedDecoder,
    top_logprobs: int | None,
    grammar: str | None,
    closed: Callable[[], bool],
) -> RunCall:
    """A drop-in for ``RKLLMRuntime.run`` that decodes a reply under ``grammar`` (None: free).

    The decoder appends to the cache: a ``keep_history=0`` plan is brought back to the system
    section afterwards, as the runtime itself does after such a run.
    """

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
            return runtime.run(input_, options, on_text, token)
        try:
            return decoder.run(
                input_,
                grammar,
                sampling=options.sampling,
                max_new_tokens=options.max_new_tokens,
                top_logprobs=top_logprobs,
                on_text=on_text,
                token=token,
            )
        finally:
            if not options.keep_history and not closed():
                runtime.clear_kv_cache(keep_system_prompt=True)

    return run
