"""scripts/board-check against the emulator: the report a board user pastes into an issue."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rkllm_runtime.emulator import build_cached
from tests.conftest import ModelFactory

SCRIPT = Path(__file__).parents[2] / "scripts" / "board-check"


def board_check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "RKLLM_EMU_TIME_SCALE": "0"}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def test_report_of_a_supported_library(emulator_library: Path, make_model: ModelFactory) -> None:
    model = make_model(prefill_tps=128 / 0.378)
    done = board_check("--library", str(emulator_library), "--model", str(model))
    assert done.returncode == 0, done.stderr
    report = done.stdout
    assert "version banner: `1." in report
    assert "not exported: none" in report
    assert "top_k=40" in report  # the runtime's own defaults
    assert "- appended: yes" in report
    assert "- logits width: 151936\n- a one-token logits run: " in report
    assert "- kept: yes" in report
    assert "- refused (as documented)" in report
    assert "- clears the cache: no" in report
    assert "cache loaded, keep_history=0: prefill 10 of" in report  # only what follows the cached prefix
    assert "cache loaded, keep_history=1: prefill 828 of ~828" in report  # not used (as reported, #399)
    ttft_rows = [line for line in report.splitlines() if line.startswith("| ") and "prefill" not in line]
    assert [int(row.split("|")[1]) for row in ttft_rows] == [121, 993, 2693]


def test_report_when_logits_runs_keep_nothing(emulator_library: Path, make_model: ModelFactory) -> None:
    done = board_check("--library", str(emulator_library), "--model", str(make_model(logits_history="drop")))
    assert done.returncode == 0, done.stderr
    assert (
        "- kept: NO (replies that must follow a grammar are checked and asked for again instead)"
        in done.stdout
    )


def test_report_of_a_refused_release(make_model: ModelFactory) -> None:
    done = board_check("--library", str(build_cached("1.2", "1.2.0")), "--model", str(make_model()))
    assert done.returncode == 1
    assert "version banner: `1.2.0`" in done.stdout
    assert "this release is not supported: it declares rkllm_clear_kv_cache with two arguments" in done.stdout
    assert "install one of: 1.2.1, 1.2.2, 1.2.3, 1.3.1" in done.stdout
