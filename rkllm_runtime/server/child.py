"""rkllm-server as a child process: loopback, a free port, a random key, its last log lines kept.

The child dies with its parent (Linux's parent-death signal), and its process id is kept in a
file, so that a parent restarted after being killed finds and stops one left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from rkllm_runtime.chat import KVMode
from rkllm_runtime.errors import RKLLMError
from rkllm_runtime.types import ModelParams

_LOGGER = logging.getLogger(__name__)

READY_LINE = "rkllm-server ready"
"""What the server prints once its models are loaded (or failed to load)."""
PARENT_PID_ENV = "RKLLM_SERVER_PARENT_PID"
"""Set for a child: the process whose death ends it."""
PR_SET_PDEATHSIG = 1
LISTENING = re.compile(r"rkllm-server listening on (\S+)")
LOG_LINES = 20
STOP_TIMEOUT_S = 6.0
"""The server exits within 5 s of SIGTERM; then it is killed."""


class ChildStartError(RKLLMError):
    """The child exited or never became ready."""


def exit_with_parent() -> None:
    """In the child: be sent SIGTERM when the parent that started it dies (Linux only)."""
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        _LOGGER.warning("Cannot follow the parent process: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != int(parent):  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def is_alive(pid: int) -> bool:
    """Whether a process runs (a zombie has ended: only its parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_leftover(pid_file: Path, model_arg: str, within_s: float = STOP_TIMEOUT_S) -> int | None:
    """Stop the child a pid file names if it still runs this model (blocking); its pid, or None."""
    try:
        pid = int(pid_file.read_text().strip())
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    if "rkllm_runtime.server" not in args or model_arg not in args:
        return None  # the pid was reused by another program
    _LOGGER.warning("Stopping rkllm-server %s, left behind by an earlier run of this program", pid)
    deadline = time.monotonic() + within_s
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or another user's
        os.kill(pid, signal.SIGTERM)
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)
    return pid


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
        max_tokens: int | None = None,
        on_log: Callable[[str], None] | None = None,
        pid_file: Path | None = None,
        encoder_path: Path | None = None,
    ) -> None:
        self.model = model
        self.pid_file = pid_file
        """Holds the running child's process id, for a restarted parent to find it."""
        self.api_key = secrets.token_urlsafe(32)
        self.url = ""
        self._model_arg = f"{model}={model_path}"
        self.last_lines: deque[str] = deque(maxlen=LOG_LINES)
        """The child's last output lines, the runtime's own included."""
        self._args = [
            "--library", str(library),
            "--model", self._model_arg,
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
        if encoder_path is not None:
            self._args += ["--encoder", str(encoder_path)]
        if max_tokens is not None:  # the longest reply to a client that does not say
            self._args += ["--max-tokens", str(max_tokens)]
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
        """Start the child (a leftover one stopped first) and wait until its model is loaded or failed."""
        self.url = ""
        loop = asyncio.get_running_loop()
        if self.pid_file is not None:
            await loop.run_in_executor(None, stop_leftover, self.pid_file, self._model_arg)
        self._process = process = await asyncio.create_subprocess_exec(
            *self.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "RKLLM_SERVER_API_KEY": self.api_key,
                PARENT_PID_ENV: str(os.getpid()),
            },
        )
        await loop.run_in_executor(None, self._write_pid_file, process.pid)
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

    def _write_pid_file(self, pid: int | None) -> None:
        """Record the child's pid (None: forget it); a file that cannot be written costs only that."""
        if self.pid_file is None:
            return
        try:
            if pid is None:
                self.pid_file.unlink(missing_ok=True)
            else:
                self.pid_file.parent.mkdir(parents=True, exist_ok=True)
                self.pid_file.write_text(f"{pid}\n")
        except OSError as err:
            _LOGGER.warning(
                "Cannot write %s (%s): a child left behind would not be found", self.pid_file, err
            )

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
        await asyncio.get_running_loop().run_in_executor(None, self._write_pid_file, None)
        for reader in self._readers:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._readers = []
