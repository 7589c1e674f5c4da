"""The binding and server tests pass on the oldest Python the package supports: Debian 12's own 3.11."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PYTHON = ROOT / ".venv-py311" / "bin" / "python"
# What needs neither Home Assistant (3.14.2 only) nor the real-model engine (built for the main Python).
SUITES = ["tests/runtime", "tests/chat", "tests/models", "tests/remote", "tests/server", "tests/emulator"]
IGNORED = [
    "tests/chat/test_contract.py",
    "tests/emulator/test_real_model.py",
    "tests/server/test_home_assistant.py",
    "tests/server/test_home_assistant_pull.py",
]


def test_the_binding_and_server_tests_pass_on_python_3_11() -> None:
    if not PYTHON.exists():
        pytest.fail(
            "no .venv-py311: scripts/setup makes it from the lock with /usr/bin/python3", pytrace=False
        )
    version = subprocess.run(
        [PYTHON, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == "(3, 11)"
    command = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES]
    command += [f"--ignore={path}" for path in IGNORED]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None, summary
    assert int(passed.group(1)) > 300
    assert "failed" not in summary
    assert "error" not in summary
