"""Output that must follow a grammar, on a real model: valid first time, after the retry, or not at all.

``bench/constrained.py --real`` runs these requests through the chat engine on the accuracy
benchmark's model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M on the emulator's llama engine, see
bench/accuracy.py), each once decoded under its grammar (the model's ``tokenizer.json`` beside it,
converted from the GGUF's own vocabulary) and once checked and asked again (no ``tokenizer.json``):
Ollama-style ``format`` schemas, ``"json"`` and ``tool_choice`` required or named calls with
Assist-like tools. Decoding is greedy. A request is valid when its JSON follows its schema, or its
call names a tool it had to call with arguments that follow that tool's schema.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from jsonschema import validators

from rkllm_runtime import ModelParams, RKLLMRuntime, Sampling
from rkllm_runtime.chat import ChatEngine, ChatRequest, ChatResult, Message
from rkllm_runtime.chat.messages import ToolSpec
from rkllm_runtime.chat.retry import UnfitReplyError
from rkllm_runtime.chat.structured import ANY_OBJECT, answer
from rkllm_runtime.chat.tool_choice import answer_with_call

KINDS = ("format", "json", "tool")
GREEDY = Sampling(temperature=0.0, top_k=1, repeat_penalty=1.0)
MAX_NEW_TOKENS = 256
CONTEXT = 2048
SYSTEM = """You are the voice assistant of a home. Answer briefly.
The home now:
- Kitchen: ceiling light on at 80 %, counter lights off, coffee machine off
- Living room: lamp on, TV playing the evening news, 21.5 °C, thermostat set to 21 °C
- Bedroom: bedside lamp off, ceiling fan on
- Hallway: light on, front door locked, back door unlocked
- Garage: light off, garage door closed
- Porch: light off
- Outside: 12 °C, cloudy
- Timers: pasta, 4 minutes left
- Shopping list: milk, eggs"""

# RK3588 figures: Rockchip's Qwen2.5-1.5B (airockchip/rknn-llm benchmark.md, 1.3.0), and what
# bench/constrained.py measures a constrained run at against a free token (README, Benchmarks).
RK3588_PREFILL_MS = 378 / 128
RK3588_DECODE_MS = 1000 / 16.7
CONSTRAINED_RUN = 1.05


def _object(required: Sequence[str] = (), **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


TEXT = {"type": "string"}
WHOLE = {"type": "integer"}
PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
ON_OFF = {"enum": ["on", "off"]}
TARGET = {"name": TEXT, "area": TEXT, "floor": TEXT, "domain": {"type": "array", "items": TEXT}}
TOOLS = [
    ToolSpec("HassTurnOn", _object(**TARGET), "Turns on/opens a device or entity"),
    ToolSpec("HassTurnOff", _object(**TARGET), "Turns off/closes a device or entity"),
    ToolSpec(
        "HassLightSet",
        _object(**TARGET, brightness=PERCENT, color=TEXT, temperature=WHOLE),
        "Sets the brightness or color of a light",
    ),
    ToolSpec(
        "HassStartTimer",
        _object(hours=WHOLE, minutes=WHOLE, seconds=WHOLE, name=TEXT),
        "Starts a new timer",
    ),
    ToolSpec("HassListAddItem", _object(["item", "name"], item=TEXT, name=TEXT), "Add item to a todo list"),
    ToolSpec(
        "HassClimateSetTemperature",
        _object(["temperature"], temperature={"type": "number"}, area=TEXT, name=TEXT),
        "Sets the target temperature of a climate device or entity",
    ),
    ToolSpec("HassMediaPause", _object(**TARGET), "Pauses a media player"),
    ToolSpec("HassGetState", _object(**TARGET, state=TEXT), "Gets the current state of devices or entities"),
]
ALL_TOOLS = tuple(tool.name for tool in TOOLS)


@dataclass(frozen=True)
class Request:
    """One request whose reply must follow a grammar: a schema, or a call of one of ``names``."""

    kind: str
    text: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] = ()


def _format(text: str, schema: Mapping[str, Any]) -> Request:
    return Request("format", text, schema)


def _json(text: str) -> Request:
    return Request("json", text, ANY_OBJECT)


def _tool(text: str, *names: str) -> Request:
    return Request("tool", text, names=names or ALL_TOOLS)


REQUESTS = (
    _format(
        "Summarise the home.",
        _object(
            ["lights_on", "doors_unlocked", "summary"],
            lights_on=WHOLE,
            doors_unlocked={"type": "array", "items": TEXT},
            summary=TEXT,
        ),
    ),
    _format(
        "List every light and whether it is on.",
        _object(
            ["lights"],
            lights={
                "type": "array",
                "items": _object(["name", "area", "state"], name=TEXT, area=TEXT, state=ON_OFF),
            },
        ),
    ),
    _format(
        "Set a timer for 1 hour 20 minutes for the roast.",
        _object(["hours", "minutes", "seconds"], hours=WHOLE, minutes=WHOLE, seconds=WHOLE, name=TEXT),
    ),
    _format(
        "What is the temperature in the living room?",
        _object(
            ["area", "temperature", "unit"],
            area=TEXT,
            temperature={"type": "number"},
            unit={"enum": ["°C", "°F"]},
        ),
    ),
    _format(
        "Turn off the bedroom fan.",
        _object(
            ["intent", "target"],
            intent={"enum": ["turn_on", "turn_off", "set_brightness", "query", "other"]},
            target=TEXT,
        ),
    ),
    _format(
        "Add bread, butter and two lemons to the shopping list.",
        _object(
            ["items"],
            items={
                "type": "array",
                "items": _object(["item", "quantity"], item=TEXT, quantity={"type": "integer", "minimum": 1}),
                "minItems": 1,
            },
        ),
    ),
    _format(
        "Which doors are unlocked?",
        _object(
            ["unlocked", "all_locked"],
            unlocked={"type": "array", "items": TEXT},
            all_locked={"type": "boolean"},
        ),
    ),
    _format(
        "Dim the kitchen ceiling light to 30 percent.",
        _object(["entity", "brightness"], entity=TEXT, brightness=PERCENT),
    ),
    _format(
        "Remind me to water the plants tomorrow at 8 am.",
        _object(
            ["task", "day", "time"],
            task=TEXT,
            day={"enum": ["today", "tomorrow"]},
            time={"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
        ),
    ),
    _format(
        "Make the living room cosy for a movie.",
        _object(
            ["actions"],
            actions={
                "type": "array",
                "items": _object(["entity", "state"], entity=TEXT, state=ON_OFF, brightness=PERCENT),
                "minItems": 1,
            },
        ),
    ),
    _json("Give me the state of the kitchen as JSON."),
    _json("Which timers are running? Answer in JSON."),
    _json("What is on the shopping list? Answer in JSON."),
    _json("Describe the living room in JSON."),
    _json("Is the garage door open? Answer in JSON."),
    _tool("Turn on the porch light"),
    _tool("Switch off the hallway light"),
    _tool("Dim the kitchen ceiling light to 30 percent", "HassLightSet"),
    _tool("Set a timer for 5 minutes"),
    _tool("Add milk to my shopping list", "HassListAddItem"),
    _tool("Turn on the coffee machine"),
    _tool("Set the living room to 22 degrees", "HassClimateSetTemperature"),
    _tool("Pause the TV in the living room"),
    _tool("Turn off the lights in the living room", "HassTurnOff"),
    _tool("Is the front door locked?", "HassGetState"),
)


@dataclass
class Attempt:
    """One answer of the model: its tokens and whether it was decoded under the grammar."""

    prefill_tokens: int
    generate_tokens: int
    constrained: bool


@dataclass
class Outcome:
    """A request, how many answers it took and whether the last one was valid."""

    kind: str
    text: str
    decoded: bool
    valid: bool
    attempts: list[Attempt]
    wall_s: float
    reply: str

    @property
    def rk3588_s(self) -> float:
        """What its runs would take on an RK3588: prefill, then free or constrained decode steps."""
        return (
            sum(
                a.prefill_tokens * RK3588_PREFILL_MS
                + a.generate_tokens * RK3588_DECODE_MS * (CONSTRAINED_RUN if a.constrained else 1)
                for a in self.attempts
            )
            / 1000
        )


def valid_call(result: ChatResult, names: Sequence[str]) -> bool:
    """Whether the reply's first call names one of ``names`` with arguments that follow its tool's schema."""
    tools = {tool.name: tool for tool in TOOLS}
    calls = [call for call in result.tool_calls if call.name in names]
    if not calls:
        return False
    schema = tools[calls[0].name].parameters
    return validators.validator_for(schema)(schema).is_valid(calls[0].arguments)


async def ask_once(engine: ChatEngine, attempts: list[Attempt], request: ChatRequest) -> ChatResult:
    """One answer of the engine, its tokens noted."""
    async with engine.chat(request) as stream:
        async for _ in stream:
            pass
    result = stream.result
    assert result is not None
    attempts.append(Attempt(result.perf.prefill_tokens, result.perf.generate_tokens, result.constrained))
    return result


async def run_request(engine: ChatEngine, request: Request, decoded: bool) -> Outcome:
    """The request through the engine's own check and retry, judged."""
    attempts: list[Attempt] = []
    asked = ChatRequest(
        SYSTEM,
        [Message("user", request.text)],
        tools=TOOLS if request.kind == "tool" else (),
        sampling=GREEDY,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    ask = partial(ask_once, engine, attempts)
    started = time.perf_counter()
    try:
        if request.kind == "tool":
            result = await answer_with_call(ask, asked, request.names)
            valid, reply = valid_call(result, request.names), " ".join(c.as_text() for c in result.tool_calls)
        else:
            result, _ = await answer(ask, asked, request.schema)
            valid, reply = True, result.text
    except UnfitReplyError as err:
        valid, reply = False, f"({err})"
    return Outcome(request.kind, request.text, decoded, valid, attempts, time.perf_counter() - started, reply)


async def measure(
    library: Path, model: Path, tokenizer: Path | None, requests: Sequence[Request], workdir: Path
) -> list[Outcome]:
    """Every request on ``model``, decoded under its grammar with ``tokenizer`` beside it, else checked."""
    folder = workdir / ("decoded" if tokenizer else "checked")
    folder.mkdir()
    (folder / model.name).symlink_to(model)
    if tokenizer is not None:
        (folder / "tokenizer.json").symlink_to(tokenizer)
    outcomes = []
    with RKLLMRuntime.open(library, folder / model.name, ModelParams(max_context_len=CONTEXT)) as runtime:
        engine = ChatEngine(runtime)
        try:
            for number, request in enumerate(requests, 1):
                outcome = await run_request(engine, request, tokenizer is not None)
                outcomes.append(outcome)
                mark = "valid" if outcome.valid else "FAILED"
                tokens = "+".join(str(a.generate_tokens) for a in outcome.attempts)
                print(
                    f"[{folder.name} {number}/{len(requests)}] {request.kind}: {request.text!r} {mark} "
                    f"after {len(outcome.attempts)} ({tokens} t, {outcome.wall_s:.0f} s): "
                    f"{outcome.reply[:160]!r}",
                    flush=True,
                )
        finally:
            await engine.aclose()
    return outcomes


def summarise(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Any]]:
    """Per kind: valid first time, valid after the retry, failed, median tokens, wall and RK3588 seconds."""
    summary = {}
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        if not mine:
            continue
        summary[kind] = {
            "requests": len(mine),
            "first": sum(o.valid and len(o.attempts) == 1 for o in mine),
            "retried": sum(o.valid and len(o.attempts) > 1 for o in mine),
            "failed": sum(not o.valid for o in mine),
            "tokens": statistics.median(sum(a.generate_tokens for a in o.attempts) for o in mine),
            "wall_s": round(statistics.median(o.wall_s for o in mine), 1),
            "rk3588_s": round(statistics.median(o.rk3588_s for o in mine), 2),
            "constrained": sum(all(a.constrained for a in o.attempts) for o in mine),
        }
    return summary


def report(checked: dict[str, dict[str, Any]], decoded: dict[str, dict[str, Any]]) -> None:
    """One table: each kind checked and decoded, and the decoded/checked cost at RK3588 timing."""
    columns = ("valid 1st", "after retry", "failed", "tokens", "wall s", "RK3588 s")
    print(f"\n{'kind':7} {'mode':8} " + " ".join(f"{c:>11}" for c in columns))
    for kind in KINDS:
        for mode, summary in (("checked", checked), ("decoded", decoded)):
            if kind in summary:
                s = summary[kind]
                cells = (f"{s['first']}/{s['requests']}", s["retried"], s["failed"], s["tokens"], s["wall_s"])
                print(f"{kind:7} {mode:8} " + " ".join(f"{c:>11}" for c in (*cells, s["rk3588_s"])))
        if kind in checked and kind in decoded and checked[kind]["rk3588_s"]:
            ratio = decoded[kind]["rk3588_s"] / checked[kind]["rk3588_s"]
            print(f"{kind:7} decoded/checked per request at RK3588 timing: {ratio:.2f}x")
