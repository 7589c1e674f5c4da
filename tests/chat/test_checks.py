"""Requests refused before they queue, and the note on the room a system prompt leaves."""

from __future__ import annotations

import pytest

from rkllm_runtime import ContextOverflowError
from rkllm_runtime.chat import TURN_TOKENS, Message, ToolCall
from tests.chat.conftest import SYSTEM, TOOLS, EngineFactory, ask, send


async def test_a_current_turn_that_cannot_fit_is_refused(make_engine: EngineFactory) -> None:
    """Its question alone outgrows the context: refused, not answered without it."""
    engine = make_engine()
    conversation = [
        Message("user", "kitchen " + "x" * 200_000),
        Message("assistant", "", tool_calls=(ToolCall("HassTurnOn", {}),)),
        Message("tool", '{"success": true}', name="HassTurnOn"),
    ]
    with pytest.raises(ContextOverflowError, match="the context holds 4096"):
        await send(engine, conversation, "a", tools=TOOLS)


@pytest.mark.parametrize(("context", "warnings"), [(1024, 1), (4096, 0)])
async def test_a_system_prompt_that_leaves_no_room_for_a_turn_is_warned_about_once(
    make_engine: EngineFactory, caplog: pytest.LogCaptureFixture, context: int, warnings: int
) -> None:
    engine = make_engine(max_context_len=context)
    for text in ("hello", "hello again"):
        await ask(engine, [], text)
    assert engine.stats.context_room == context - len(" ".join(SYSTEM.split())) // 4
    assert (engine.stats.context_room < TURN_TOKENS) is bool(warnings)
    assert caplog.text.count("leaving") == warnings
