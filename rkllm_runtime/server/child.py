"""rkllm-server as a child process: loopback, a free port, a random key, its last log lines kept."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from rkllm_runtime.chat import KVMode
from rkllm_runtime.errors import RKLLMError
from rkllm_runtime.types import ModelParams

READY_LINE = "rkllm-server ready"
"""What the server prints once its models are loaded (or failed to load)."""
LISTENING = re.compile(r"rkllm-server listening on (\S+)")
LOG_LINES = 20
STOP_TIMEOUT_S = 6.0
"""The server exits within 5 s of SIGTERM; then it is killed."""


class ChildStartError(RKLLMError):
    """The child exited or never became ready."""


class ServerProcess:
    """One run of ``python -m rkllm_runtime.server`` for a model on this machine."""

    def __init__(
        self,
        library: Path,
        model: str,
        model_path: Path,
        *,
        params: ModelParams,
        kv_mode: KVMode,
        prompt_cache_dir: Path | None = None,
        release: str | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.api_key = secrets.token_urlsafe(32)
        self.url = ""
        self.last_lines: deque[str] = deque(maxlen=LOG_LINES)
        """The child's last output lines, the runtime's own included."""
        self._args = [
            "--library", str(library),
            "--model", f"{model}={model_path}",
            "--host", "127.0.0.1", "--port", "0",
            "--context-length", str(params.max_context_len),
            "--kv-strategy", kv_mode.value,
            "--zeroconf", "off",
        ]  # fmt: skip
        if params.n_keep is not None:
            self._args += ["--n-keep", str(params.n_keep)]
        if params.enabled_cpus_mask is not None:
            self._args += ["--enabled-cpus-mask", hex(params.enabled_cpus_mask)]
        if params.embed_flash:
            self._args.append("--embed-flash")
        if params.base_domain_id is not None:
            self._args += ["--base-domain-id", str(params.base_domain_id)]
        if prompt_cache_dir is not None:
            self._args += ["--prompt-cache-dir", str(prompt_cache_dir)]
        if release:
            self._args += ["--release", release]
        self._on_log = on_log
        self._process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def command(self) -> Sequence[str]:
        """What is run."""
        return [sys.executable, "-m", "rkllm_runtime.server", *self._args]

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def returncode(self) -> int | None:
        """How the child exited (negative: the signal that ended it); None while it runs."""
        return self._process.returncode if self._process is not None else None

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid if self._process is not None else None

    async def start(self, within_s: float) -> None:
        """Start the child and wait until its model is loaded (or failed to load)."""
        self.url = ""
        self._process = process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "RKLLM_SERVER_API_KEY": self.api_key},
        )
        assert process.stdout is not None
        assert process.stderr is not None
        self._readers = [asyncio.create_task(self._read(process.stderr), name="rkllm-server stderr")]
        try:
            async with asyncio.timeout(within_s):
                while line := await self._next_line(process.stdout):
                    if match := LISTENING.match(line):
                        self.url = match.group(1)
                    if line.startswith(READY_LINE):
                        break
                else:
                    await process.wait()
        except TimeoutError:
            await self.stop()
            raise ChildStartError(f"rkllm-server did not start within {within_s:.0f} s") from None
        if not self.running or not self.url:
            await self.stop()
            raise ChildStartError(f"rkllm-server exited at start: {self.last_log()}")
        self._readers.append(asyncio.create_task(self._read(process.stdout), name="rkllm-server stdout"))

    async def _next_line(self, stream: asyncio.StreamReader) -> str:
        line = (await stream.readline()).decode(errors="replace").rstrip()
        if line:
            self.last_lines.append(line)
        return line

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := (await stream.readline()).decode(errors="replace"):
            if line := line.rstrip():
                self.last_lines.append(line)
                if self._on_log is not None:
                    self._on_log(line)

    def last_log(self) -> str:
        """The last output lines, one per line."""
        return "\n".join(self.last_lines)

    async def wait(self) -> int:
        """Wait until the child exits; its exit status (negative: the signal that ended it)."""
        assert self._process is not None
        status = await self._process.wait()
        for reader in self._readers:  # the pipes are at their end: let them finish
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return status

    async def stop(self) -> None:
        """SIGTERM (the server aborts its run and saves its prompt cache), SIGKILL if it lingers."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        for reader in self._readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._readers = []
