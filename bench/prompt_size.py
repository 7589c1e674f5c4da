"""The Assist prompt's size in Qwen2.5 tokens, as Home Assistant writes it and as the model reads it.

A real Home Assistant exposes 30 entities (the home of bench/voice_session.py), 100 (33 rooms and
the model's own NPU sensor), or its demo integration's (every kind of device, so every domain's
tools), with the Assist API. The system prompt and tools the agent sends
are counted by the emulator with the real Qwen2.5 tokenizer: as Home Assistant's Ollama integration
sends them (Home Assistant's prompt with the entities as YAML, its tool names, full JSON schemas
with JSON's spaces) and as this integration sends them (entities one line each, plain tool names,
compact lean schemas). The count is the system section the runtime prefills: the prompt, the
tools and the chat template's tool instructions.

Usage: uv run python bench/prompt_size.py
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import probatio
import voice_session
from figures import publish
from homeassistant import loader
from homeassistant.components import conversation
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import llm
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_test_home_assistant

import custom_components.rkllm.entity as entity_module
from custom_components.rkllm.const import DOMAIN, SUBENTRY_CONVERSATION
from custom_components.rkllm.schemas import default_conversation_options
from custom_components.rkllm.tools import ToolNames
from rkllm_runtime import ModelParams, Prompt, RKLLMRuntime, RunOptions
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatStream, ToolSpec
from rkllm_runtime.chat.messages import render_tools
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached


async def demo_home(hass: HomeAssistant) -> None:
    """Home Assistant's demo integration: every kind of device (climate, covers, fans, locks, media…)."""
    assert await async_setup_component(hass, "homeassistant", {})
    demo = MockConfigEntry(domain="demo")
    demo.add_to_hass(hass)
    assert await hass.config_entries.async_setup(demo.entry_id)
    await hass.async_block_till_done()


HOMES: dict[str, Callable[[HomeAssistant], Awaitable[None]]] = {
    "30 entities": lambda hass: voice_session.build_home(hass, voice_session.ROOMS),
    "100 entities": lambda hass: voice_session.build_home(
        hass, [*voice_session.ROOMS, *(f"room {i}" for i in range(11, 34))]
    ),
    "demo": demo_home,
}


def as_home_assistant_renders(api: llm.APIInstance) -> str:
    """The tools as Home Assistant's Ollama integration sends them: its names, full schemas, JSON's spaces."""
    return json.dumps(
        [{"type": "function", "function": {"name": tool.name, "description": tool.description,
                                           "parameters": probatio.to_openapi(
                                               tool.parameters, custom_serializer=api.custom_serializer,
                                               openapi_version="3.1.0")}} for tool in api.tools]
    )  # fmt: skip


async def capture(
    library: Path, model: Path, build_home: Callable[[HomeAssistant], Awaitable[None]], workdir: Path
) -> tuple[str, str, ChatRequest]:
    """Home Assistant's own system prompt and tools, and the first request of a command."""
    raw: list[str] = []
    apis: list[llm.APIInstance] = []
    requests: list[ChatRequest] = []
    in_text, tool_specs, chat = ToolNames.in_text, entity_module.tool_specs, ChatEngine.chat

    def recording_in_text(names: ToolNames, prompt: str) -> str:
        raw.append(prompt)
        return in_text(names, prompt)

    def recording_tool_specs(api: llm.APIInstance) -> list[ToolSpec]:
        apis.append(api)
        return tool_specs(api)

    def recording_chat(engine: ChatEngine, request: ChatRequest) -> ChatStream:
        requests.append(request)
        return chat(engine, request)

    ToolNames.in_text = recording_in_text  # type: ignore[method-assign]
    entity_module.tool_specs = recording_tool_specs
    ChatEngine.chat = recording_chat  # type: ignore[method-assign]
    try:
        async with async_test_home_assistant(config_dir=str(workdir)) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            await build_home(hass)
            assert await async_setup_component(hass, "conversation", {})
            entry = MockConfigEntry(
                domain=DOMAIN, title="qwen", minor_version=2,
                data={"mode": "in_process", "library_path": str(library), "model_path": str(model),
                      "max_context_len": 8192, "advanced": {}},
                subentries_data=[{"data": default_conversation_options(), "title": "RKLLM conversation",
                                  "subentry_type": SUBENTRY_CONVERSATION, "unique_id": None}],
            )  # fmt: skip
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            await conversation.async_converse(hass, "hello", None, Context(), agent_id=voice_session.AGENT)
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    finally:
        ToolNames.in_text = in_text  # type: ignore[method-assign]
        entity_module.tool_specs, ChatEngine.chat = tool_specs, chat  # type: ignore[method-assign]
    return raw[0], as_home_assistant_renders(apis[0]), requests[0]


def system_tokens(runtime: RKLLMRuntime, system: str, tools: str) -> int:
    """Tokens of the system section: the first run's prefill less its own turn."""
    runtime.set_function_tools(system, tools)
    runtime.clear_kv_cache(keep_system_prompt=False)
    turn = Prompt("hi")
    result = runtime.run(turn, RunOptions(max_new_tokens=1))
    c_input, keep = runtime._build_input(turn)
    own = runtime.library.cdll.rkllm_emu_input_tokens(runtime._handle, ctypes.byref(c_input))
    del keep
    return result.perf.prefill_tokens - int(own)


async def main() -> None:
    os.environ["RKLLM_EMU_TIME_SCALE"] = "0"
    library = build_cached("1.3")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = EmulatedModel(rules=[Rule(reply="Hello.")], max_context=8192).write(Path(tmp) / "model.rkllm")
        for home, build_home in HOMES.items():
            raw, raw_tools, request = await capture(library, model, build_home, Path(tmp) / home)
            with RKLLMRuntime.open(library, model, ModelParams(max_context_len=8192)) as runtime:
                runtime.library.cdll.rkllm_emu_input_tokens.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                before = system_tokens(runtime, raw, raw_tools)
                after = system_tokens(runtime, request.system_prompt, render_tools(request.tools))
                prompt_only = (
                    system_tokens(runtime, raw, "[]"),
                    system_tokens(runtime, request.system_prompt, "[]"),
                )
            figures[home] = {
                "before": before, "after": after, "saved": round(1 - after / before, 3),
                "prompt_before": prompt_only[0], "prompt_after": prompt_only[1],
                "tools_before": before - prompt_only[0], "tools_after": after - prompt_only[1],
            }  # fmt: skip
    title = "System section of the Assist agent, Qwen2.5 tokens (Home Assistant's rendering -> sent)"
    rows = [
        f"{home}: {row['before']} -> {row['after']} ({row['saved']:.0%} fewer); prompt "
        f"{row['prompt_before']} -> {row['prompt_after']}, "
        f"tools {row['tools_before']} -> {row['tools_after']}"
        for home, row in figures.items()
    ]
    publish([title, *rows], figures)


if __name__ == "__main__":
    asyncio.run(main())
