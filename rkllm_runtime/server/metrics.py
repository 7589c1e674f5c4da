"""Figures for Prometheus (text exposition format 0.0.4)."""

from __future__ import annotations

import bisect
import math
import platform
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rkllm_runtime.chat import ChatEngine, ChatResult
from rkllm_runtime.system import npu_load_percent, npu_temperature_celsius

from .config import package_version
from .connections import ConnectionGuard
from .registry import ModelRegistry, ModelState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(TTFT_BUCKETS_S))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(TTFT_BUCKETS_S, value)
        for bucket in range(index, len(TTFT_BUCKETS_S)):
            self.counts[bucket] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class ServerMetrics:
    """Counters the engines do not keep."""

    responses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    """By (model, API, status)."""
    generated: Counter[str] = field(default_factory=Counter)
    prefilled: Counter[str] = field(default_factory=Counter)
    prompt: Counter[str] = field(default_factory=Counter)
    cached: Counter[str] = field(default_factory=Counter)
    ttft: dict[str, _Histogram] = field(default_factory=dict)

    def finished(self, model: str, result: ChatResult) -> None:
        """Count the tokens of a finished run."""
        self.generated[model] += result.perf.generate_tokens
        self.prefilled[model] += result.perf.prefill_tokens
        self.prompt[model] += result.prompt_tokens
        self.cached[model] += result.cached_tokens

    def answered(self, model: str, first_token_s: float) -> None:
        """Count a request that waited ``first_token_s`` from its arrival to its first token."""
        self.ttft.setdefault(model, _Histogram()).observe(first_token_s)


def _last(engine: ChatEngine, read: Callable[[ChatResult], float]) -> float:
    return read(engine.stats.last) if engine.stats.last is not None else 0.0


ENGINE_FIGURES: tuple[tuple[str, str, str, Callable[[ChatEngine], float]], ...] = (
    ("rkllm_kv_cache_hits_total", "counter", "Requests that prefilled only their new messages.",
     lambda e: e.stats.cache_hits),
    ("rkllm_kv_cache_misses_total", "counter", "Requests that prefilled more.",
     lambda e: e.stats.cache_misses),
    ("rkllm_malformed_tool_calls_total", "counter", "Tool calls the model had to write again.",
     lambda e: e.stats.malformed_calls),
    ("rkllm_kv_cache_tokens", "gauge", "Tokens in the KV cache.", lambda e: e.stats.kv_tokens),
    ("rkllm_waiting_requests", "gauge", "Requests queued behind the running one.", lambda e: e.waiting),
    ("rkllm_decode_tokens_per_second", "gauge", "Generation speed of the last request.",
     lambda e: _last(e, lambda r: r.perf.decode_tokens_per_second)),
    ("rkllm_prefill_tokens_per_second", "gauge", "Prompt reading speed of the last request.",
     lambda e: _last(e, lambda r: r.perf.prefill_tokens_per_second)),
    ("rkllm_memory_bytes", "gauge", "Peak memory the runtime reported for the last request.",
     lambda e: _last(e, lambda r: r.perf.memory_usage_mb * 2**20)),
)  # fmt: skip


def _escape(value: object) -> str:
    """A label value as Prometheus' text format quotes it."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def _labels(**labels: object) -> str:
    text = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + text + "}" if text else ""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: object) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")


def _number(value: float) -> str:
    """Integers exactly; floats to the last digit that round-trips."""
    if isinstance(value, int):
        return str(value)
    return {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, "NaN" if math.isnan(value) else repr(value))


def render(registry: ModelRegistry, metrics: ServerMetrics, connections: ConnectionGuard) -> str:
    """The exposition text (reads /sys: call from a worker thread)."""
    out = _Writer()
    models = list(registry.models.values())
    out.family("rkllm_build_info", "gauge", "1, labelled with this server's version and Python's.")
    out.sample("rkllm_build_info", 1, version=package_version(), python=platform.python_version())
    releases = sorted({m.engine.runtime.library.release for m in models if m.engine is not None})
    out.family("rkllm_runtime_info", "gauge", "1 for each RKLLM runtime release the models run on.")
    for release in releases:
        out.sample("rkllm_runtime_info", 1, release=release)
    out.family("rkllm_model_state", "gauge", "1 for the state each model is in.")
    for model in models:
        for state in ModelState:
            out.sample("rkllm_model_state", int(model.state is state), model=model.name, state=state)
    out.family("rkllm_responses_total", "counter", "HTTP responses by model, API and status.")
    for (model_name, api, status), count in sorted(metrics.responses.items()):
        out.sample("rkllm_responses_total", count, model=model_name, api=api, status=status)
    for name, counter, help_text in (
        ("rkllm_generated_tokens_total", metrics.generated, "Tokens generated."),
        ("rkllm_prefilled_tokens_total", metrics.prefilled, "Prompt tokens the NPU had to read."),
        ("rkllm_prompt_tokens_total", metrics.prompt, "Prompt tokens, cached ones included."),
        ("rkllm_cached_prompt_tokens_total", metrics.cached, "Prompt tokens the KV cache already held."),
    ):
        out.family(name, "counter", help_text)
        for model in models:
            out.sample(name, counter[model.name], model=model.name)
    out.family(
        "rkllm_time_to_first_token_seconds",
        "histogram",
        "From a request's arrival to its first token: queue, prompt-cache load and prefill.",
    )
    for model in models:
        histogram = metrics.ttft.get(model.name, _Histogram())
        for bound, count in zip(TTFT_BUCKETS_S, histogram.counts, strict=True):
            out.sample("rkllm_time_to_first_token_seconds_bucket", count, model=model.name, le=repr(bound))
        out.sample("rkllm_time_to_first_token_seconds_bucket", histogram.count, model=model.name, le="+Inf")
        out.sample("rkllm_time_to_first_token_seconds_sum", histogram.total, model=model.name)
        out.sample("rkllm_time_to_first_token_seconds_count", histogram.count, model=model.name)
    engines = [(model.name, model.engine) for model in models if model.engine is not None]
    for name, kind, help_text, read in ENGINE_FIGURES:
        out.family(name, kind, help_text)
        for model_name, engine in engines:
            out.sample(name, read(engine), model=model_name)
    out.family("rkllm_open_connections", "gauge", f"Open HTTP connections (at most {connections.cap}).")
    out.sample("rkllm_open_connections", connections.count)
    out.family(
        "rkllm_shed_connections_total", "counter", "Idle connections closed to make room for new ones."
    )
    out.sample("rkllm_shed_connections_total", connections.shed)
    for name, value, help_text in (
        ("rkllm_npu_load_percent", npu_load_percent(), "Mean load of the NPU cores."),
        ("rkllm_npu_temperature_celsius", npu_temperature_celsius(), "NPU temperature."),
    ):
        if value is not None:
            out.family(name, "gauge", help_text)
            out.sample(name, value)
    return "\n".join(out.lines) + "\n"
