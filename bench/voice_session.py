"""A voice workload through the Assist agent: when the voice pipeline can speak, and what KV reuse saves.

A real Home Assistant instance (as in the tests) exposes 30 entities, so the Assist
prompt and tool schemas are the real ones. The workload: 20 commands as new
conversations, 5 follow-ups (two of them after the other satellite spoke), 5 commands
that act through a tool call, from two satellites taking turns, 3 commands that follow an
automation's AI task (its own prompt displaced the Assist prompt) spoken for 2 s, 2 commands
for a light that is not exposed (the model calls again after the failure), then a restart of
the integration and one more command. The emulator runs at Rockchip's published RK3588
figures for Qwen2.5-1.5B (378 ms for a 128-token prompt, decode 16.7 tokens/s), with a
prefill rate that falls with the context's length (calibrated to about 20 s for 4,000
tokens on Qwen3-0.6B) and prompt-cache files read at 250 MB/s, counting tokens with
Qwen2.5's own tokenizer; it runs in RK3588 time (TIME_SCALE 1), so what Home Assistant
itself spends counts once, as on a board.

The same workload runs with each KV strategy: conservative (the default), reuse, and
naive (re-prefill everything every time, what an OpenAI-style server does).

What a user feels is when the voice pipeline can start speaking: Home Assistant streams
text-to-speech once a reply has more than 60 characters (``STREAM_RESPONSE_CHARS`` in
``assist_pipeline``) or text followed by a tool call; a shorter reply is spoken when it is
complete. "Ready to speak" is measured that way, from the command to that moment, tool calls,
their results and Home Assistant's own work included (wall-clock, divided by TIME_SCALE).

``--mode`` chooses where the model runs: in Home Assistant (the default, all three
strategies), in an rkllm-server child the integration starts (``child``), or on an
rkllm-server started beside it (``server``), both with the default strategy. Every mode
also reports the wall-clock time to first token seen by the agent, from the request to
the engine's first text, and what the path to the runtime adds to the runtime's own
prefill time.

``--model-confirms`` turns off the confirmation in Home Assistant's words: the model words
each one, in a second run (default strategy only).

As Home Assistant's voice pipeline does, the agent is prepared when speech-to-text starts, while
the user speaks a command that follows an AI task; ``--no-prepare`` leaves it unprepared, as
it was before it could be (default strategy only).

Usage: uv run python bench/voice_session.py [--abi 1.3] [--mode {in_process,child,server}] [--model-confirms]
       [--no-prepare]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from figures import publish
from homeassistant import loader
from homeassistant.components import ai_task, conversation
from homeassistant.components.assist_pipeline.default_pipeline import STREAM_RESPONSE_CHARS
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import Context, HomeAssistant
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_test_home_assistant

from custom_components.rkllm.const import (
    DOMAIN,
    MODE_IN_PROCESS,
    MODE_SERVER,
    MODES,
    SUBENTRY_AI_TASK,
    SUBENTRY_CONVERSATION,
)
from custom_components.rkllm.schemas import default_ai_task_options, default_conversation_options
from rkllm_runtime import ModelParams
from rkllm_runtime.chat import (
    ChatEngine,
    ChatEvent,
    ChatRequest,
    ChatResult,
    ChatStream,
    EngineState,
    Finished,
    KVMode,
    TextDelta,
    ThinkingDelta,
    WarmOutcome,
)
from rkllm_runtime.chat import engine as engine_module
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.server.child import ServerProcess

PREFILL_TPS, DECODE_TPS = 128 / 0.378, 16.7  # the vendor's 128-token figure for Qwen2.5-1.5B
STORAGE_MBPS = 250.0
TIME_SCALE = 1.0  # RK3588 time: ready-to-speak includes Home Assistant's own time once
AGENT = "conversation.rkllm_conversation"
COMMAND = "command that acts (tool call)"
AFTER_TASK = "command after an AI task"
FAILS = "command whose call fails"
TASK = "AI task (an automation's)"
COLD = "cold start (first request)"
SPEAKING_S = 2.0  # how long the user speaks a command: the agent is prepared meanwhile
heard: dict[str, str] = {}
"""What the user last heard for each request kind."""
ROOMS = [
    "kitchen",
    "bedroom",
    "living room",
    "office",
    "hall",
    "bathroom",
    "garage",
    "garden",
    "attic",
    "cellar",
]


def tool_call(name: str) -> str:
    return f'<tool_call>\n{{"name": "HassTurnOn", "arguments": {{"name": "{name}"}}}}\n</tool_call>'


def model_rules() -> list[Rule]:
    rules = [
        Rule(role="user", match=f"switch on the {room} light", tools=True, reply=tool_call(f"{room} light"))
        for room in ROOMS
    ]
    return [
        *rules,
        Rule(role="user", match="switch on the porch light", tools=True, reply=tool_call("porch light")),
        Rule(role="tool", match="porch light", reply=tool_call("porch light")),  # the same call again
        Rule(role="tool", reply="Done, the light is on."),
        Rule(match="and tomorrow", reply="Tomorrow will be a little cooler."),
        Rule(match="temperature", reply="It is 21 degrees."),
        Rule(match="summarise", reply="A quiet day: 12 kWh used."),
        Rule(reply="Okay."),
    ]


@dataclass
class Run:
    """One engine run and what it was for."""

    kind: str
    result: ChatResult
    new_tokens: int
    load_ms: float = 0.0  # simulated prompt-cache load before the run


ORIGINAL_PLAN = engine_module.plan


class Recorder:
    """Collects every engine run, labelled with the kind of request under way."""

    def __init__(self) -> None:
        self.kind = ""
        self.runs: list[Run] = []
        self.warmed_ms: list[float] = []
        """How long each preparation took that warmed the model (while the user spoke)."""
        self._pending_input: Any = None
        self._warming = False

    def attach(self, engine: ChatEngine) -> None:
        lib = engine.runtime.library.cdll
        lib.rkllm_emu_input_tokens.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        plan = ORIGINAL_PLAN

        def spy(*args: Any, **kwargs: Any) -> Any:
            planned = plan(*args, **kwargs)
            c_input, keep = engine.runtime._build_input(planned.input)
            self._pending_input = lib.rkllm_emu_input_tokens(engine.runtime._handle, ctypes.byref(c_input))
            del keep
            return planned

        engine_module.plan = spy  # type: ignore[assignment]
        load = engine.runtime.load_prompt_cache
        loaded: list[float] = []

        def timed_load(path: str | Path) -> None:
            load(path)
            loaded.append(Path(path).stat().st_size / (STORAGE_MBPS * 1e6) * 1000)

        engine.runtime.load_prompt_cache = timed_load  # type: ignore[method-assign]
        warm = engine.warm

        async def timed_warm(request: ChatRequest) -> WarmOutcome:
            """A preparation is not a request: its plan and prompt-cache load are not a run's."""
            self._warming, started = True, time.perf_counter()
            try:
                outcome = await warm(request)
            finally:
                self._warming, self._pending_input = False, None
                loaded.clear()
            if outcome is WarmOutcome.WARMED:
                self.warmed_ms.append((time.perf_counter() - started) * 1000 / TIME_SCALE)
            return outcome

        engine.warm = timed_warm  # type: ignore[method-assign]

        def on_change() -> None:
            last = engine.stats.last
            ready = engine.state is EngineState.READY and not self._warming
            if ready and last is not None and self._pending_input is not None:
                self.runs.append(Run(self.kind, last, self._pending_input, sum(loaded)))
                loaded.clear()
                self._pending_input = None

        engine.add_listener(on_change)


class Timer:
    """Wall-clock time from each request to its first text, at the engine interface the agent uses."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.ttft_ms: list[tuple[str, float]] = []
        self.added_ms: list[float] = []
        """Wall-clock TTFT less the runtime's own (scaled) prefill time: what the path to it adds."""

    def attach(self, engine: Any) -> None:
        chat = engine.chat

        def timed(request: ChatRequest) -> ChatStream:
            return ChatStream(self._first_timed(chat(request)))

        engine.chat = timed

    async def _first_timed(self, stream: ChatStream) -> AsyncGenerator[ChatEvent]:
        """Time the first text; a reply that starts with a tool call has no first token to speak."""
        started = time.perf_counter()
        ttft = None
        spoken = True
        async with stream:
            async for event in stream:
                if ttft is None and spoken:
                    spoken = isinstance(event, TextDelta | ThinkingDelta)
                    if spoken:
                        ttft = (time.perf_counter() - started) * 1000
                        self.ttft_ms.append((self.recorder.kind, ttft))
                if isinstance(event, Finished) and ttft is not None:
                    self.added_ms.append(ttft - event.result.perf.prefill_time_ms * TIME_SCALE)
                yield event


class Speaker:
    """When the voice pipeline could start speaking each reply, as its text-to-speech streaming decides."""

    def __init__(self) -> None:
        self.ready_ms: list[tuple[str, float]] = []
        self._started = 0.0
        self._chars = 0
        self._ready: float | None = None
        original = conversation.ChatLog.async_add_delta_content_stream

        def watched(chat_log: Any, agent_id: str, stream: Any) -> Any:
            return original(chat_log, agent_id, self._watch(stream))

        conversation.ChatLog.async_add_delta_content_stream = watched  # type: ignore[method-assign]
        self._original = original

    def close(self) -> None:
        conversation.ChatLog.async_add_delta_content_stream = self._original  # type: ignore[method-assign]

    def start(self) -> None:
        self._started, self._chars, self._ready = time.perf_counter(), 0, None

    def done(self, kind: str) -> None:
        """The reply is complete: spoken now unless streaming started earlier."""
        ready = self._ready if self._ready is not None else time.perf_counter()
        self.ready_ms.append((kind, (ready - self._started) * 1000 / TIME_SCALE))

    async def _watch(self, stream: AsyncGenerator[Any]) -> AsyncGenerator[Any]:
        async for delta in stream:
            if self._ready is None:
                if delta.get("tool_calls") and self._chars > 0:
                    self._ready = time.perf_counter()  # text, then a tool call
                self._chars += len(delta.get("content") or "")
                if self._chars > STREAM_RESPONSE_CHARS:
                    self._ready = time.perf_counter()
            yield delta


def light(room: str) -> dict[str, Any]:
    """A template light switching the room's lamp (an input boolean)."""
    slug = room.replace(" ", "_")
    target = {"target": {"entity_id": f"input_boolean.{slug}_lamp"}}
    return {
        "name": f"{room} light",
        "state": f"{{{{ is_state('input_boolean.{slug}_lamp', 'on') }}}}",
        "turn_on": {"action": "input_boolean.turn_on", **target},
        "turn_off": {"action": "input_boolean.turn_off", **target},
    }


async def build_home(hass: HomeAssistant, rooms: list[str] = ROOMS) -> None:
    """A light, a switch (an input boolean) and a temperature sensor per room, exposed: 30 entities.

    And a porch light that is not exposed.
    """
    assert await async_setup_component(hass, "homeassistant", {})
    booleans = {f"{room.replace(' ', '_')}_{kind}": {} for room in rooms for kind in ("lamp", "switch")}
    assert await async_setup_component(
        hass, "input_boolean", {"input_boolean": {**booleans, "porch_lamp": {}}}
    )
    lights, sensors = [light("porch")], []
    for room in rooms:
        lights.append(light(room))
        sensors.append(
            {
                "name": f"{room} temperature",
                "state": "21",
                "unit_of_measurement": "°C",
                "device_class": "temperature",
            }
        )
    assert await async_setup_component(hass, "template", {"template": [{"light": lights, "sensor": sensors}]})
    assert await async_setup_component(hass, "conversation", {})
    await hass.async_block_till_done()
    for room in rooms:
        slug = room.replace(" ", "_")
        for entity_id in (
            f"light.{slug}_light",
            f"input_boolean.{slug}_switch",
            f"sensor.{slug}_temperature",
        ):
            async_expose_entity(hass, "conversation", entity_id, True)
    async_expose_entity(hass, "conversation", "light.porch_light", False)


async def workload(
    hass: HomeAssistant,
    entry: MockConfigEntry,
    recorder: Recorder,
    timer: Timer,
    speaker: Speaker | None,
    *,
    prepare: bool,
) -> None:
    conversations: dict[str, str | None] = {}
    heard.clear()

    async def say(
        kind: str, satellite: str, text: str, follow_up: bool = False, spoken: bool = False
    ) -> None:
        """A command; ``spoken``: the user speaks it first, and the pipeline prepares the agent meanwhile."""
        recorder.kind = kind
        conversation_id = conversations.get(satellite) if follow_up else None
        if spoken:
            if prepare:
                hass.async_create_background_task(
                    conversation.async_prepare_agent(hass, AGENT, "en"), "prepare the agent"
                )
            await asyncio.sleep(SPEAKING_S * TIME_SCALE)
        if speaker is not None:
            speaker.start()
        result = await conversation.async_converse(hass, text, conversation_id, Context(), agent_id=AGENT)
        if speaker is not None:
            speaker.done(kind)
        heard[kind] = result.response.speech["plain"]["speech"]
        assert kind == FAILS or result.response.response_type.value != "error", result.response.speech
        conversations[satellite] = result.conversation_id

    satellites = ("kitchen satellite", "bedroom satellite")
    for i in range(10):
        await say("new conversation", satellites[i % 2], f"what is the temperature in the {ROOMS[i]}")
    await say("new conversation", "kitchen satellite", "what is the temperature outside")
    await say("follow-up", "kitchen satellite", "and tomorrow?", follow_up=True)
    await say("follow-up", "kitchen satellite", "and tomorrow evening?", follow_up=True)
    await say("new conversation", "bedroom satellite", "what is the temperature upstairs")
    await say(
        "follow-up after the other satellite", "kitchen satellite", "and tomorrow night?", follow_up=True
    )
    await say(
        "follow-up after the other satellite", "bedroom satellite", "and tomorrow morning?", follow_up=True
    )
    await say("follow-up", "bedroom satellite", "and tomorrow at noon?", follow_up=True)
    for i in range(5):
        await say(COMMAND, satellites[i % 2], f"switch on the {ROOMS[i]} light")
    for i in range(3):
        recorder.kind = TASK  # an automation summarises the day with its own prompt
        await ai_task.async_generate_data(
            hass, task_name="summary", entity_id="ai_task.rkllm_ai_task", instructions="summarise the day"
        )
        await say(AFTER_TASK, satellites[i % 2], f"switch on the {ROOMS[5 + i]} light", spoken=True)
    for i in range(2):
        await say(FAILS, satellites[i % 2], "switch on the porch light")
    for i in range(8):
        await say("new conversation", satellites[i % 2], f"what is the temperature in the {ROOMS[9 - i]} now")
    await hass.config_entries.async_reload(entry.entry_id)
    await hass.async_block_till_done()
    attach(entry, recorder, timer)
    await say("first after restart", "kitchen satellite", "is it warm in the garden right now")


def attach(entry: MockConfigEntry, recorder: Recorder, timer: Timer) -> None:
    """Time the agent's requests; in Home Assistant's process, record each run too."""
    engine = entry.runtime_data.engine
    if isinstance(engine, ChatEngine):
        recorder.attach(engine)
    timer.attach(engine)


def entry_data(
    mode: str, kv_mode: KVMode, library: Path, model: Path, server: ServerProcess | None
) -> dict[str, Any]:
    """The model entry for a mode."""
    if server is not None:
        return {"mode": MODE_SERVER, "url": server.url, "api_key": server.api_key, "model": server.model}
    return {
        "mode": mode,
        "library_path": str(library),
        "model_path": str(model),
        "max_context_len": 4096,
        "advanced": {"kv_strategy": kv_mode.value},
    }


def agent_entry(data: dict[str, Any], options: dict[str, Any], *, ai_task: bool = False) -> MockConfigEntry:
    """The model entry with one conversation agent (its options), and an AI task if asked."""
    ai_tasks = [
        {
            "data": default_ai_task_options(),
            "subentry_type": SUBENTRY_AI_TASK,
            "title": "RKLLM AI task",
            "unique_id": None,
        }
    ]
    return MockConfigEntry(
        domain=DOMAIN,
        title="qwen",
        minor_version=2,
        data=data,
        subentries_data=[
            {
                "data": options,
                "subentry_type": SUBENTRY_CONVERSATION,
                "title": "RKLLM conversation",
                "unique_id": None,
            },
            *(ai_tasks if ai_task else []),
        ],
    )


async def run(
    mode: str,
    kv_mode: KVMode,
    library: Path,
    workdir: Path,
    *,
    action_speech: bool = True,
    prepare: bool = True,
) -> tuple[Recorder, Timer, Speaker]:
    """The workload with one KV strategy (the entry's option), in a fresh Home Assistant."""
    model = EmulatedModel(
        rules=model_rules(), name="qwen2.5-1.5b-emulated", prefill_tps=PREFILL_TPS, decode_tps=DECODE_TPS
    ).write(workdir / "qwen2.5-1.5b.rkllm")
    config_dir = workdir / f"config-{mode}-{kv_mode}"
    config_dir.mkdir()
    recorder = Recorder()
    timer = Timer(recorder)
    speaker = Speaker()
    server = None
    if mode == MODE_SERVER:
        server = ServerProcess(
            library,
            "qwen2.5",
            model,
            params=ModelParams(max_context_len=4096),
            kv_mode=kv_mode,
            prompt_cache_dir=workdir / "server",
        )
        await server.start(300)
    try:
        async with async_test_home_assistant(config_dir=str(config_dir)) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            await build_home(hass)
            entry = agent_entry(
                entry_data(mode, kv_mode, library, model, server),
                {**default_conversation_options(), "max_history": 10, "action_speech": action_speech},
                ai_task=True,
            )
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            attach(entry, recorder, timer)
            await workload(hass, entry, recorder, timer, speaker, prepare=prepare)
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    finally:
        engine_module.plan = ORIGINAL_PLAN
        speaker.close()
        if server is not None:
            await server.stop()
    return recorder, timer, speaker


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(by_mode: dict[KVMode, list[Run]]) -> dict[str, Any]:
    """Per strategy: the cold start, each kind of warm request, and the first request after a restart."""
    summary: dict[str, Any] = {}
    for mode, runs in by_mode.items():
        kinds: dict[str, list[Run]] = defaultdict(list)
        for index, item in enumerate(runs):
            kinds[COLD if index == 0 else item.kind].append(item)
        table = {}
        for kind, items in kinds.items():
            prefill = [float(r.result.perf.prefill_tokens) for r in items]
            ttft = [r.result.perf.prefill_time_ms + r.load_ms for r in items]
            table[kind] = {
                "runs": len(items),
                "new_tokens_p50": pct([float(r.new_tokens) for r in items], 0.5),
                "prefill_p50": pct(prefill, 0.5),
                "prefill_p95": pct(prefill, 0.95),
                "ttft_ms_p50": round(pct(ttft, 0.5)),
                "ttft_ms_p95": round(pct(ttft, 0.95)),
            }
        warm = [r.result.perf.prefill_time_ms for r in runs[1:-1] if r.kind != TASK]
        restart = runs[-1]
        summary[mode.value] = {
            "kinds": table,
            "runs": len(runs),
            "cache_hit_ratio": round(sum(r.result.cache_hit for r in runs) / len(runs), 3),
            "cold_ttft_ms": round(runs[0].result.perf.prefill_time_ms),
            "cold_prefill_tokens": runs[0].result.perf.prefill_tokens,
            "warm_ttft_ms_p50": round(statistics.median(warm)),
            "warm_ttft_ms_p95": round(pct(warm, 0.95)),
            "after_restart_ttft_ms": round(restart.result.perf.prefill_time_ms + restart.load_ms),
            "after_restart_load_ms": round(restart.load_ms),
            "after_restart_prefill_tokens": restart.result.perf.prefill_tokens,
        }
    return summary


def report(summary: dict[str, Any]) -> None:
    print("Voice session, RK3588 timing of Qwen2.5-1.5B (simulated); TTFT includes prompt-cache loading")
    for mode, figures in summary.items():
        print(f"\n{mode}: {figures['runs']} engine runs, cache hit ratio {figures['cache_hit_ratio']:.0%}")
        print(f"{'request kind':36} {'runs':>4} {'new':>5} {'prefill p50/p95':>16} {'TTFT ms p50/p95':>16}")
        for kind, row in figures["kinds"].items():
            print(
                f"{kind:36} {row['runs']:>4} {row['new_tokens_p50']:>5.0f} "
                f"{row['prefill_p50']:>7.0f}/{row['prefill_p95']:<8.0f} "
                f"{row['ttft_ms_p50']:>7}/{row['ttft_ms_p95']:<8}"
            )
        print(
            f"cold {figures['cold_ttft_ms']} ms ({figures['cold_prefill_tokens']} tokens); "
            f"warm p50 {figures['warm_ttft_ms_p50']} ms, p95 {figures['warm_ttft_ms_p95']} ms; "
            f"first after restart {figures['after_restart_ttft_ms']} ms "
            f"({figures['after_restart_load_ms']} ms loading the prompt cache, "
            f"{figures['after_restart_prefill_tokens']} tokens prefilled)"
        )
        if figures["prepared"]:
            print(
                f"prepared while the user spoke: {figures['prepared']} times, "
                f"p50 {figures['prepared_ms_p50']} ms (prompt-cache load and prefill)"
            )


def ready_to_speak(speaker: Speaker) -> dict[str, dict[str, float]]:
    """Per request kind: ms from the command until the voice pipeline can speak (RK3588 time)."""
    kinds: dict[str, list[float]] = defaultdict(list)
    for index, (kind, ms) in enumerate(speaker.ready_ms):
        kinds[COLD if index == 0 else kind].append(ms)
    return {
        kind: {"replies": len(values), "p50": round(pct(values, 0.5)), "p95": round(pct(values, 0.95))}
        for kind, values in kinds.items()
    }


def report_ready(mode: str, ready: dict[str, dict[str, dict[str, float]]]) -> None:
    print(f"\n{mode}: ready to speak, ms from the command (RK3588 time), p50/p95")
    strategies = list(ready)
    print(f"{'request kind':36} " + " ".join(f"{name:>20}" for name in strategies))
    for kind in ready[strategies[0]]:
        cells = [f"{ready[s][kind]['p50']:>9}/{ready[s][kind]['p95']:<10}" for s in strategies]
        print(f"{kind:36} " + " ".join(cells))


def wall_clock(timer: Timer) -> dict[str, Any]:
    """Wall-clock time to first token at the agent: warm requests, and the first after the restart."""
    warm = [ms for kind, ms in timer.ttft_ms[1:-1] if kind != TASK]
    return {
        "replies": len(timer.ttft_ms),
        "cold_ttft_ms": round(timer.ttft_ms[0][1], 1),
        "warm_ttft_ms_p50": round(pct(warm, 0.5), 1),
        "warm_ttft_ms_p95": round(pct(warm, 0.95), 1),
        "after_restart_ttft_ms": round(timer.ttft_ms[-1][1], 1),
        "added_ms_p50": round(pct(timer.added_ms[1:-1], 0.5), 2),
        "added_ms_p95": round(pct(timer.added_ms[1:-1], 0.95), 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--abi", default="1.3", choices=["1.2", "1.3"])
    parser.add_argument("--mode", default=MODE_IN_PROCESS, choices=MODES, help="where the model runs")
    parser.add_argument(
        "--model-confirms",
        action="store_true",
        help="the model words each confirmation (a second run), default strategy only",
    )
    parser.add_argument(
        "--no-prepare",
        action="store_true",
        help="the agent is not prepared while the user speaks, default strategy only",
    )
    args = parser.parse_args()
    os.environ["RKLLM_EMU_TIME_SCALE"] = str(TIME_SCALE)
    os.environ["RKLLM_EMU_STORAGE_MBPS"] = str(STORAGE_MBPS)
    library = build_cached(args.abi)
    every = args.mode == MODE_IN_PROCESS and not args.model_confirms and not args.no_prepare
    strategies = list(KVMode) if every else [KVMode.CONSERVATIVE]
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            kv: await run(
                args.mode,
                kv,
                library,
                Path(tmp),
                action_speech=not args.model_confirms,
                prepare=not args.no_prepare,
            )
            for kv in strategies
        }
    summary: dict[str, Any] = {}
    if args.mode == MODE_IN_PROCESS:
        summary = summarise({kv: recorder.runs for kv, (recorder, _, _) in results.items()})
        for kv, (recorder, _, _) in results.items():
            prepared = recorder.warmed_ms
            summary[kv.value]["prepared_ms_p50"] = round(pct(prepared, 0.5)) if prepared else None
            summary[kv.value]["prepared"] = len(prepared)
        report(summary)
    ready = {kv.value: ready_to_speak(speaker) for kv, (_, _, speaker) in results.items()}
    report_ready(args.mode, ready)
    print(f"\nheard for a {FAILS}: {heard[FAILS]!r}")
    wall = {kv.value: wall_clock(timer) for kv, (_, timer, _) in results.items()}
    summary |= {
        "mode": args.mode,
        "action_speech": not args.model_confirms,
        "prepare": not args.no_prepare,
        "heard_when_the_call_fails": heard[FAILS],
        "time_scale": TIME_SCALE,
        "ready_to_speak": ready,
        "wall_clock": wall,
    }
    lines = [
        f"\n{args.mode}, {kv}: wall-clock time to first token at the agent "
        f"({figures['replies']} spoken replies, RK3588 time x {TIME_SCALE}): "
        f"cold {figures['cold_ttft_ms']} ms; warm p50 "
        f"{figures['warm_ttft_ms_p50']} ms, p95 {figures['warm_ttft_ms_p95']} ms; "
        f"first after restart {figures['after_restart_ttft_ms']} ms; added to the runtime's own prefill "
        f"time: p50 {figures['added_ms_p50']} ms, p95 {figures['added_ms_p95']} ms"
        for kv, figures in wall.items()
    ]
    publish(lines, summary)


if __name__ == "__main__":
    asyncio.run(main())
