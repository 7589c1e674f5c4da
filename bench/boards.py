"""Several boards behind HAProxy: voice sessions from 1, 3 and 6 satellites against 1, 2 and 3 boards.

The requests are those of bench/voice_session.py's workload, recorded from a real Home
Assistant (the real Assist prompt and tool schemas): new conversations, follow-ups and tool
round trips. Each satellite replays them as its own conversations through the
integration's server-mode engine (which names each conversation in the
X-RKLLM-Conversation header), one command every 2 to 8 s of simulated time, against
HAProxy configured from deploy/haproxy/haproxy.cfg in front of 1, 2 or 3 rkllm-server
boards. The boards run the emulator at RK3588 speed for Qwen2.5-1.5B (see
bench/voice_session.py), warmed with the Assist prompt as a board in use is.

Reported per layout: time to first token (request sent to first text or tool call, as the
client sees it, in simulated time: queueing behind other satellites included), busy
refusals (HTTP 429: a board's queue was full), requests lost with their board, prefilled
tokens per request, requests that found no usable KV cache (cache misses), and
conversations answered by more than one board.
The boards use the default KV strategy (conservative). A last run repeats three satellites on
three boards and kills the first board's server 30 s in: requests it was answering are lost
(the satellite reports an error), and its conversations continue on the other boards.

Each satellite replays the workload's commands from its ninth on (new conversations,
follow-ups, tool round trips), so that a dozen commands hold every kind. The emulator runs
at half RK3588 time by default (about 8 minutes in all); the reported times are simulated
ones, so the path's own latency (HTTP, HAProxy, the server: a few ms) counts twice there.

Usage: uv run python bench/boards.py [--abi 1.3] [--commands 12] [--time-scale 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from custom_components.rkllm.const import MODE_IN_PROCESS
from custom_components.rkllm.local_engine import LocalEngine
from rkllm_runtime.chat import ChatRequest, ChatStream, KVMode, TextDelta, ToolCallDelta
from rkllm_runtime.emulator import build_cached
from rkllm_runtime.errors import BusyError, RKLLMError
from rkllm_runtime.remote.client import RemoteEngine, ServerUnavailableError

sys.path.insert(0, str(Path(__file__).parents[1]))  # the template's reader, shared with the tests
sys.path.insert(0, str(Path(__file__).parent))
import server as server_bench
import voice_session

from tests.lb.conftest import TEMPLATE, balancer_config, free_port

MODEL = server_bench.MODEL
BOARDS = (1, 2, 3)
SATELLITES = (1, 3, 6)
THINK_S = (2.0, 8.0)  # simulated seconds between a satellite's commands
PULL_AT_S = 30.0  # into the sessions, when the last run loses a board
FIRST_COMMAND = 8  # the workload opens with ten alike new conversations: start near their end


@dataclass
class Figures:
    """What one layout's satellites saw."""

    ttft_ms: list[float] = field(default_factory=list)
    prefilled: list[int] = field(default_factory=list)
    refused: int = 0
    lost: int = 0
    cache_misses: int = 0


def commands_of(requests: list[ChatRequest]) -> list[list[ChatRequest]]:
    """The requests grouped by voice command: a tool result continues the command before it."""
    commands: list[list[ChatRequest]] = []
    for request in requests:
        if commands and request.messages[-1].role == "tool":
            commands[-1].append(request)
        else:
            commands.append([request])
    return commands


async def recorded(library: Path, workdir: Path) -> tuple[list[ChatRequest], Path]:
    """The voice workload's requests (recorded in Home Assistant's process), and its model file."""
    requests: list[ChatRequest] = []
    chat = LocalEngine.chat

    def recording(engine: LocalEngine, request: ChatRequest) -> ChatStream:
        requests.append(request)
        stream: ChatStream = chat(engine, request)
        return stream

    os.environ["RKLLM_EMU_TIME_SCALE"] = "0.01"  # only the requests matter here
    LocalEngine.chat = recording
    try:
        await voice_session.run(MODE_IN_PROCESS, KVMode.CONSERVATIVE, library, workdir)
    finally:
        LocalEngine.chat = chat
    return requests, workdir / "qwen2.5-1.5b.rkllm"


async def satellite(
    engine: RemoteEngine,
    commands: list[list[ChatRequest]],
    rng: random.Random,
    time_scale: float,
    figures: Figures,
) -> None:
    await asyncio.sleep(rng.uniform(0, THINK_S[1]) * time_scale)  # satellites do not start together
    for command in commands:
        if not engine.available:  # as the integration does: read the status again before a request
            with contextlib.suppress(RKLLMError):
                await engine.refresh()
        for request in command:
            sent, first = time.perf_counter(), 0.0
            try:
                async with engine.chat(request) as stream:
                    async for event in stream:
                        if not first and isinstance(event, TextDelta | ToolCallDelta):
                            first = time.perf_counter()
            except BusyError:
                figures.refused += 1
                break  # the command is lost; the satellite says so and waits for the next one
            except ServerUnavailableError:
                figures.lost += 1  # its board went away in the middle of the answer
                break
            assert stream.result is not None
            assert first
            figures.ttft_ms.append((first - sent) * 1000 / time_scale)
            figures.prefilled.append(stream.result.perf.prefill_tokens)
            figures.cache_misses += not stream.result.cache_hit
        await asyncio.sleep(rng.uniform(*THINK_S) * time_scale)


async def warm_up(session: aiohttp.ClientSession, url: str, request: ChatRequest) -> None:
    board = RemoteEngine(session, url, MODEL, None)
    await board.refresh()
    async with board.chat(replace(request, conversation_id="warm-up")) as stream:
        async for _ in stream:
            pass


async def pull(board: subprocess.Popen[str], after_s: float) -> None:
    """Kill a board's server partway through the sessions, as a board pulled out of its socket."""
    await asyncio.sleep(after_s)
    board.kill()


def start_haproxy(boards: list[str], workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(balancer_config(TEMPLATE.read_text(), port, boards))
    with (workdir / "haproxy.log").open("wb") as log:
        process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log)
    return process, f"http://127.0.0.1:{port}"


async def until_up(session: aiohttp.ClientSession, url: str) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                async with session.get(f"{url}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


async def layout(
    library: Path,
    model: Path,
    requests: list[ChatRequest],
    *,
    boards: int,
    satellites: int,
    args: argparse.Namespace,
    workdir: Path,
    pull_at_s: float | None = None,
) -> dict[str, Any]:
    """One run: ``satellites`` voice sessions against ``boards`` boards behind HAProxy.

    ``pull_at_s``: simulated seconds into the sessions when the first board is killed.
    """
    processes = []
    for n in range(boards):
        (workdir / f"board{n}").mkdir()
        processes.append(server_bench.start_server(library, model, workdir / f"board{n}"))
    haproxy, url = start_haproxy([board_url for _, board_url in processes], workdir)
    figures = Figures()
    try:
        async with aiohttp.ClientSession() as session:
            await until_up(session, url)
            # Each board has read the Assist prompt once already, as a board in use has.
            await asyncio.gather(*(warm_up(session, board_url, requests[0]) for _, board_url in processes))
            commands = commands_of(requests)[FIRST_COMMAND : FIRST_COMMAND + args.commands]
            sessions = []
            for s in range(satellites):
                engine = RemoteEngine(session, url, MODEL, None)
                await engine.refresh()
                own = [
                    [replace(r, conversation_id=f"satellite{s}-{r.conversation_id}") for r in c]
                    for c in commands
                ]
                sessions.append(satellite(engine, own, random.Random(s), args.time_scale, figures))
            if pull_at_s is not None:
                sessions.append(pull(processes[0][0], pull_at_s * args.time_scale))
            await asyncio.gather(*sessions)
    finally:
        haproxy.terminate()
        haproxy.wait(30)
        for process, _ in processes:
            process.terminate()
            process.wait(30)
    routed: defaultdict[str, set[str]] = defaultdict(set)
    log = (workdir / "haproxy.log").read_text(errors="replace")
    for board, conversation in re.findall(r"boards/(board\d) .*\{(satellite[^}]*)\} \"POST /rkllm/chat", log):
        routed[conversation].add(board)
    ttft = sorted(figures.ttft_ms)
    return {
        "boards": f"{boards}, one pulled at {pull_at_s:g} s" if pull_at_s is not None else boards,
        "satellites": satellites,
        "requests": len(ttft),
        "ttft_ms_p50": round(statistics.median(ttft)),
        "ttft_ms_p95": round(ttft[max(0, round(0.95 * len(ttft)) - 1)]),
        "busy_refusals": figures.refused,
        "lost": figures.lost,
        "prefilled_tokens_per_request": round(statistics.mean(figures.prefilled), 1),
        "cache_misses": figures.cache_misses,
        "conversations_on_several_boards": f"{sum(len(b) > 1 for b in routed.values())}/{len(routed)}",
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"Voice sessions through HAProxy: {args.commands} commands a satellite, one every "
          f"{THINK_S[0]:g}-{THINK_S[1]:g} s; Qwen2.5-1.5B at RK3588 speed "
          f"(time scale {args.time_scale})")  # fmt: skip
    print("| boards | satellites | requests | TTFT p50 (ms) | TTFT p95 (ms) | busy refusals | lost "
          "| prefilled tokens/request | cache misses | conversations on several boards |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = [r["boards"], r["satellites"], r["requests"], r["ttft_ms_p50"], r["ttft_ms_p95"],
                 r["busy_refusals"], r["lost"], r["prefilled_tokens_per_request"], r["cache_misses"],
                 r["conversations_on_several_boards"]]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--abi", default="1.3", choices=["1.2", "1.3"])
    parser.add_argument("--commands", type=int, default=12, help="voice commands per satellite")
    parser.add_argument(
        "--time-scale", type=float, default=0.5, help="emulator time scale (1: RK3588 time as it is)"
    )
    args = parser.parse_args()
    library = build_cached(args.abi)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        requests, model = await recorded(library, workdir)
        os.environ["RKLLM_EMU_TIME_SCALE"] = str(args.time_scale)
        for boards in BOARDS:
            for satellites in SATELLITES:
                run_dir = workdir / f"{boards}x{satellites}"
                run_dir.mkdir()
                rows.append(
                    await layout(library, model, requests, boards=boards, satellites=satellites, args=args,
                                 workdir=run_dir)
                )  # fmt: skip
        run_dir = workdir / "pulled"
        run_dir.mkdir()
        rows.append(
            await layout(library, model, requests, boards=3, satellites=3, args=args, workdir=run_dir,
                         pull_at_s=PULL_AT_S)
        )  # fmt: skip
    report(rows, args)
    print(json.dumps(rows))


if __name__ == "__main__":
    asyncio.run(main())
