"""rkllm-server as a real process on the emulator, and the official clients that talk to it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import pytest_socket

from rkllm_runtime.emulator import EmulatedModel, Rule, build_cached
from rkllm_runtime.server.convert import EMPTY_SCHEMA
from tests.conftest import call

MODEL = "qwen2.5:1.5b"
SYSTEM = "You are a voice assistant for Home Assistant. " * 40  # long and static, as Assist's
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "HassTurnOn",
            "description": "Turns on a device",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
]
TURN_OFF = {
    "type": "function",
    "function": {"name": "HassTurnOff", "description": "Turns off a device", "parameters": EMPTY_SCHEMA},
}

WRITTEN_CALL = (
    "To turn on the porch light, I will use the `intent__HassTurnOn` function:\n```json\n"
    '{"name": "intent__HassTurnOn", "arguments": "{\\"name\\": \\"Porch light\\"}"}\n```\n'
    "This turns on the porch light."
)
TWO_WRITTEN_CALLS = (
    '{"name": "HassTurnOff", "parameters": {"name": "Hall"}}\n'
    '{"name": "HassTurnOff", "parameters": {"name": "Porch"}}'
)
JSON_IN_PROSE = 'Send {"name": "HassTurnOn", "arguments": {"name": "Lamp"}} from a script.'

# A rule matches anywhere in the input, which quotes the earlier turns when a conversation is re-sent
# (the default, conservative strategy).
RULES = (
    # tool_choice: the retry that names HassTurnOn gets the call.
    Rule(role="user", match="did not call the tool hassturnon", reply=call("HassTurnOn", name="Lamp")),
    Rule(role="user", match="kitchen light on", tools=True, reply=call("HassTurnOn", name="Kitchen light")),
    Rule(
        role="user",
        match="garden",
        tools=True,
        reply='<tool_call>\n{"name": HassTurnOn, arguments}\n</tool_call>',
    ),
    # Calls written as text, as small models write them (tests/server/test_written_calls.py).
    Rule(role="user", match="porch light", tools=True, reply=WRITTEN_CALL),
    Rule(role="user", match="off the hall and the porch", tools=True, reply=TWO_WRITTEN_CALLS),
    Rule(role="user", match="open the gate", tools=True, reply='{"name": "HassOpenGate", "arguments": {}}'),
    Rule(role="user", match="how do i switch", tools=True, reply=JSON_IN_PROSE),
    Rule(role="tool", match="the tools are hassturnon", reply=call("HassTurnOn", name="Gate")),
    Rule(role="tool", match="malformedtoolcall", reply=call("HassTurnOn", name="Garden light")),
    Rule(role="tool", reply="Done, the light is on."),
    # Structured output: the retry (it quotes "not valid") mends a cut-off answer; a count never comes.
    Rule(match="not valid", reply='{"items": ["milk", "bread"]}'),
    Rule(match="shopping list", reply='{"items": ["milk", "bread"]'),
    Rule(match="forecast", reply='```json\n{"city": "Paris", "temperature": 21}\n```'),
    Rule(match="how many lamps", reply="There are three lamps."),
    Rule(match="weather", think="The user asks about the weather.", reply="It is sunny."),
    Rule(match="story", reply="Once upon a time " + "there was a light. " * 100),
    Rule(match="crash now", crash=True),
    Rule(match="fail", reply="I was about to", error_after=3),
    Rule(match="echo", reply="You said: {input}"),
    Rule(reply="Hello! How can I help?"),
)

_LISTENING = re.compile(r"rkllm-server listening on (\S+)")


@dataclass
class RunningServer:
    """One rkllm-server process."""

    process: subprocess.Popen[str]
    url: str
    stderr: Path
    api_key: str | None = None
    clients: list[ollama.Client | openai.OpenAI | httpx.Client] = field(default_factory=list)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(30)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ollama(self, **kwargs: Any) -> ollama.Client:
        """An ollama client, closed with the server."""
        kwargs.setdefault("headers", self.headers())
        client = ollama.Client(host=self.url, **kwargs)
        self.clients.append(client)
        return client

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        """An openai client without retries (a 429 or 5xx reaches the test as it is), closed with it."""
        kwargs.setdefault("api_key", self.api_key or "none")
        client = openai.OpenAI(base_url=f"{self.url}/v1", max_retries=0, **kwargs)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Kill the process if it still runs; close the clients."""
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)


StartServer = Callable[..., RunningServer]


@pytest.fixture(autouse=True)
def allow_sockets() -> None:
    """These tests talk to a real server process over loopback, as its clients do."""
    pytest_socket.enable_socket()


@pytest.fixture(scope="session")
def library() -> Path:
    return build_cached("1.3")


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return EmulatedModel(rules=list(RULES), name="qwen2.5-1.5b-emulated").write(
        tmp_path_factory.mktemp("models") / "qwen2.5-1.5b.rkllm"
    )


def launch(
    library: Path,
    models: dict[str, Path],
    args: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
    nofile: int | None = None,
) -> RunningServer:
    """Start the server on a free loopback port and wait until its models are loaded.

    ``nofile``: the process's descriptor limit, as ``LimitNOFILE`` sets it.
    """
    command = [sys.executable, "-m", "rkllm_runtime.server", "--library", str(library), "--port", "0"]
    for name, path in models.items():
        command += ["--model", f"{name}={path}"]
    with log.open("w") as stderr:  # the child keeps its own copy
        limit = [] if nofile is None else ["prlimit", f"--nofile={nofile}", "--"]
        process = subprocess.Popen(
            [*limit, *command, *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "RKLLM_LOG_LEVEL": "1",
                # An app or request item stored under a string key (NotAppKeyWarning) fails with a 500.
                "PYTHONWARNINGS": "error:It is recommended to use web.",
                **(env or {}),
            },
        )
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        if match := _LISTENING.match(line):
            url = match.group(1)
        if line.startswith("rkllm-server ready"):
            break
    else:
        pytest.fail(f"rkllm-server did not start (exit {process.wait()}):\n{log.read_text()}")
    assert url is not None
    return RunningServer(process, url, log, api_key)


@pytest.fixture
def start_server(library: Path, model_file: Path, tmp_path: Path) -> Iterator[StartServer]:
    """``start_server(*args, env=..., models=..., api_key=..., nofile=...)``: stopped after the test."""
    servers: list[RunningServer] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        models: dict[str, Path] | None = None,
        api_key: str | None = None,
        library: Path = library,
        nofile: int | None = None,
    ) -> RunningServer:
        log = tmp_path / f"server{len(servers)}.log"
        chosen = {MODEL: model_file} if models is None else models
        server = launch(library, chosen, list(args), log, env=env, api_key=api_key, nofile=nofile)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def server(
    library: Path, model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One server shared by a module's tests: prompt caches kept, follow-ups on the cached turns (reuse)."""
    directory = tmp_path_factory.mktemp("server")
    running = launch(
        library,
        {MODEL: model_file},
        ["--prompt-cache-dir", str(directory / "caches"), "--max-tokens", "512", "--kv-strategy", "reuse"],
        directory / "server.log",
    )
    yield running
    running.stop()
    running.close()


def generated_counts(log: str) -> list[int]:
    """Tokens each run generated, from the emulator's log lines."""
    return [int(n) for n in re.findall(r"generate (\d+) tokens", log)]


def prefill_counts(log: str) -> list[int]:
    """Tokens each run prefilled, from the emulator's log lines."""
    return [int(n) for n in re.findall(r"prefill (\d+) tokens", log)]
