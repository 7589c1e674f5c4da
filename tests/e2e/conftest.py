"""A real Home Assistant process, set up by scripts/dev_home.py as scripts/develop does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_socket

from tests.conftest import RealModel

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DevHome:
    """A running development instance."""

    base: str
    config: Path
    token: str

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the REST API; return the JSON answer."""
        return json.loads(self.read(method, path, body))

    def read(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """Call the REST API; return the answer's bytes."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.read()


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


@contextmanager
def running_dev_home(
    python: str, config: Path, library: Path, model: Path, *options: str, env: dict[str, str] | None = None
) -> Iterator[DevHome]:
    """``scripts/dev_home.py run`` under ``python`` on a free port, until the block ends."""
    port = free_port()
    log = config.parent / "dev_home.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [python, str(REPO / "scripts" / "dev_home.py"), "--config", str(config), "--port", str(port),
             "run", "--library", str(library), "--model", str(model), *options],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=config.parent,  # not the repository: nothing of it is importable from the working directory
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("Home Assistant is ready"):
            break
    else:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        pytest.fail(f"the development instance did not start (exit {process.wait()}):\n{tail}")
    try:
        yield DevHome(f"http://127.0.0.1:{port}", config, (config / ".rkllm-dev-token").read_text().strip())
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def dev_home(tmp_path_factory: pytest.TempPathFactory, real_model: RealModel) -> Iterator[DevHome]:
    """scripts/dev_home.py run, with the llama.cpp engine and SmolLM2, as scripts/develop does."""
    config = tmp_path_factory.mktemp("dev") / "config"
    with running_dev_home(sys.executable, config, real_model.library, real_model.model) as home:
        yield home


def uv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run uv offline in the repository; fail with its output."""
    process = subprocess.run(
        [os.environ.get("UV", "uv"), *args, "--offline"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert process.returncode == 0, f"uv {' '.join(args)}:\n{process.stderr}"
    return process


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist of ``uv build``."""
    out = tmp_path_factory.mktemp("dist")
    uv("build", "--out-dir", str(out))
    return out
