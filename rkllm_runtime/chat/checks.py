"""What a request is checked for before it queues: text C can carry, a turn that can fit."""

from __future__ import annotations

import logging
import re

from rkllm_runtime.errors import ContextOverflowError
from rkllm_runtime.runtime import encode_text

from .messages import ChatRequest, current_turn_start, history_text, render_tools, split_new
from .plan import TURN_TOKENS, context_room
from .status import EngineStats

_LOGGER = logging.getLogger(__name__)

# Once whitespace runs are collapsed, a token is hardly ever longer than this: a text of n bytes
# needs at least n / MAX_BYTES_PER_TOKEN tokens, a bound that refuses only what can never fit.
MAX_BYTES_PER_TOKEN = 32
_WHITESPACE = re.compile(r"\s+")


def check_texts(request: ChatRequest) -> None:
    """Refuse text a C string cannot carry: raises :class:`~rkllm_runtime.errors.InvalidTextError`."""
    for text in (request.system_prompt, *(message.content for message in request.messages)):
        encode_text(text)


def check_request(request: ChatRequest, limit: int) -> None:
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


def note_context_room(stats: EngineStats, request: ChatRequest, max_context_len: int) -> None:
    """Keep the room the system prompt and tools leave; warn when it first falls short of a turn."""
    room, limit = context_room(request, max_context_len), TURN_TOKENS
    if room < limit and room != stats.context_room:
        _LOGGER.warning(
            "The system prompt and tools take about %d of the %d tokens of the context, leaving "
            "%d where a turn needs about %d: raise the context length, or shorten the prompt and tools",
            max_context_len - room,
            max_context_len,
            room,
            limit,
        )
    stats.context_room = room
