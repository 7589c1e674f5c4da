"""Whether a logits-mode run keeps its input in the KV cache: what decoding under a grammar needs.

The vendor documents the logits mode (``RKLLM_INFER_GET_LOGITS``) but not what a run of it with
``keep_history`` leaves in the KV cache. The chat engine checks it once per load; ``board_check``
reports it.
"""

from __future__ import annotations

from .runtime import RKLLMRuntime
from .types import Tokens


def logits_keep_input(runtime: RKLLMRuntime) -> tuple[bool, int]:
    """Whether a logits run with ``keep_history`` keeps its input in the KV cache, and the logits' width.

    Two one-token runs on top of the system section; the cache must grow by the second run's
    token. Needs ``rkllm_get_kv_cache_size``. The conversation in the cache is cleared.
    """
    runtime.clear_kv_cache(keep_system_prompt=True)
    runtime.logits(Tokens([0]), keep_history=True)
    before = runtime.kv_cache_size()
    logits = runtime.logits(Tokens([0]), keep_history=True)
    after = runtime.kv_cache_size()
    runtime.clear_kv_cache(keep_system_prompt=True)
    return after == before + 1, logits.width
