"""KV planning: from what the KV cache holds and a request, what to send.

:func:`plan` is pure: the engine applies its result on the runtime thread. It uses
only what the vendor documents for every strategy (:class:`KVMode`):

- unchanged system prompt and tools: never set again; a changed one is set with
  ``rkllm_set_function_tools`` followed by an explicit full ``rkllm_clear_kv_cache``
  (whether setting it clears the cache is not documented);
- the KV cache is never cleared by range (the runtime refuses it outside a paused
  ``keep_history=0`` run);
- a prompt-cache file keeps the system prompt across restarts; the engine restores it
  only for a ``keep_history=0`` run, where the runtime detects the cached prefix of the
  run's input, so context is never duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from rkllm_runtime.errors import ContextOverflowError
from rkllm_runtime.types import PerfStats, Prompt, RunOptions

from .messages import (
    ChatRequest,
    Message,
    current_turn_start,
    drop_oldest_half,
    estimated_tokens,
    fingerprint,
    fit_history,
    history_text,
    rebuild_input,
    render_tools,
    split_new,
    system_key,
    trim_turns,
)

# Past this share of max_context_len, the conversation is rebuilt with fewer turns.
CONTEXT_BUDGET = 0.75
TURN_TOKENS = 512
"""Room a turn needs beside the system prompt and tools: a command's words, call and result take
about 100 Qwen2.5 tokens (bench/voice_session.py), a question's state result a few hundred, then
the reply."""


class KVMode(StrEnum):
    """How the engine uses the KV cache."""

    CONSERVATIVE = "conservative"
    """``keep_history=0`` for every run, as the vendor's own examples: the system prompt stays
    cached, the conversation is re-sent each turn (its closing of turns is not relied on)."""
    REUSE = "reuse"
    """``keep_history=1`` within a conversation: a follow-up or tool result sends only itself.
    Relies on how the runtime closes a turn between runs, which the vendor does not document."""
    NAIVE = "naive"
    """Re-prefill everything every time (for comparison)."""


class KVReset(StrEnum):
    """How the KV cache is cleared before a run."""

    NONE = "none"
    """Keep it: the run continues what it holds."""
    KEEP_SYSTEM = "keep_system"
    """``clear_kv_cache(keep_system_prompt=1)``: drop the conversation."""
    ALL = "all"
    """``clear_kv_cache(keep_system_prompt=0)``, after setting a new system prompt."""


@dataclass(frozen=True, slots=True)
class KVCacheState:
    """What the runtime's KV cache holds, as far as the engine knows."""

    system_key: str | None = None
    """Identity of the system prompt and tools set on the handle."""
    system_in_kv: bool = False
    """The system section is prefilled (after setting it, the next run does it)."""
    conversation_id: str | None = None
    """The conversation of the last run (None for callers that do not name theirs)."""
    cached_messages: int = 0
    """Messages of that conversation accounted for, its replies included (in the KV cache
    itself only when ``in_kv``)."""
    fingerprint: str = ""
    """:func:`~rkllm_runtime.chat.messages.fingerprint` of those messages."""
    history_start: int = 0
    """Leading messages of it no longer sent (context budget)."""
    in_kv: bool = False
    """The KV cache holds that conversation's turns (``keep_history`` runs)."""
    kv_tokens: int = 0
    """Tokens of the last run's context: prompt and reply."""

    def without_conversation(self) -> KVCacheState:
        """The cache no longer holds a known conversation (the system prompt stays)."""
        return KVCacheState(self.system_key, self.system_in_kv, kv_tokens=self.kv_tokens)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one run sends, and how the runtime gets ready for it."""

    input: Prompt
    options: RunOptions
    system_key: str
    tools: str
    """The rendered tools, set with the system prompt."""
    set_system: bool
    """Call ``set_function_tools`` first."""
    reset: KVReset
    sends_only_new: bool
    """Only what the strategy must send is sent (the conservative mode re-sends the history by
    design; the naive one sends everything): a hit once the system prompt is warm (:func:`is_hit`)."""
    held_tokens: int
    """Tokens of a kept conversation the run continues in the KV cache (0: it starts afresh)."""
    system_cached: bool
    """The run starts with the system section in the KV cache (before any prompt-cache file)."""
    use_prompt_cache: bool
    """Restore the system prompt's prompt-cache file, or save one with this run."""
    conversation: KVCacheState
    """What the cache state is once the reply has joined (without the reply's fingerprint,
    the token count, and ``in_kv`` when a prompt-cache file turns ``keep_history`` off)."""


def plan(cache: KVCacheState, request: ChatRequest, *, kv_mode: KVMode, max_context_len: int) -> Plan:
    """The plan for ``request`` given what the KV cache holds."""
    tools = render_tools(request.tools)
    key = system_key(request.system_prompt, tools)
    split = split_new(request.messages)
    sent: list[Message] = [*split.history, *split.new]
    options = RunOptions(
        keep_history=kv_mode is KVMode.REUSE,
        max_new_tokens=request.max_new_tokens,
        sampling=request.sampling,
    )
    set_system = kv_mode is KVMode.NAIVE or key != cache.system_key
    same_conversation = (
        cache.conversation_id == request.conversation_id
        and cache.cached_messages == len(split.history)
        and cache.fingerprint == fingerprint(split.history)
    )
    over_budget = cache.kv_tokens > CONTEXT_BUDGET * max_context_len
    reset = KVReset.ALL if set_system else KVReset.NONE  # a new system prompt starts from an empty cache
    history: list[Message] = []
    history_start = cache.history_start if same_conversation else 0
    follow_up = options.keep_history and not set_system and same_conversation and cache.in_kv
    if follow_up and over_budget:
        reset = KVReset.KEEP_SYSTEM
    if not follow_up or over_budget:
        # The turn being answered is always sent: a tool result without its question and call
        # means nothing. Only earlier turns are trimmed.
        turn_start = current_turn_start(split)
        current = list(split.history[turn_start:])
        earlier = list(trim_turns(split.history[history_start:turn_start], request.max_history_turns))
        if same_conversation and over_budget:
            earlier = list(drop_oldest_half(earlier))
        # Oldest turns first, the history goes until what is sent fits (a failed turn's text too).
        fixed = estimated_tokens(
            request.system_prompt, tools, *map(history_text, current), *(m.content for m in split.new)
        )
        history = [*fit_history(earlier, int(CONTEXT_BUDGET * max_context_len) - fixed), *current]
        history_start = len(split.history) - len(history)
        if options.keep_history and reset is KVReset.NONE:
            reset = KVReset.KEEP_SYSTEM  # another conversation is in the cache: back to the system prompt
    return Plan(
        input=rebuild_input(history, split.new, request.enable_thinking, request.context),
        options=options,
        system_key=key,
        tools=tools,
        set_system=set_system,
        reset=reset,
        sends_only_new=kv_mode is not KVMode.NAIVE and (not history or kv_mode is KVMode.CONSERVATIVE),
        held_tokens=cache.kv_tokens if reset is KVReset.NONE and not set_system and cache.in_kv else 0,
        system_cached=not set_system and cache.system_in_kv,
        use_prompt_cache=set_system and kv_mode is not KVMode.NAIVE,
        conversation=KVCacheState(
            system_key=key,
            system_in_kv=True,
            conversation_id=request.conversation_id,
            cached_messages=len(sent) + 1,  # the reply joins the conversation
            fingerprint=fingerprint(sent),
            history_start=history_start,
            in_kv=options.keep_history,
        ),
    )


def is_hit(step: Plan, *, loaded_prompt_cache: bool) -> bool:
    """Whether a request was a cache hit: only what the strategy must send was prefilled.

    And the system section was warm: kept in the KV cache, or restored from its prompt-cache file.
    """
    return step.sends_only_new and (not step.set_system or loaded_prompt_cache)


def ready(cache: KVCacheState, step: Plan) -> KVCacheState:
    """What the KV cache holds once the runtime is ready for ``step``, until its run succeeds."""
    start = KVCacheState(system_key=step.system_key) if step.set_system else cache
    return start.without_conversation()


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How a run ended, as far as the KV cache is concerned."""

    keep_history: bool
    """The run kept its turn (off when a prompt-cache file was restored for it)."""
    system_warm: bool
    """The system section was prefilled before the run: in the KV cache or from its file."""
    prefilled: bool
    """A token came: the runtime read the whole input."""
    reply: Message
    """What the model said."""
    chunks: int
    """Chunks of text it said (a token each, as far as the engine can count)."""
    perf: PerfStats | None
    """The runtime's figures of a completed run; None when it failed or was cut at a stop string."""
    kv_tokens: int | None
    """The KV cache's size after the run, when the library tells it."""


@dataclass(frozen=True, slots=True)
class Settled:
    """What the KV cache holds after a run, and what the run cost."""

    cache: KVCacheState
    perf: PerfStats
    prompt_tokens: int
    """Tokens of the run's whole prompt, the cached ones included."""
    kv_tokens: int
    """Tokens in the KV cache: as the library tells, else as counted."""


def settle(cache: KVCacheState, step: Plan, end: RunEnd) -> Settled:
    """What the KV cache holds after ``step``'s run ended as ``end``, ``cache`` being what it held before."""
    if end.perf is None:
        # Failed, cancelled or cut at a stop string: no known conversation is in the cache, but a
        # system section that was read stays prefilled. The runtime reported no figures.
        start = ready(cache, step)
        return Settled(
            replace(start, system_in_kv=start.system_in_kv or end.prefilled),
            PerfStats(generate_tokens=end.chunks),
            max((end.kv_tokens or 0) - end.chunks, 0),
            end.kv_tokens or 0,
        )
    perf = end.perf
    if end.keep_history:
        counted = step.held_tokens + perf.prefill_tokens + perf.generate_tokens
        context = end.kv_tokens if end.kv_tokens is not None else counted
        prompt_tokens = max(context - perf.generate_tokens, perf.prefill_tokens)
    else:
        # The runtime went back to the system section, which is all it keeps.
        prompt_tokens = perf.prefill_tokens + ((end.kv_tokens or 0) if end.system_warm else 0)
        context = prompt_tokens + perf.generate_tokens
    settled = replace(
        step.conversation,
        fingerprint=fingerprint([end.reply], step.conversation.fingerprint),
        in_kv=end.keep_history,
        kv_tokens=context,
    )
    return Settled(settled, perf, prompt_tokens, end.kv_tokens if end.kv_tokens is not None else context)


def overflow_suspected(step: Plan, request: ChatRequest, max_context_len: int) -> ContextOverflowError | None:
    """The error to report for a run that failed before its first token, when its input may not fit.

    The runtime reports an input longer than the context only as a failed run. A token is at
    least one byte, so an input of fewer bytes than the context fits and its failure is another.
    """
    texts = (request.system_prompt, step.tools, step.input.text)
    if sum(len(text.encode(errors="replace")) for text in texts) <= max_context_len:
        return None
    tokens = max(estimated_tokens(*texts), max_context_len + 1)
    return ContextOverflowError(
        f"the input needs about {tokens} tokens but the context holds {max_context_len}",
        tokens=tokens,
        limit=max_context_len,
    )


def context_room(request: ChatRequest, max_context_len: int) -> int:
    """The tokens (estimated) that the system prompt and tools leave for the conversation and the reply."""
    return max_context_len - estimated_tokens(request.system_prompt, render_tools(request.tools))
