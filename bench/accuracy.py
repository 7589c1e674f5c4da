"""Accuracy on a real model: how many everyday voice requests the assistant really does.

A real Home Assistant with a synthetic home (bench/accuracy_home.py: two floors, ten areas, 30
devices and sensors, a shopping list, timers on a satellite) hears each request of
bench/accuracy_cases.py as a new conversation from the kitchen satellite, after a reset of every
device, and the request is judged by the state it leaves, or by its reply for a question.

The model is Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the same architecture, tokenizer and tool-call
template as the Qwen2.5-1.5B-Instruct ``.rkllm`` files boards run), on the emulator's llama.cpp
engine at this CPU's own speed (two threads: the engine takes as many as the CPU mask asks for, at
most the machine's cores). Install it with
``uv sync --locked --extra server --python 3.14 --group accuracy-model``.

Targets: ``rkllm``, the integration's conversation agent with its default options (in Home
Assistant's process; ``--mode child`` runs the model in an rkllm-server child, which shares the
chat engine), and ``ollama``, Home Assistant's own Ollama integration (its recommended prompt and
Assist) against rkllm-server on the same engine and model. Each prints its pass rate per category,
the median prefill and decode per request, how often a request that acts was answered with a call
first, and each failure with the calls made and the reply.

Usage: uv run python bench/accuracy.py [--target rkllm|ollama ...] [--cases TEXT] [--limit N per category]
       [--json FILE] [--temperature T] [--top-k K] [--top-p P] [--repeat-penalty R]
       [--max-new-tokens N] [--context N] [--mode in_process|child] [--no-guidance]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ollama
import voice_session
from accuracy_cases import CASES, CATEGORIES, Case, judge, observe
from accuracy_home import Timers, build_home, reset
from homeassistant import loader
from homeassistant.components import conversation
from homeassistant.components.conversation.chat_log import async_subscribe_chat_logs
from homeassistant.components.conversation.const import ChatLogEventType
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import llm
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_test_home_assistant

from custom_components.rkllm import entity as entity_module
from custom_components.rkllm.const import (
    CONF_MAX_NEW_TOKENS,
    DEFAULT_MAX_CONTEXT_LEN,
    DEFAULT_MAX_NEW_TOKENS,
    DOMAIN,
    MODE_CHILD,
    MODE_IN_PROCESS,
)
from custom_components.rkllm.schemas import default_conversation_options
from rkllm_runtime import ModelParams
from rkllm_runtime.chat import ChatEvent, ChatStream, Finished, KVMode
from rkllm_runtime.emulator import build_cached
from rkllm_runtime.emulator.build import cache_dir
from rkllm_runtime.emulator.real_model import qwen_coder_model
from rkllm_runtime.server.child import ServerProcess
from tests.ollama_entry import ollama_entry

TARGETS = ("rkllm", "ollama")
AGENTS = {"rkllm": "conversation.rkllm_conversation", "ollama": "conversation.ollama_conversation"}
MODEL = "qwen2.5-coder:1.5b"
OLLAMA_NUM_CTX = 8192  # the context Home Assistant's Ollama integration asks for by default
SAMPLING = ("temperature", "top_k", "top_p", "repeat_penalty")
MAX_NEW_TOKENS = 128  # a call, a confirmation or an answer fits; a rambling reply costs less CPU time
FIRST_CASE_TIMEOUT_S = 3600.0  # it reads the whole Assist prompt first


@dataclass
class Run:
    """One model run: tokens and milliseconds of its prefill and decode."""

    prefill_tokens: int
    prefill_ms: float
    decode_tokens: int
    decode_ms: float


@dataclass
class Outcome:
    """A request, its verdict and what happened."""

    category: str
    text: str
    passed: bool
    why: str
    reply: str
    transcript: list[str]
    starts_with_call: bool
    runs: list[Run] = field(default_factory=list)


class Transcript:
    """The calls, results and replies of the conversation under way, as Home Assistant's chat log gets them.

    Its subscribers hear of tool results and of replies added without tools; a turn of the model
    is heard where the chat log takes it.
    """

    def __init__(self, hass: HomeAssistant) -> None:
        self.lines: list[str] = []
        self.first_is_call: bool | None = None
        unsubscribe = async_subscribe_chat_logs(hass, self._on_event)
        original = conversation.ChatLog.async_add_assistant_content

        def heard(chat_log: conversation.ChatLog, content: Any, /, **kwargs: Any) -> Any:
            self._assistant(content.content, content.tool_calls)
            return original(chat_log, content, **kwargs)

        conversation.ChatLog.async_add_assistant_content = heard  # type: ignore[method-assign]

        def close() -> None:
            unsubscribe()
            conversation.ChatLog.async_add_assistant_content = original  # type: ignore[method-assign]

        self.close = close

    def start(self) -> None:
        self.lines, self.first_is_call = [], None

    def _assistant(self, text: str | None, calls: list[llm.ToolInput] | None) -> None:
        text, calls = (text or "").strip(), calls or []
        if self.first_is_call is None:
            self.first_is_call = bool(calls) and not text
        if text:
            self.lines.append(f"said: {text}")
        self.lines += [f"call: {c.tool_name} {json.dumps(c.tool_args, ensure_ascii=False)}" for c in calls]

    def _on_event(self, _conversation_id: str, event: ChatLogEventType, data: dict[str, Any]) -> None:
        if event is not ChatLogEventType.CONTENT_ADDED:
            return
        content = data["content"]
        if content["role"] == "assistant":
            self._assistant(content.get("content"), content.get("tool_calls"))
        elif content["role"] == "tool_result":
            result = json.dumps(content["result"].get("data"), ensure_ascii=False)
            self.lines.append(f"result: {result[:300]}")


class Meter:
    """Prefill and decode of each model run, from the engine's own figures."""

    def __init__(self) -> None:
        self.runs: list[Run] = []

    def engine(self, engine: Any) -> None:
        """The integration's engine (in Home Assistant's process or a client of its child)."""
        chat: Callable[..., ChatStream] = engine.chat

        async def measured(stream: ChatStream) -> AsyncIterator[ChatEvent]:
            async with stream:
                async for event in stream:
                    if isinstance(event, Finished):
                        perf = event.result.perf
                        self.runs.append(
                            Run(
                                perf.prefill_tokens,
                                perf.prefill_time_ms,
                                perf.generate_tokens,
                                perf.generate_time_ms,
                            )
                        )
                    yield event

        engine.chat = lambda request: ChatStream(measured(chat(request)))

    def ollama(self, client: ollama.AsyncClient) -> None:
        """Home Assistant's Ollama client: the figures of the last chunk of each reply."""
        chat = client.chat

        async def measured(chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for chunk in chunks:
                if chunk.done:
                    self.runs.append(
                        Run(
                            chunk.prompt_eval_count or 0,
                            (chunk.prompt_eval_duration or 0) / 1e6,
                            chunk.eval_count or 0,
                            (chunk.eval_duration or 0) / 1e6,
                        )
                    )
                yield chunk

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            return measured(await chat(*args, **kwargs))

        client.chat = wrapped  # type: ignore[method-assign]


async def run_cases(  # noqa: PLR0917
    hass: HomeAssistant,
    agent: str,
    satellite: str,
    timers: Timers,
    meter: Meter,
    cases: list[Case],
    timeout_s: float,
) -> list[Outcome]:
    """Each request as a new conversation after a reset, judged."""
    transcript = Transcript(hass)
    outcomes = []
    try:
        for number, case in enumerate(cases, 1):
            await reset(hass, timers)
            before = observe(hass)
            transcript.start()
            meter.runs = []
            try:
                result = await asyncio.wait_for(
                    conversation.async_converse(
                        hass, case.text, None, Context(), agent_id=agent, device_id=satellite
                    ),
                    FIRST_CASE_TIMEOUT_S if number == 1 else timeout_s,
                )
                reply = result.response.speech.get("plain", {}).get("speech", "")
            except TimeoutError:
                reply = "(no reply in time)"
            except (HomeAssistantError, ollama.ResponseError) as err:
                reply = f"(failed: {err})"
            await hass.async_block_till_done()
            why = judge(case, hass, before, reply, timers)
            outcome = Outcome(
                case.category,
                case.text,
                why is None,
                why or "",
                reply,
                transcript.lines,
                bool(transcript.first_is_call),
                meter.runs,
            )
            outcomes.append(outcome)
            mark = "pass" if outcome.passed else f"FAIL ({outcome.why})"
            runs = ", ".join(
                f"{r.prefill_tokens}+{r.decode_tokens} t {(r.prefill_ms + r.decode_ms) / 1000:.0f} s"
                for r in outcome.runs
            )
            print(f"[{number}/{len(cases)}] {case.category}: {case.text!r} {mark} [{runs}]", flush=True)
            if not outcome.passed:
                for line in [*outcome.transcript, f"reply: {reply!r}"]:
                    print(f"    {line}", flush=True)
    finally:
        transcript.close()
    return outcomes


@dataclass(frozen=True)
class Settings:
    """What a run is configured with."""

    context: int  # 0: each target's default
    max_new_tokens: int
    sampling: dict[str, float]
    mode: str
    timeout_s: float = 120.0  # a request that takes longer fails (the first one has an hour)


async def run_target(  # noqa: PLR0917
    target: str,
    cases: list[Case],
    settings: Settings,
    library: Path,
    model: Path,
    workdir: Path,
    prompt_caches: Path | None = None,
) -> list[Outcome]:
    """One target, in a fresh Home Assistant.

    With ``prompt_caches``, the system prompt's prompt-cache files are kept there between runs
    (each target in a folder of its own), so only a run with a new prompt reads it in full.
    """
    config_dir = workdir / f"config-{target}"
    config_dir.mkdir()
    kept = None
    if prompt_caches is not None:
        kept = prompt_caches / target
        kept.mkdir(parents=True, exist_ok=True)
        if target == "rkllm":
            (config_dir / ".storage" / DOMAIN).mkdir(parents=True)
            (config_dir / ".storage" / DOMAIN / "prompt_cache").symlink_to(kept)
    server = None
    if target == "ollama":
        server = ServerProcess(
            library,
            MODEL,
            model,
            params=ModelParams(max_context_len=settings.context or OLLAMA_NUM_CTX),
            kv_mode=KVMode.CONSERVATIVE,
            prompt_cache_dir=kept,
            max_tokens=settings.max_new_tokens,
        )
        await server.start(600)
    timers = Timers()
    meter = Meter()
    try:
        async with async_test_home_assistant(config_dir=str(config_dir)) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            satellite = await build_home(hass, timers)
            entry = agent_entry(target, settings, library, model, server)
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            if target == "ollama":
                meter.ollama(entry.runtime_data)
            else:
                meter.engine(entry.runtime_data.engine)
            outcomes = await run_cases(
                hass, AGENTS[target], satellite, timers, meter, cases, settings.timeout_s
            )
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    finally:
        if server is not None:
            await server.stop()
    return outcomes


def agent_entry(
    target: str, settings: Settings, library: Path, model: Path, server: ServerProcess | None
) -> MockConfigEntry:
    """The target's config entry: the integration's defaults, or Home Assistant's Ollama integration."""
    if server is not None:
        return ollama_entry(server.url, server.api_key, MODEL, llm.DEFAULT_INSTRUCTIONS_PROMPT)
    data = voice_session.entry_data(settings.mode, KVMode.CONSERVATIVE, library, model, None)
    options = default_conversation_options() | settings.sampling
    if settings.max_new_tokens != DEFAULT_MAX_NEW_TOKENS:
        options[CONF_MAX_NEW_TOKENS] = settings.max_new_tokens
    context = settings.context or DEFAULT_MAX_CONTEXT_LEN
    return voice_session.agent_entry({**data, "max_context_len": context}, options)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """Pass rates per category, calls first, and the model's speed (the first run, reading the
    system prompt, apart)."""
    per_category = {}
    for category in CATEGORIES:
        mine = [o for o in outcomes if o.category == category]
        if mine:
            per_category[category] = [sum(o.passed for o in mine), len(mine)]
    acting = [o for o in outcomes if next(c for c in CASES if c.text == o.text).acts]
    runs = [run for o in outcomes for run in o.runs]
    warm = runs[1:]
    per_case = [o.runs for o in outcomes[1:] if o.runs]
    return {
        "passed": sum(o.passed for o in outcomes),
        "cases": len(outcomes),
        "categories": per_category,
        "calls_first": [sum(o.starts_with_call for o in acting), len(acting)],
        "cold_prefill": asdict(runs[0]) if runs else None,
        "median_per_request": {
            "runs": median([len(r) for r in per_case]),
            "prefill_tokens": median([sum(x.prefill_tokens for x in r) for r in per_case]),
            "prefill_ms": round(median([sum(x.prefill_ms for x in r) for r in per_case])),
            "decode_tokens": median([sum(x.decode_tokens for x in r) for r in per_case]),
            "decode_ms": round(median([sum(x.decode_ms for x in r) for r in per_case])),
        },
        "prefill_tokens_per_s": round(
            sum(r.prefill_tokens for r in warm) * 1000 / max(1.0, sum(r.prefill_ms for r in warm)), 1
        ),
        "decode_tokens_per_s": round(
            sum(r.decode_tokens for r in warm) * 1000 / max(1.0, sum(r.decode_ms for r in warm)), 1
        ),
    }


def report(results: dict[str, dict[str, Any]]) -> None:
    """One table of every target (each failure was printed as it happened)."""
    targets = list(results)
    print(f"\n{'category':18} " + " ".join(f"{t:>14}" for t in targets))
    for category in CATEGORIES:
        cells = []
        for t in targets:
            passed, total = results[t]["summary"]["categories"].get(category, [0, 0])
            cells.append(f"{passed:>3}/{total:<3} {passed / total:>5.0%}" if total else f"{'-':>14}")
        if any(c.strip() != "-" for c in cells):
            print(f"{category:18} " + " ".join(f"{c:>14}" for c in cells))
    rows = {
        "all": lambda s: f"{s['passed']:>3}/{s['cases']:<3} {s['passed'] / s['cases']:>5.0%}",
        "call first": lambda s: (
            f"{s['calls_first'][0]:>3}/{s['calls_first'][1]:<3} "
            f"{s['calls_first'][0] / max(1, s['calls_first'][1]):>5.0%}"
        ),
        "prefill/request": lambda s: (
            f"{s['median_per_request']['prefill_tokens']:.0f} t "
            f"{s['median_per_request']['prefill_ms'] / 1000:.1f} s"
        ),
        "decode/request": lambda s: (
            f"{s['median_per_request']['decode_tokens']:.0f} t "
            f"{s['median_per_request']['decode_ms'] / 1000:.1f} s"
        ),
        "prefill tok/s": lambda s: f"{s['prefill_tokens_per_s']}",
        "decode tok/s": lambda s: f"{s['decode_tokens_per_s']}",
        "first prefill": lambda s: (
            f"{s['cold_prefill']['prefill_tokens']} t {s['cold_prefill']['prefill_ms'] / 1000:.0f} s"
            if s["cold_prefill"]
            else "-"
        ),
    }
    for name, cell in rows.items():
        print(f"{name:18} " + " ".join(f"{cell(results[t]['summary']):>14}" for t in targets))


def chosen_cases(text: str, per_category: int) -> list[Case]:
    """The cases whose category or sentence holds ``text`` (case-insensitive), the first
    ``per_category`` of each category (0: all)."""
    cases = [c for c in CASES if text.lower() in c.category.lower() or text.lower() in c.text.lower()]
    if per_category:
        cases = [c for c in cases if [d for d in cases if d.category == c.category].index(c) < per_category]
    return cases


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", action="append", choices=TARGETS, help="(repeatable; default: both)")
    parser.add_argument("--cases", default="", help="only cases whose category or sentence holds this")
    parser.add_argument("--limit", type=int, default=0, help="at most this many cases of each category")
    parser.add_argument("--json", type=Path, help="save the results to this file")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--repeat-penalty", type=float)
    parser.add_argument(
        "--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="longest reply, both targets"
    )
    parser.add_argument(
        "--context",
        type=int,
        default=0,
        help=f"max_context_len (default: each target's own, {DEFAULT_MAX_CONTEXT_LEN} and {OLLAMA_NUM_CTX})",
    )
    parser.add_argument("--mode", default=MODE_IN_PROCESS, choices=[MODE_IN_PROCESS, MODE_CHILD])
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="llama.cpp threads (2 spin at each step when the CPU is shared)",
    )
    parser.add_argument(
        "--no-guidance", action="store_true", help="the system prompt without the tool guidance (a variant)"
    )
    args = parser.parse_args()
    if args.no_guidance:
        entity_module.tool_guidance = lambda _names: ""  # the integration builds its prompt in this process
    os.environ["RKLLM_EMU_THREADS"] = str(args.threads)
    targets = args.target or list(TARGETS)
    sampling = {key: getattr(args, key) for key in SAMPLING if getattr(args, key) is not None}
    if sampling and "ollama" in targets:
        parser.error("Home Assistant's Ollama integration sends no sampling options: use --target rkllm")
    cases = chosen_cases(args.cases, args.limit)
    settings = Settings(args.context, args.max_new_tokens, sampling, args.mode, args.timeout)
    library = build_cached("1.3", engine="llama")
    model = qwen_coder_model(cache_dir())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target in targets:
            started = time.monotonic()
            outcomes = await run_target(
                target, cases, settings, library, model, Path(tmp), cache_dir() / "accuracy-prompt-cache"
            )
            results[target] = {
                "settings": asdict(settings) | {"model": model.name},
                "minutes": round((time.monotonic() - started) / 60, 1),
                "summary": summarise(outcomes),
                "outcomes": [asdict(o) for o in outcomes],
            }
            if args.json:  # after each target: a later one may take long
                args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    report(results)
    print(json.dumps({target: result["summary"] for target, result in results.items()}))


if __name__ == "__main__":
    asyncio.run(main())
