"""Calls a model writes as text reach the official ollama and openai clients as real tool calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server.conftest import JSON_IN_PROSE, MODEL, SYSTEM, TOOLS, TURN_OFF, RunningServer

BOTH_TOOLS = [*TOOLS, TURN_OFF]

# What was asked, and the calls the client gets (the model's text names no tool it was given,
# or a tool with its API prefix, its arguments as a JSON string, or after a sentence).
ASKED = {
    "sentence-then-fenced-call-then-text": (
        "turn on the porch light", [("HassTurnOn", {"name": "Porch light"})]
    ),
    "two-bare-calls-on-separate-lines": (
        "switch off the hall and the porch",
        [("HassTurnOff", {"name": "Hall"}), ("HassTurnOff", {"name": "Porch"})],
    ),
    "a-tool-not-offered-is-refused-and-asked-again": ("open the gate", [("HassTurnOn", {"name": "Gate"})]),
}  # fmt: skip


def system(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("text", "expected"), ASKED.values(), ids=ASKED.keys())
def test_ollama_gets_tool_calls(
    server: RunningServer, text: str, expected: list[tuple[str, dict[str, Any]]], stream: bool
) -> None:
    client = server.ollama()
    if stream:
        parts = list(client.chat(MODEL, messages=system(text), tools=BOTH_TOOLS, stream=True))
    else:
        parts = [client.chat(MODEL, messages=system(text), tools=BOTH_TOOLS)]
    assert "".join(part.message.content or "" for part in parts) == ""
    calls = [call for part in parts for call in part.message.tool_calls or []]
    assert [(call.function.name, dict(call.function.arguments)) for call in calls] == expected


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(("text", "expected"), ASKED.values(), ids=ASKED.keys())
def test_openai_gets_tool_calls(
    server: RunningServer, text: str, expected: list[tuple[str, dict[str, Any]]], stream: bool
) -> None:
    client = server.openai()
    if stream:
        chunks = list(
            client.chat.completions.create(model=MODEL, messages=system(text), tools=BOTH_TOOLS, stream=True)  # type: ignore[arg-type]
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        deltas = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        calls = [(d.function.name, json.loads(d.function.arguments or "")) for d in deltas if d.function]
        reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        reply = client.chat.completions.create(model=MODEL, messages=system(text), tools=BOTH_TOOLS)  # type: ignore[arg-type]
        content = reply.choices[0].message.content or ""
        made = reply.choices[0].message.tool_calls or []
        calls = [(call.function.name, json.loads(call.function.arguments)) for call in made]  # type: ignore[union-attr]
        reasons = [reply.choices[0].finish_reason]
    assert content == ""
    assert calls == expected
    assert reasons == ["tool_calls"]


def test_json_in_prose_is_said_not_called(server: RunningServer) -> None:
    reply = server.ollama().chat(MODEL, messages=system("how do i switch the lamp on"), tools=BOTH_TOOLS)
    assert reply.message.content == JSON_IN_PROSE
    assert not reply.message.tool_calls
    completion = server.openai().chat.completions.create(
        model=MODEL,
        messages=system("how do i switch the lamp on"),  # type: ignore[arg-type]
        tools=BOTH_TOOLS,  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.content == JSON_IN_PROSE
    assert not completion.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == "stop"
