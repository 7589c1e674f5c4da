"""Three rkllm-server boards on the emulator behind HAProxy, configured from deploy/haproxy."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_socket

from rkllm_runtime.emulator import EmulatedModel, build_cached
from rkllm_runtime.remote.client import CONVERSATION_HEADER
from tests.server.conftest import MODEL, RULES, RunningServer, launch, prefill_counts

DEPLOY = Path(__file__).parents[2] / "deploy"
TEMPLATE = DEPLOY / "haproxy" / "haproxy.cfg"
UNIT = DEPLOY / "rkllm-server.service"
BOARDS = 3
KEY = "a-key-for-the-boards"
BOARD_HEADER = "X-RKLLM-Board"


@pytest.fixture(autouse=True)
def loopback_only() -> None:
    """The clients, HAProxy and the boards talk over loopback; nothing else is reachable."""
    pytest_socket.enable_socket()
    pytest_socket.socket_allow_hosts(["127.0.0.1"], allow_unix_socket=True)


@pytest.fixture(scope="session")
def haproxy() -> str:
    """HAProxy from the distribution (CI installs Debian's); required under CI."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs Debian's package)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def balancer_config(template: str, port: int, boards: list[str]) -> str:
    """The shipped configuration with a loopback address and these boards, run as whoever runs it."""
    text = re.sub(r"^    bind .*$", f"    bind 127.0.0.1:{port}", template, count=1, flags=re.MULTILINE)
    text = re.sub(r"^    (?:user|group) .*\n", "", text, flags=re.MULTILINE)
    servers = [f"    server board{n} {url.removeprefix('http://')} id {n}" for n, url in enumerate(boards, 1)]
    text, count = re.subn(
        r"(?:^    server board\d .*\n)+", "\n".join(servers) + "\n", text, flags=re.MULTILINE
    )
    assert count == 1, "the template lists its boards on consecutive lines"
    return text


def unit_kv_strategy() -> list[str]:
    """The KV-cache strategy the shipped systemd unit gives rkllm-server, as arguments."""
    found = re.search(r"^ExecStart=(?:.*\\\n)*.*$", UNIT.read_text(), flags=re.MULTILINE)
    assert found is not None
    strategy = re.search(r"--kv-strategy (\w+)", found[0])
    return ["--kv-strategy", strategy[1]] if strategy else []


@dataclass
class Farm:
    """The boards, HAProxy in front of them, and what HAProxy logged."""

    boards: dict[str, RunningServer]
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        """Whether HAProxy answers and finds a board up."""
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop_board(self, name: str) -> None:
        """Kill a board's server, as a board pulled out of its socket."""
        self.boards[name].process.kill()
        self.boards[name].process.wait(30)

    def wait_until_down(self, name: str) -> None:
        """Until HAProxy's health checks have taken the board out."""
        deadline = time.monotonic() + 30
        while f"boards/{name} is DOWN" not in self.log():
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.1)

    def prefills(self, name: str) -> list[int]:
        """Tokens each run on a board prefilled, in order."""
        return prefill_counts(self.boards[name].log())

    def chat(self, messages: list[dict[str, Any]], conversation: str | None = None) -> tuple[str, str]:
        """One streamed Ollama /api/chat turn through HAProxy: the board that answered, and the reply."""
        headers = {"Authorization": f"Bearer {KEY}"}
        if conversation is not None:
            headers[CONVERSATION_HEADER] = conversation
        body = {"model": MODEL, "messages": messages, "stream": True}
        with httpx.stream("POST", f"{self.url}/api/chat", json=body, headers=headers, timeout=60) as response:
            assert response.status_code == 200, response.read()
            lines = [json.loads(line) for line in response.iter_lines() if line]
        assert lines[-1]["done"] is True
        return response.headers[BOARD_HEADER], "".join(line["message"]["content"] for line in lines)

    def routed(self, path: str) -> list[tuple[str, str]]:
        """(board, captured conversation header) of each request for ``path`` HAProxy logged."""
        pattern = re.compile(r"boards/(board\d) .*\{([^}]*)\} \"\w+ " + re.escape(path))
        return [(match[1], match[2]) for match in pattern.finditer(self.log())]


@pytest.fixture(scope="session")
def board_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The scripted model, replying at 200 tokens/s so that a story takes a few seconds."""
    return EmulatedModel(rules=list(RULES), name="qwen2.5-1.5b-emulated", decode_tps=200).write(
        tmp_path_factory.mktemp("lb-model") / "qwen2.5-1.5b.rkllm"
    )


@pytest.fixture
def farm(haproxy: str, board_model: Path, tmp_path: Path) -> Iterator[Farm]:
    """Three boards, with the shipped unit's KV-cache strategy, behind HAProxy; stopped afterwards."""
    library = build_cached("1.3")
    boards: dict[str, RunningServer] = {}
    process = None
    try:
        for n in range(1, BOARDS + 1):
            boards[f"board{n}"] = launch(
                library,
                {MODEL: board_model},
                ["--prompt-cache-dir", str(tmp_path / f"caches{n}"), *unit_kv_strategy()],
                tmp_path / f"board{n}.log",
                env={"RKLLM_SERVER_API_KEY": KEY},
                api_key=KEY,
            )
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(balancer_config(TEMPLATE.read_text(), port, [b.url for b in boards.values()]))
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=log)
        running = Farm(boards, f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + 30
        while not running.ready():
            assert process.poll() is None, running.log()
            assert time.monotonic() < deadline, running.log()
            time.sleep(0.05)
        yield running
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        for board in boards.values():
            board.close()
