"""The Assist prompt's size in Qwen2.5 tokens, as Home Assistant writes it and as the model reads it.

A real Home Assistant exposes 30 entities (the home of bench/voice_session.py), 100 (33 rooms
and the model's own NPU sensor), or every kind of device Home Assistant's demo has (lights,
switches, fans, covers, climate, locks, media players, vacuums, humidifiers, sensors), with the
Assist API. The system prompt and tools the agent sends
are counted by the emulator with the real Qwen2.5 tokenizer: as Home Assistant renders them (its
prompt with the entities as YAML, the tools as indented JSON schemas, which other integrations
send) and as this integration sends them (entities one line each, compact lean schemas). The
count is the system section the runtime prefills: the prompt, the tools and the chat template's
tool instructions.

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

import voice_session
from homeassistant import loader
from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_test_home_assistant

import custom_components.rkllm.entity as entity_module
from custom_components.rkllm.config_flow import default_conversation_options
from custom_components.rkllm.const import DOMAIN, SUBENTRY_CONVERSATION
from rkllm_runtime import ModelParams, Prompt, RKLLMRuntime, RunOptions
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatStream
from rkllm_runtime.chat.messages import render_tools
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached

DEMO_DOMAINS = ("light", "switch", "fan", "cover", "climate", "lock", "media_player", "sensor")


async def demo_home(hass: HomeAssistant, rooms: list[str]) -> None:
    """Home Assistant's demo devices of every kind, exposed (``rooms`` is not used)."""
    assert await async_setup_component(hass, "homeassistant", {})
    for domain in DEMO_DOMAINS:
        assert await async_setup_component(hass, domain, {domain: [{"platform": "demo"}]})
    assert await async_setup_component(hass, "conversation", {})
    await hass.async_block_till_done()
    for state in hass.states.async_all(DEMO_DOMAINS):
        async_expose_entity(hass, "conversation", state.entity_id, True)


HOMES: dict[str, tuple[Callable[[HomeAssistant, list[str]], Awaitable[None]], list[str]]] = {
    "30 entities": (voice_session.build_home, voice_session.ROOMS),
    "100 entities": (voice_session.build_home, [*voice_session.ROOMS, *(f"room {i}" for i in range(11, 34))]),
    "every kind of device": (demo_home, []),
}


def as_home_assistant_renders(request: ChatRequest) -> str:
    """The tools as OpenAI-style JSON with Home Assistant's full schemas and default separators."""
    return json.dumps(
        [{"type": "function", "function": {"name": t.name, "parameters": t.parameters,
                                           "description": t.description}} for t in request.tools]
    )  # fmt: skip


async def capture(
    library: Path,
    model: Path,
    build: Callable[[HomeAssistant, list[str]], Awaitable[None]],
    rooms: list[str],
    workdir: Path,
) -> tuple[str, str, ChatRequest]:
    """Home Assistant's own system prompt, the one sent, and the first request of a command."""
    raw: list[str] = []
    requests: list[ChatRequest] = []
    lean_prompt, chat = entity_module.lean_prompt, ChatEngine.chat

    def recording_lean_prompt(prompt: str) -> tuple[str, str]:
        raw.append(prompt)
        return lean_prompt(prompt)

    def recording_chat(engine: ChatEngine, request: ChatRequest) -> ChatStream:
        requests.append(request)
        return chat(engine, request)

    entity_module.lean_prompt = recording_lean_prompt
    ChatEngine.chat = recording_chat  # type: ignore[method-assign]
    try:
        async with async_test_home_assistant(config_dir=str(workdir)) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            await build(hass, rooms)
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
        entity_module.lean_prompt, ChatEngine.chat = lean_prompt, chat  # type: ignore[method-assign]
    return raw[0], requests[0].system_prompt, requests[0]


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
        for home, (build, rooms) in HOMES.items():
            raw, sent, request = await capture(
                library, model, build, rooms, Path(tmp) / home.replace(" ", "-")
            )
            with RKLLMRuntime.open(library, model, ModelParams(max_context_len=8192)) as runtime:
                runtime.library.cdll.rkllm_emu_input_tokens.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
                before = system_tokens(runtime, raw, as_home_assistant_renders(request))
                after = system_tokens(runtime, sent, render_tools(request.tools))
                prompt_only = (system_tokens(runtime, raw, "[]"), system_tokens(runtime, sent, "[]"))
            figures[home] = {
                "before": before, "after": after, "saved": round(1 - after / before, 3),
                "prompt_before": prompt_only[0], "prompt_after": prompt_only[1],
                "tools_before": before - prompt_only[0], "tools_after": after - prompt_only[1],
            }  # fmt: skip
    print("System section of the Assist agent, Qwen2.5 tokens (Home Assistant's rendering -> sent)")
    for home, row in figures.items():
        print(
            f"{home}: {row['before']} -> {row['after']} ({row['saved']:.0%} fewer); prompt "
            f"{row['prompt_before']} -> {row['prompt_after']}, "
            f"tools {row['tools_before']} -> {row['tools_after']}"
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
