"""A real Home Assistant process, set up by scripts/dev_home.py as scripts/develop does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_socket

from rkllm_runtime.emulator import build_cached
from rkllm_runtime.emulator.real_model import smollm2_model

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DevHome:
    """A running development instance."""

    base: str
    config: Path
    token: str

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)


def free_port() -> int:
    """A free TCP port (found by a child process: this test process may not open sockets)."""
    code = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
    return int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


@pytest.fixture(autouse=True)
def allow_sockets() -> None:
    """These tests talk to a real Home Assistant process, as a browser or client would."""
    pytest_socket.enable_socket()


@pytest.fixture(scope="session")
def dev_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHome]:
    """scripts/dev_home.py run, with the llama.cpp engine and SmolLM2, on a free port."""
    library, model = build_cached("1.3", engine="llama"), smollm2_model()
    config = tmp_path_factory.mktemp("dev") / "config"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "dev_home.py"), "--config", str(config), "--port", str(port),
         "run", "--library", str(library), "--model", str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Home Assistant is ready"):
            break
    else:
        pytest.fail(f"the development instance did not start (exit {process.wait()})")
    try:
        yield DevHome(f"http://127.0.0.1:{port}", config, (config / ".rkllm-dev-token").read_text().strip())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
