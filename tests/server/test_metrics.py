"""/metrics as Prometheus reads it: exact integers, build info, time to first token from arrival."""

from __future__ import annotations

import platform
import threading
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rkllm_runtime.chat import ChatResult
from rkllm_runtime.server.config import ServerConfig, package_version
from rkllm_runtime.server.connections import ConnectionGuard
from rkllm_runtime.server.metrics import ServerMetrics, render
from rkllm_runtime.server.registry import ModelRegistry
from rkllm_runtime.types import PerfStats
from tests.server.conftest import MODEL, StartServer

STORY = [{"role": "user", "content": "tell me a story"}]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample, by name and labels, as prometheus_client parses the text."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_past_a_million_are_exact(tmp_path: Path) -> None:
    registry = ModelRegistry(ServerConfig(library=tmp_path / "lib.so", models={MODEL: tmp_path / "m.rkllm"}))
    metrics = ServerMetrics()
    perf = PerfStats(prefill_tokens=7, generate_tokens=1_234_567)
    metrics.finished(MODEL, ChatResult("", (), perf, 7, 0, False, 0))
    metrics.answered(MODEL, 0.25)
    guard = ConnectionGuard(cap=8)
    guard.shed = 2_000_001
    text = render(registry, metrics, guard)
    assert f'rkllm_generated_tokens_total{{model="{MODEL}"}} 1234567\n' in text
    parsed = samples(text)
    assert parsed[("rkllm_generated_tokens_total", frozenset({("model", MODEL)}))] == 1_234_567
    assert parsed[("rkllm_shed_connections_total", frozenset())] == 2_000_001
    assert parsed[("rkllm_open_connections", frozenset())] == 0
    build = frozenset({("version", package_version()), ("python", platform.python_version())})
    assert parsed[("rkllm_build_info", build)] == 1


def test_time_to_first_token_counts_the_wait_in_the_queue(start_server: StartServer) -> None:
    """A request queued behind a 5-second answer waits more than 2.5 s for its first token."""
    server = start_server(env={"RKLLM_EMU_DECODE_TPS": "100"})
    first = threading.Thread(target=lambda: server.ollama().chat(MODEL, messages=STORY))
    first.start()
    while server.http("GET", "/rkllm/status").json()["models"][MODEL]["engine_state"] != "generating":
        time.sleep(0.02)
    queued = server.ollama().chat(MODEL, messages=[{"role": "user", "content": "hi"}])
    first.join()
    assert queued.message.content == "Hello! How can I help?"
    response = server.http("GET", "/metrics")
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    parsed = samples(response.text)
    bucket = "rkllm_time_to_first_token_seconds_bucket"
    assert parsed[(bucket, frozenset({("model", MODEL), ("le", "2.5")}))] == 1  # the story's own
    assert parsed[(bucket, frozenset({("model", MODEL), ("le", "+Inf")}))] == 2
    assert parsed[("rkllm_runtime_info", frozenset({("release", "1.3.1")}))] == 1
