"""What rkllm-server adds: the voice session through the server against the engine in-process.

First, the workload of bench/voice_session.py runs through the Assist agent of a real
Home Assistant, and every request the integration makes of the engine is recorded (the
real Assist prompt and tool schemas). Then those requests are replayed twice, as a
stateless client sends them (the whole conversation, no conversation id): to a
ChatEngine in this process, and to an rkllm-server process over HTTP (Ollama's
streaming /api/chat, loopback). Both use a fresh emulator at Qwen2.5-1.5B's RK3588
speeds, at real time (no time scale): a reply streams at 16.7 tokens/s.

- time to first token: request sent to first event received (text or tool call); the
  server's added latency is the paired difference, request by request;
- tokens/s delivered: text chunks per second as the consumer receives them, over a
  long reply added at the end (256 tokens, the agent's limit), against the rate the
  runtime reports.

The server is measured with two clients: aiohttp (Home Assistant's own HTTP session) and
the official ollama package (httpx), which Home Assistant's Ollama integration uses. That
package keeps only the JSON-schema keys it knows in tool parameters, so the recorded tools
are passed through it first and all paths read the same prompts.

Usage: uv run python bench/server.py [--abi 1.3] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import ollama
from homeassistant import loader
from pytest_homeassistant_custom_component.common import MockConfigEntry, async_test_home_assistant

import custom_components.rkllm as integration
from custom_components.rkllm.const import DOMAIN, SUBENTRY_CONVERSATION
from custom_components.rkllm.local_engine import LocalEngine
from custom_components.rkllm.schemas import default_conversation_options
from rkllm_runtime import ModelParams, PerfStats, RKLLMRuntime
from rkllm_runtime.chat import (
    ChatEngine,
    ChatRequest,
    ChatResult,
    ChatStream,
    Message,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached

sys.path.insert(0, str(Path(__file__).parent))
import voice_session

MODEL = "qwen2.5:1.5b"
STORY = Rule(match="tell me a story", reply="Once upon a time " + "there was a light. " * 60)


class RecordingEngine(LocalEngine):
    """The integration's engine, keeping every request it is asked."""

    requests: list[ChatRequest] = []  # noqa: RUF012  (one recording per run)

    def chat(self, request: ChatRequest) -> ChatStream:
        RecordingEngine.requests.append(request)
        return super().chat(request)


async def record(library: Path, model: Path, workdir: Path) -> list[ChatRequest]:
    """The requests the voice session makes (at a small time scale: only their content matters)."""
    os.environ["RKLLM_EMU_TIME_SCALE"] = "0.05"
    original = integration.LocalEngine
    integration.LocalEngine = functools.partial(RecordingEngine)  # type: ignore[misc]
    try:
        async with async_test_home_assistant(config_dir=str(workdir / "config")) as hass:
            hass.data.pop(loader.DATA_CUSTOM_COMPONENTS)
            await voice_session.build_home(hass)
            entry = MockConfigEntry(
                domain=DOMAIN,
                title="qwen",
                data={"library_path": str(library), "model_path": str(model), "max_context_len": 4096,
                      "advanced": {}},
                subentries_data=[
                    {"data": {**default_conversation_options(), "max_history": 10},
                     "subentry_type": SUBENTRY_CONVERSATION, "title": "RKLLM conversation", "unique_id": None}
                ],
            )  # fmt: skip
            entry.add_to_hass(hass)
            assert await hass.config_entries.async_setup(entry.entry_id)
            await hass.async_block_till_done()
            recorder = voice_session.Recorder()
            await voice_session.workload(hass, entry, recorder, voice_session.Timer(recorder), None)
            voice_session.engine_module.plan = voice_session.ORIGINAL_PLAN  # the recorder's spy
            await hass.config_entries.async_unload(entry.entry_id)
            await hass.async_stop(force=True)
    finally:
        integration.LocalEngine = original  # type: ignore[misc]
    return [
        replace(request, conversation_id=None, tools=as_ollama_sends(request.tools))
        for request in RecordingEngine.requests
    ]


def as_ollama_sends(tools: Sequence[ToolSpec]) -> list[ToolSpec]:
    """The tools as the ollama package sends them: its Tool model keeps only the schema keys it knows.

    Every path gets these, so all three read the same prompt.
    """
    specs = []
    for tool in tools:
        function = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        kept = ollama.Tool.model_validate({"type": "function", "function": function})
        dumped = kept.model_dump(exclude_none=True, by_alias=True)["function"]
        specs.append(ToolSpec(dumped["name"], dumped.get("parameters", {}), dumped.get("description", "")))
    return specs


@dataclass
class Timing:
    """One replayed request, as its consumer saw it (seconds, perf_counter)."""

    sent: float
    first_event: float
    chunks: list[float]
    result: ChatResult

    @property
    def ttft_ms(self) -> float:
        return (self.first_event - self.sent) * 1000


async def in_process(library: Path, model: Path, requests: list[ChatRequest]) -> list[Timing]:
    runtime = await asyncio.to_thread(RKLLMRuntime.open, library, model, ModelParams(max_context_len=4096))
    engine = ChatEngine(runtime)
    timings = []
    try:
        for request in requests:
            sent, first, chunks = time.perf_counter(), 0.0, []
            async with engine.chat(request) as stream:
                async for event in stream:
                    now = time.perf_counter()
                    if isinstance(event, TextDelta | ToolCallDelta) and not first:
                        first = now
                    if isinstance(event, TextDelta):
                        chunks.append(now)
            assert stream.result is not None
            timings.append(Timing(sent, first, chunks, stream.result))
    finally:
        await engine.aclose()
    return timings


def ollama_body(request: ChatRequest) -> dict[str, Any]:
    """The request as an Ollama client sends it."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system_prompt}]
    for message in request.messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": c.name, "arguments": c.arguments}} for c in message.tool_calls
            ]
        if message.name:
            item["tool_name"] = message.name
        messages.append(item)
    tools = [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in request.tools
    ]
    options: dict[str, Any] = {"num_predict": request.max_new_tokens or None}
    if (sampling := request.sampling) is not None:
        options |= {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p,
                    "repeat_penalty": sampling.repeat_penalty}  # fmt: skip
    return {"model": MODEL, "messages": messages, "tools": tools, "options": options, "stream": True,
            "think": request.enable_thinking}  # fmt: skip


def start_server(library: Path, model: Path, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "rkllm_runtime.server", "--library", str(library),
               "--model", f"{MODEL}={model}", "--port", "0"]  # fmt: skip
    with (workdir / "server.log").open("a") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    url = ""
    for line in process.stdout:
        url = line.split(" on ", 1)[1].strip() if line.startswith("rkllm-server listening") else url
        if line.startswith("rkllm-server ready"):
            return process, url
    raise RuntimeError(f"rkllm-server did not start: see {workdir / 'server.log'}")


async def via_aiohttp(session: aiohttp.ClientSession, url: str, request: ChatRequest) -> Timing:
    """One request with aiohttp, as Home Assistant's own HTTP session sends it."""
    sent, first, chunks, result = time.perf_counter(), 0.0, [], None
    async with session.post(f"{url}/api/chat", json=ollama_body(request)) as response:
        async for line in response.content:
            now = time.perf_counter()
            record_ = json.loads(line)
            message = record_.get("message", {})
            if (message.get("content") or message.get("tool_calls")) and not first:
                first = now
            if message.get("content"):
                chunks.append(now)
            if record_.get("done"):
                result = ChatResult.from_dict(record_["rkllm"])
    assert result is not None, "the server gave no result"
    return Timing(sent, first, chunks, result)


async def via_ollama(client: ollama.AsyncClient, request: ChatRequest) -> Timing:
    """One request with the official ollama client (httpx), as Home Assistant's Ollama integration does."""
    body = ollama_body(request)
    sent, first, chunks, text, prefilled = time.perf_counter(), 0.0, [], "", 0
    parts = await client.chat(
        MODEL, messages=body["messages"], tools=body["tools"], options=body["options"], think=body["think"],
        stream=True,
    )  # fmt: skip
    async for part in parts:
        now = time.perf_counter()
        if (part.message.content or part.message.tool_calls) and not first:
            first = now
        if part.message.content:
            chunks.append(now)
            text += part.message.content
        prefilled = part.prompt_eval_count or prefilled
    # The client keeps only Ollama's own fields: its prefill count, not the rest of the engine's figures.
    return Timing(
        sent, first, chunks, ChatResult(text, (), PerfStats(prefill_tokens=prefilled), 0, 0, False, 0)
    )


async def through_server(
    library: Path, model: Path, requests: list[ChatRequest], workdir: Path, client: str
) -> list[Timing]:
    process, url = start_server(library, model, workdir)
    try:
        if client == "aiohttp":
            async with aiohttp.ClientSession() as session:
                return [await via_aiohttp(session, url, request) for request in requests]
        ollama_client = ollama.AsyncClient(host=url)
        try:
            return [await via_ollama(ollama_client, request) for request in requests]
        finally:
            await ollama_client.close()
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def delivered_rate(timing: Timing) -> float:
    """Text chunks per second between a reply's first and last chunk."""
    return (len(timing.chunks) - 1) / (timing.chunks[-1] - timing.chunks[0])


def summarise(
    local: list[Timing], remote: list[Timing], official: list[Timing], time_scale: float
) -> dict[str, Any]:
    assert (
        [t.result.text for t in local] == [t.result.text for t in remote] == [t.result.text for t in official]
    )
    prefilled = [t.result.perf.prefill_tokens for t in local]
    assert (
        prefilled
        == [t.result.perf.prefill_tokens for t in remote]
        == [t.result.perf.prefill_tokens for t in official]
    ), "the paths did not read the same prompts"
    voice = slice(0, len(local) - 1)  # the last request is the long reply that measures the rate

    def added(path: list[Timing], q: float, warm: bool | None = None) -> float:
        pairs = zip(local[voice], path[voice], strict=True)
        chosen = [r.ttft_ms - i.ttft_ms for i, r in pairs if warm is None or i.result.cache_hit is warm]
        return round(pct(chosen, q), 2)

    story = remote[-1].result
    # The runtime reports simulated time: divided by the time scale, its rate is in real time.
    runtime = story.perf.decode_tokens_per_second / time_scale
    configured = voice_session.DECODE_TPS / time_scale
    return {
        "requests": len(local) - 1,
        "ttft_ms_p50_in_process": round(pct([t.ttft_ms for t in local[voice]], 0.5), 1),
        "ttft_ms_p50_server": round(pct([t.ttft_ms for t in remote[voice]], 0.5), 1),
        "added_ttft_ms_p50": added(remote, 0.5),
        "added_ttft_ms_p95": added(remote, 0.95),
        "added_ttft_ms_p95_warm": added(remote, 0.95, warm=True),
        "added_ttft_ms_max_long_prefill": added(remote, 1.0, warm=False),
        "added_ttft_ms_p50_ollama_client": added(official, 0.5),
        "added_ttft_ms_p95_ollama_client": added(official, 0.95),
        "prefilled_tokens_equal": True,
        "long_reply_tokens": story.perf.generate_tokens,
        "configured_tokens_per_s": round(configured, 2),
        "runtime_tokens_per_s": round(runtime, 2),
        "in_process_tokens_per_s": round(delivered_rate(local[-1]), 2),
        "server_tokens_per_s": round(delivered_rate(remote[-1]), 2),
        "ollama_client_tokens_per_s": round(delivered_rate(official[-1]), 2),
        "server_over_runtime": round(delivered_rate(remote[-1]) / runtime, 4),
        "server_over_in_process": round(delivered_rate(remote[-1]) / delivered_rate(local[-1]), 4),
        "time_scale": time_scale,
    }


def report(summary: dict[str, Any]) -> None:
    print(f"Voice session through rkllm-server vs in-process: {summary['requests']} requests, "
          f"Qwen2.5-1.5B RK3588 timing (time scale {summary['time_scale']})")  # fmt: skip
    s = summary
    rows = [
        ("time to first token p50 (ms)", s["ttft_ms_p50_in_process"], s["ttft_ms_p50_server"], ""),
        ("added TTFT p50 / p95 (ms), aiohttp", "", s["added_ttft_ms_p50"], s["added_ttft_ms_p95"]),
        ("  p95 of warm requests / max of long prefills", "", s["added_ttft_ms_p95_warm"],
         s["added_ttft_ms_max_long_prefill"]),
        ("added TTFT p50 / p95 (ms), ollama client", "", s["added_ttft_ms_p50_ollama_client"],
         s["added_ttft_ms_p95_ollama_client"]),
        (f"tokens/s delivered ({s['long_reply_tokens']}-token reply)", s["in_process_tokens_per_s"],
         s["server_tokens_per_s"], f"{s['server_over_in_process']:.2%} of in-process"),
        ("runtime's rate (perf stats)", s["runtime_tokens_per_s"], "",
         f"{s['server_over_runtime']:.2%} delivered"),
    ]  # fmt: skip
    print(f"{'':44} {'in-process':>11} {'server':>11}")
    for label, a, b, c in rows:
        print(f"{label:44} {a!s:>11} {b!s:>11}   {c}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--abi", default="1.3", choices=["1.2", "1.3"])
    parser.add_argument("--time-scale", type=float, default=1.0, help="emulator time scale of the replay")
    args = parser.parse_args()
    library = build_cached(args.abi)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = EmulatedModel(
            rules=[STORY, *voice_session.model_rules()], name="qwen2.5-1.5b-emulated",
            prefill_tps=voice_session.PREFILL_TPS, decode_tps=voice_session.DECODE_TPS,
        ).write(workdir / "qwen2.5-1.5b.rkllm")  # fmt: skip
        requests = await record(library, model, workdir)
        last = requests[-1]
        requests.append(replace(last, messages=[Message("user", "tell me a story")]))
        os.environ["RKLLM_EMU_TIME_SCALE"] = str(args.time_scale)
        local = await in_process(library, model, requests)
        remote = await through_server(library, model, requests, workdir, "aiohttp")
        official = await through_server(library, model, requests, workdir, "ollama")
    summary = summarise(local, remote, official, args.time_scale)
    report(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
