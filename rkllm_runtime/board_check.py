"""Check a board's RKLLM runtime and print a report to paste into an issue (no Home Assistant needed).

It reads the library's release and exported functions, loads a model, and runs the probes
that settle what the vendor does not document: whether ``keep_history=1`` appends, whether
a logits-mode run with ``keep_history=1`` keeps its input (what decoding under a grammar needs),
whether range clearing is refused, whether setting the system prompt clears the cache, whether a
loaded prompt cache is reused by prefix detection, and the time to first token at several
prompt lengths.

Usage: ``scripts/board-check --model /path/to/model.rkllm [--library /usr/lib/librkllmrt.so]``
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import RKLLMError
from .library import embedded_version, find_library, load_library
from .logits_cache import logits_keep_input
from .releases import FUNCTIONS_1_2_1, RELEASES
from .runtime import RKLLMRuntime
from .system import available_memory_mb
from .types import ModelParams, Prompt, RunOptions, RunResult, Tokens

SYSTEM = "You are a voice assistant for a smart home. Answer in one short sentence."
PROMPT_LENGTHS = (128, 1000, 2700)


class Report:
    """Markdown, printed line by line so that a crash still leaves the report so far."""

    def add(self, line: str = "") -> None:
        print(line, flush=True)

    @contextmanager
    def probe(self, title: str) -> Iterator[None]:
        """A section whose failure is reported, not raised."""
        self.add(f"\n### {title}")
        try:
            yield
        except RKLLMError as err:
            self.add(f"- failed: `{err}`")


def soc() -> str:
    """The board's compatible string (device tree), or "unknown"."""
    try:
        raw = Path("/proc/device-tree/compatible").read_bytes()
    except OSError:
        return "unknown"
    return ", ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def npu_driver() -> str:
    """The rknpu driver version when the kernel exposes it."""
    for path in ("/sys/kernel/debug/rknpu/version", "/sys/module/rknpu/version"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return "unknown (see the runtime's init line: rknpu driver version)"


def describe_library(report: Report, path: Path, release: str | None) -> None:
    """The library's banner and what the binding knows of that release."""
    banner = embedded_version(path)
    report.add("### Library")
    report.add(f"- path: `{path}`")
    report.add(
        f"- version banner: `{banner or 'none'}`" + (f", release given: `{release}`" if release else "")
    )
    known = RELEASES.get(banner or release or "")
    if known is not None and known.refusal:
        report.add(f"- this release is not supported: {known.refusal}")
    if known is not None and known.warning:
        report.add(f"- known fault: {known.warning}")


def run_text(
    runtime: RKLLMRuntime, text: str, *, keep_history: bool = False, save_prompt_cache: str | None = None
) -> RunResult:
    """One run of a user prompt."""
    options = RunOptions(keep_history=keep_history, save_prompt_cache=save_prompt_cache)
    return runtime.run(Prompt(text), options)


def probe_keep_history(report: Report, runtime: RKLLMRuntime) -> None:
    """Whether a keep_history=1 run appends its prompt and reply to the cache."""
    with report.probe("keep_history=1 appends prompt and reply"):
        runtime.set_function_tools(SYSTEM, "[]")
        runtime.clear_kv_cache(keep_system_prompt=False)
        first = run_text(runtime, "Name a colour.", keep_history=True)
        after_first = runtime.kv_cache_size()
        second = run_text(runtime, "Another one?", keep_history=True)
        after_second = runtime.kv_cache_size()
        grown = after_second - after_first
        expected = second.perf.prefill_tokens + second.perf.generate_tokens
        report.add(f"- run 1: prefill {first.perf.prefill_tokens}, generate {first.perf.generate_tokens}")
        report.add(f"  kv cache {after_first}")
        report.add(f"- run 2: prefill {second.perf.prefill_tokens}, generate {second.perf.generate_tokens}")
        report.add(f"  kv cache {after_second}")
        verdict = "yes" if grown == expected else f"no (grew by {grown}, expected {expected})"
        report.add(f"- appended: {verdict}")
        runtime.clear_kv_cache(keep_system_prompt=True)
        report.add(f"- after clear_kv_cache(keep_system_prompt=1): kv cache {runtime.kv_cache_size()}")


def probe_logits_cache(report: Report, runtime: RKLLMRuntime) -> None:
    """Whether a logits-mode run with keep_history=1 keeps its input in the cache (the engine's own check)."""
    with report.probe("Logits mode with keep_history=1 keeps its input"):
        kept, width = logits_keep_input(runtime)
        report.add(f"- logits width: {width}")
        decode = run_text(runtime, "Count from one to ten.").perf
        started = time.perf_counter()
        fed = runtime.logits(Tokens([0]), keep_history=True).perf
        wall = (time.perf_counter() - started) * 1000
        step = 1000 / decode.decode_tokens_per_second if decode.decode_tokens_per_second else 0.0
        report.add(
            f"- a one-token logits run: {wall:.1f} ms from the call to its return (the runtime reports "
            f"{fed.prefill_time_ms:.1f} ms); a decode step: {step:.1f} ms"
        )
        runtime.clear_kv_cache(keep_system_prompt=True)
        report.add(
            "- kept: yes (replies that must follow a grammar are decoded under it)"
            if kept
            else "- kept: NO (replies that must follow a grammar are checked and asked for again instead)"
        )


def probe_range_clear(report: Report, runtime: RKLLMRuntime) -> None:
    """Whether clearing a position range is refused outside a paused keep_history=0 run."""
    with report.probe("Range clearing outside a paused keep_history=0 run"):
        run_text(runtime, "Name a colour.", keep_history=True)
        size = runtime.kv_cache_size()
        try:
            runtime.clear_kv_cache_range(1, size)
        except RKLLMError:
            report.add("- refused (as documented)")
        else:
            report.add(f"- ACCEPTED: kv cache {size} -> {runtime.kv_cache_size()} (not documented)")


def probe_system_change(report: Report, runtime: RKLLMRuntime) -> None:
    """Whether setting another system prompt clears the KV cache."""
    with report.probe("rkllm_set_function_tools and the KV cache"):
        runtime.clear_kv_cache(keep_system_prompt=False)
        run_text(runtime, "Name a colour.", keep_history=True)
        before = runtime.kv_cache_size()
        runtime.set_function_tools(SYSTEM + " Be brief.", "[]")
        after = runtime.kv_cache_size()
        report.add(f"- kv cache {before} before, {after} after setting another system prompt")
        report.add(f"- clears the cache: {'yes' if after < before else 'no'}")
        runtime.clear_kv_cache(keep_system_prompt=False)


def probe_prompt_cache(report: Report, open_model: Callable[[], RKLLMRuntime], directory: Path) -> None:
    """Whether a prompt cache loaded by a new handle spares the prefill of its prefix."""
    with report.probe("Prompt-cache prefix reuse after a restart"):
        cache = directory / "system.rkcache"
        long_system = SYSTEM + " Known devices: " + ", ".join(f"lamp {i}" for i in range(150)) + "."
        with open_model() as runtime:
            runtime.set_function_tools(long_system, "[]")
            cold = run_text(runtime, "Turn on lamp 3.", save_prompt_cache=str(cache))
        size = cache.stat().st_size if cache.exists() else 0
        report.add(f"- saved: {size / 2**20:.1f} MB for {cold.perf.prefill_tokens} prefilled tokens")
        for keep_history in (False, True):
            with open_model() as runtime:
                runtime.set_function_tools(long_system, "[]")
                runtime.load_prompt_cache(cache)
                warm = run_text(runtime, "Turn off lamp 7.", keep_history=keep_history)
                report.add(
                    f"- new handle, cache loaded, keep_history={int(keep_history)}: prefill "
                    f"{warm.perf.prefill_tokens} of ~{cold.perf.prefill_tokens} tokens in "
                    f"{warm.perf.prefill_time_ms:.0f} ms (cold {cold.perf.prefill_time_ms:.0f} ms); "
                    f"kv cache {runtime.kv_cache_size()}"
                )


def probe_ttft(report: Report, runtime: RKLLMRuntime) -> None:
    """Prefill time at several prompt lengths."""
    with report.probe("Time to first token by prompt length (keep_history=0, empty cache)"):
        report.add("| prompt tokens | prefill ms | prefill tokens/s | decode tokens/s |")
        report.add("|---|---|---|---|")
        runtime.set_function_tools(SYSTEM, "[]")
        for length in PROMPT_LENGTHS:
            if length > runtime.params.max_context_len - 64:
                report.add(f"| {length} | skipped: above the context length | | |")
                continue
            runtime.clear_kv_cache(keep_system_prompt=False)
            result = run_text(runtime, "Summarise:" + " word" * (length - 40))  # ~40: system and template
            perf = result.perf
            report.add(
                f"| {perf.prefill_tokens} | {perf.prefill_time_ms:.0f} | "
                f"{perf.prefill_tokens_per_second:.0f} | {perf.decode_tokens_per_second:.1f} |"
            )


def main(argv: list[str] | None = None) -> int:
    """Print the report; 1 when the library or the model cannot be used."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="an .rkllm model converted for this board")
    parser.add_argument("--library", type=Path, help="librkllmrt.so (default: the usual install places)")
    parser.add_argument("--release", help="the release of a library without a version banner")
    parser.add_argument("--context", type=int, default=4096, help="max_context_len (default 4096)")
    args = parser.parse_args(argv)
    library_path = args.library or find_library()
    if library_path is None:
        parser.error("no librkllmrt.so found: give --library")
    report = Report()
    report.add("## RKLLM board check")
    report.add(f"- machine: {platform.machine()}, {platform.platform()}; SoC: {soc()}")
    report.add(f"- rknpu driver: {npu_driver()}; available memory: {available_memory_mb() or 0:.0f} MB")
    report.add()
    describe_library(report, library_path, args.release)
    try:
        library = load_library(library_path, args.release)
    except RKLLMError as err:
        report.add(f"- cannot be used: {err}")
        return 1
    report.add(f"- release {library.release}, ABI {library.abi_version}")
    report.add(f"- exported: {', '.join(sorted(library.functions))}")
    absent = sorted(FUNCTIONS_1_2_1 - library.functions)
    report.add(f"- not exported: {', '.join(absent) or 'none'}")
    params = ModelParams(max_context_len=args.context, max_new_tokens=16)

    def open_model() -> RKLLMRuntime:
        return RKLLMRuntime(library, args.model, params)

    try:
        runtime = open_model()
    except RKLLMError as err:
        report.add(f"\n### Model\n- cannot be loaded: {err}")
        return 1
    with runtime:
        defaults = runtime.default_param()
        report.add(f"- rkllm_createDefaultParam(): {', '.join(f'{k}={v}' for k, v in defaults.items())}")
        report.add(f"\n### Model\n- `{args.model.name}` loaded with max_context_len {args.context}")
        probe_keep_history(report, runtime)
        probe_logits_cache(report, runtime)
        probe_range_clear(report, runtime)
        probe_system_change(report, runtime)
    with tempfile.TemporaryDirectory() as tmp:
        probe_prompt_cache(report, open_model, Path(tmp))
    with open_model() as runtime:
        probe_ttft(report, runtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
