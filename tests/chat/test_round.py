"""One round of a turn: an unreadable call is told back to the model and answered again."""

from __future__ import annotations

import json

import pytest

from rkllm_runtime.chat import KVMode, Message
from tests.chat.conftest import TOOLS, EngineFactory, ask, send


@pytest.mark.parametrize("mode", [KVMode.CONSERVATIVE, KVMode.REUSE])
async def test_malformed_call_is_retried_and_the_caller_sees_only_the_retry(
    make_engine: EngineFactory, mode: KVMode
) -> None:
    """A stateless caller sends back what it saw; the hidden retry round does not break the follow-up."""
    engine = make_engine(kv_mode=mode)
    conversation: list[Message] = [Message("user", "light up the garden")]
    called = await send(engine, conversation, None, tools=TOOLS)  # type: ignore[arg-type]
    assert called.runs == 2
    assert [(c.name, c.arguments) for c in called.tool_calls] == [("HassTurnOn", {"name": "garden"})]
    assert engine.stats.malformed_calls == 1
    conversation.append(Message("tool", json.dumps({"success": True}), name="HassTurnOn"))
    done = await send(engine, conversation, None, tools=TOOLS)  # type: ignore[arg-type]
    assert done.text == "Done."
    assert done.cache_hit
    if mode is KVMode.REUSE:  # only the tool result: the retry round stayed in the cache
        assert done.perf.prefill_tokens < 50


async def test_a_call_of_a_tool_not_offered_is_asked_again_with_the_tools_names(
    make_engine: EngineFactory,
) -> None:
    engine = make_engine()
    result = await ask(engine, [], "open the gate", tools=TOOLS)
    assert result.runs == 2
    assert result.text == ""  # the refused call was not said
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("HassTurnOn", {"name": "gate"})]
    assert engine.stats.malformed_calls == 1


async def test_malformed_call_without_tools_is_not_retried(make_engine: EngineFactory) -> None:
    engine = make_engine()
    result = await ask(engine, [], "light up the garden")
    assert result.runs == 1
    assert engine.stats.malformed_calls == 0
