"""Warming: the system prompt and tools prefilled ahead of the request that needs them."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from enum import StrEnum

from rkllm_runtime.aio import AsyncStream
from rkllm_runtime.errors import AbortedError

from .messages import ChatRequest, Message
from .plan import KVCacheState, KVMode, Plan, plan
from .prepare import Prepared, Preparer


class WarmOutcome(StrEnum):
    """What :meth:`ChatEngine.warm` did."""

    WARMED = "warmed"
    """The system prompt and tools were set and prefilled (or restored from their prompt-cache file)."""
    ALREADY_WARM = "already_warm"
    BUSY = "busy"
    """A request runs or waits: left alone, so that it is never delayed."""
    NOT_KEPT = "not_kept"
    """The naive strategy keeps nothing between requests."""


def warm_plan(cache: KVCacheState, request: ChatRequest, max_context_len: int) -> Plan | None:
    """The plan of a run of an empty user turn after the request's system section; None if it is prefilled."""
    request = replace(request, messages=[Message("user", "")], max_new_tokens=1)
    step = plan(cache, request, kv_mode=KVMode.CONSERVATIVE, max_context_len=max_context_len)
    if not step.set_system and cache.system_in_kv:
        return None
    return step


async def warm_run(executor: ThreadPoolExecutor, preparer: Preparer, step: Plan, prepared: Prepared) -> int:
    """Prefill the system section and an empty turn, then end the run at its first token.

    Returns the KV cache's size (0 when the library does not tell it).
    """
    run = AsyncStream(preparer.runtime, step.input, prepared.options, executor)
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
        after = preparer.after_run
        kv_tokens = await asyncio.get_running_loop().run_in_executor(
            executor, after, prepared.save_prompt_cache, finished
        )
    return kv_tokens or 0
