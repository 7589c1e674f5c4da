"""The chat layer: messages and tools in, typed events out, with the KV cache kept warm.

Everything that knows the model's text format lives here: tool-schema rendering,
tool-call parsing and repair, the thinking split, and the retry of malformed calls.

- ``engine``: the queue, the engine thread, the run loop and the commit of a result
- ``checks``: what a request is refused for before it queues, and the context-room note
- ``plan``: what the KV cache holds and what a run must send (pure)
- ``prepare``: the runtime readied for a plan, its prompt-cache file restored or saved
- ``round``: one run of a turn, parsed into events, an unreadable call told back
- ``warm``: the system prompt prefilled ahead of its request
- ``stream``, ``events``: what a caller iterates
- ``messages``, ``parser``, ``tool_calls``, ``stop``: requests and the model's text format
- ``prompt_cache``: the store of prompt-cache files; ``status``: the engine's state and counters
- ``retry``, ``structured``, ``tool_choice``: replies fitted to what a request asked for
"""

from .engine import MAX_WAITING, ChatEngine
from .events import (
    ChatEvent,
    ChatResult,
    Finished,
    MalformedToolCall,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
)
from .messages import ChatRequest, Message, ToolCall, ToolSpec
from .plan import TURN_TOKENS, KVCacheState, KVMode, KVReset
from .prompt_cache import PromptCacheKey, PromptCacheStore
from .status import EngineState, EngineStats, EngineStatus, Observed
from .stream import ChatStream
from .warm import WarmOutcome

__all__ = [
    "MAX_WAITING",
    "TURN_TOKENS",
    "ChatEngine",
    "ChatEvent",
    "ChatRequest",
    "ChatResult",
    "ChatStream",
    "EngineState",
    "EngineStats",
    "EngineStatus",
    "Finished",
    "KVCacheState",
    "KVMode",
    "KVReset",
    "MalformedToolCall",
    "Message",
    "Observed",
    "PromptCacheKey",
    "PromptCacheStore",
    "TextDelta",
    "ThinkingDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSpec",
    "WarmOutcome",
]
