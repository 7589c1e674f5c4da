"""Request parsing and model lookup: pure functions, no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from rkllm_runtime.chat import Message, ToolCall
from rkllm_runtime.server.config import ServerConfig, is_loopback
from rkllm_runtime.server.convert import flag, max_tokens, parse_messages, parse_tools, sampling_of
from rkllm_runtime.server.errors import ApiError
from rkllm_runtime.server.registry import ModelRegistry, ModelState


def test_messages_of_both_apis() -> None:
    system, messages = parse_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "on "}, {"type": "text", "text": "x"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "On", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "Off", "arguments": {}}}]},
            {"role": "tool", "tool_name": "Off", "content": "ok"},
        ]
    )  # fmt: skip
    assert system == "Be brief."
    assert messages[0] == Message("user", "on x")
    assert messages[1] == Message("assistant", "", tool_calls=(ToolCall("On", {"a": 1}, id="call_1"),))
    assert messages[2] == Message("tool", "ok", name="On")  # named from the call it answers
    assert messages[3].tool_calls[0].name == "Off"
    assert messages[4] == Message("tool", "ok", name="Off")


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([], "non-empty"),
        ([{"role": "robot", "content": "hi"}], "unknown role"),
        ([{"role": "user", "content": "hi", "images": ["x"]}], "images"),
        ([{"role": "user", "content": 3}], "must be a string"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "last message"),
        ([{"role": "assistant", "tool_calls": [{"function": {"name": "x", "arguments": "{"}}]},
          {"role": "user", "content": "hi"}], "not valid JSON"),
    ],
)  # fmt: skip
def test_bad_messages(items: object, error: str) -> None:
    with pytest.raises(ApiError, match=error) as raised:
        parse_messages(items)
    assert raised.value.status == 400


def test_tools_sampling_and_limits() -> None:
    (tool,) = parse_tools([{"type": "function", "function": {"name": "On"}}])
    assert tool.parameters == {"type": "object", "properties": {}}
    with pytest.raises(ApiError, match="tools"):
        parse_tools({"name": "On"})
    assert sampling_of({}) is None
    sampling = sampling_of({"temperature": 0.2, "top_k": 40.0, "num_ctx": 8192})
    assert sampling is not None
    assert (sampling.temperature, sampling.top_k, sampling.top_p) == (0.2, 40, None)  # top_p: the runtime's
    with pytest.raises(ApiError, match='"top_k" must be a number'):
        sampling_of({"top_k": "many"})
    assert max_tokens(None, 100, "num_predict") == max_tokens(-1, 100, "num_predict") == 100
    assert max_tokens(7, 100, "num_predict") == 7
    for bad in (0, True, "5", 101):
        with pytest.raises(ApiError, match='"num_predict"'):
            max_tokens(bad, 100, "num_predict")
    assert flag("high", "think")
    assert not flag(None, "think")
    with pytest.raises(ApiError, match="think"):
        flag("yes", "think")


def test_model_lookup_and_states(tmp_path: Path) -> None:
    registry = ModelRegistry(ServerConfig(tmp_path / "lib.so", {"qwen": tmp_path / "q.rkllm"}))
    assert registry.get("qwen:latest") is registry.get("qwen")
    with pytest.raises(ApiError, match="not found") as unknown:
        registry.get("llama3")
    assert unknown.value.status == 404
    with pytest.raises(ApiError, match="required"):
        registry.get(None)
    model = registry.get("qwen")
    assert model.state is ModelState.LOADING
    with pytest.raises(ApiError, match="still loading") as loading:
        model.ready_engine()
    assert (loading.value.status, loading.value.retry_after) == (503, 5)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("192.168.1.2", False),
     ("board", False)],
)  # fmt: skip
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
