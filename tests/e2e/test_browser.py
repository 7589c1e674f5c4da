"""Headless Chromium logs in, opens Assist and sees the RKLLM agent's reply (Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, DevHome

BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def test_assist_dialog_shows_the_streamed_reply(dev_home: DevHome, tmp_path: Path) -> None:
    missing = [
        what
        for what, present in (
            ("Chromium", Path(CHROMIUM).exists()),
            ("node", shutil.which("node") is not None),
            (
                "playwright-core (npm ci in tests/browser)",
                (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
            ),
        )
        if not present
    ]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test needs {', '.join(missing)}: .ci/run installs them", pytrace=False)
        pytest.skip(f"needs {', '.join(missing)}")
    screenshot = Path(os.environ.get("RKLLM_SCREENSHOT", tmp_path / "assist.png"))
    process = subprocess.run(
        ["node", "assist.mjs", dev_home.base, "demo", "rkllm-demo", str(screenshot), "Hello! Who are you?"],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    reply = json.loads(process.stdout.strip().splitlines()[-1])["reply"]
    assert len(reply.split()) >= 2
    assert screenshot.stat().st_size > 10_000
