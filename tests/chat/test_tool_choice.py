"""A reply that must call a tool: the instruction, the one retry, and giving up."""

from __future__ import annotations

import pytest

from rkllm_runtime.chat import ChatRequest, ChatResult, Message, ToolCall
from rkllm_runtime.chat.tool_choice import MissingCallError, answer_with_call
from rkllm_runtime.types import PerfStats

REQUEST = ChatRequest("Be brief.", [Message("user", "how many lamps?")])


def _result(text: str, *calls: ToolCall) -> ChatResult:
    return ChatResult(
        text, calls, PerfStats(), prompt_tokens=0, cached_tokens=0, cache_hit=False, kv_tokens=0
    )


async def test_a_reply_without_the_call_is_asked_again() -> None:
    asked: list[ChatRequest] = []
    replies = iter([_result("Three."), _result("", ToolCall("HassTurnOn", {"name": "Lamp"}))])

    async def ask(request: ChatRequest) -> ChatResult:
        asked.append(request)
        return next(replies)

    result = await answer_with_call(ask, REQUEST, ["HassTurnOn"])
    assert [call.name for call in result.tool_calls] == ["HassTurnOn"]
    first, retry = asked
    assert first.system_prompt == "Be brief.\n\nAnswer this message by calling the tool HassTurnOn."
    assert [(m.role, m.content) for m in retry.messages[1:]] == [
        ("assistant", "Three."),
        ("user", "That answer did not call the tool HassTurnOn. Answer again by calling it."),
    ]


async def test_a_call_of_another_tool_does_not_do() -> None:
    asked: list[ChatRequest] = []

    async def ask(request: ChatRequest) -> ChatResult:
        asked.append(request)
        return _result("", ToolCall("HassTurnOn", {}))

    with pytest.raises(MissingCallError, match="did not call one of the tools HassTurnOff, HassLightSet"):
        await answer_with_call(ask, REQUEST, ["HassTurnOff", "HassLightSet"])
    assert len(asked) == 2
