"""SIGTERM stops the server within 5 s in every state, a prefill the runtime cannot abort included."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.server.conftest import MODEL, SYSTEM, StartServer, prefill_counts

# About 20 s of prefill for the long system prompt: far longer than the 5 s the stop may take.
HI = [{"role": "user", "content": "hi"}]
SLOW_PREFILL = {"RKLLM_EMU_PREFILL_TPS": "40", "RKLLM_EMU_PREFILL_DOUBLE_AT": "100000"}
STOP_WITHIN_S = 5.0


def _ask(server_url: str, failures: list[BaseException]) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}],
    }
    try:
        httpx.post(f"{server_url}/api/chat", json=body, timeout=60)
    except httpx.TransportError as err:
        failures.append(err)


def test_sigterm_mid_prefill_exits_within_five_seconds(start_server: StartServer, tmp_path: Path) -> None:
    caches = ("--prompt-cache-dir", str(tmp_path / "caches"))
    server = start_server(*caches, env=SLOW_PREFILL)
    failures: list[BaseException] = []
    asker = threading.Thread(target=_ask, args=(server.url, failures))
    asker.start()
    deadline = time.monotonic() + 10
    while server.http("GET", "/rkllm/status").json()["models"][MODEL]["engine_state"] != "prefilling":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    asker.join(30)
    print(f"SIGTERM mid-prefill: exited after {took:.2f} s")
    assert took < STOP_WITHIN_S
    assert prefill_counts(server.log()) == []  # the prefill never finished
    assert len(failures) == 1  # the client saw the connection end
    # The prompt cache the interrupted run was writing was never recorded; a restart answers and saves it.
    sidecars = [path for path in (tmp_path / "caches").rglob("*.json") if "checked" not in path.parts]
    assert sidecars == []  # (checked/ holds the model check's verdicts, written before the request)
    restarted = start_server(*caches)
    answer = restarted.ollama().chat(MODEL, messages=[{"role": "system", "content": SYSTEM}, *HI])
    assert answer.message.content == "Hello! How can I help?"
    assert len(list((tmp_path / "caches" / MODEL).glob("*.json"))) == 1
