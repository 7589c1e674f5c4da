"""The chat layer: messages and tools in, typed events out, with the KV cache kept warm.

Everything that knows the model's text format lives here: tool-schema rendering,
tool-call parsing and repair, the thinking split, and the retry of malformed calls.
"""

from .engine import MAX_WAITING, ChatEngine, ChatStream, WarmOutcome
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
