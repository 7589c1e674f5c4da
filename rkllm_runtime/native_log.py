"""The runtime's own log lines, taken from the process's stderr and handed to Python.

``librkllmrt.so`` prints its messages (``I rkllm: ...``, ``W rkllm: ...``, ``E rkllm: ...``)
on file descriptor 2, where a service's log never sees them. :class:`StderrRouter` puts a
pipe on descriptor 2; one thread reads it, hands each runtime line to a sink as a
``logging`` level and its text, and copies every other byte unchanged to the original
stderr. The thread never writes to descriptor 2 itself, so the sink must not either
(schedule the logging call elsewhere, or use a queued handler). Process-wide: start one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import threading
from collections.abc import Callable

Sink = Callable[[int, str], None]

_LINE = re.compile(rb"^([DIWEF]) rkllm: ?(.*?)\r?$", re.IGNORECASE)
_LEVELS = {
    b"D": logging.DEBUG,
    b"I": logging.INFO,
    b"W": logging.WARNING,
    b"E": logging.ERROR,
    b"F": logging.CRITICAL,
}
# A partial line is held back only while it may still become a runtime line.
_PREFIX = re.compile(rb"^(?:[DIWEF](?: (?:r(?:k(?:l(?:l(?:m:?)?)?)?)?)?)?)?$", re.IGNORECASE)
_READ_SIZE = 65536


class StderrRouter:
    """Routes the runtime's lines on stderr to ``sink`` while started."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._thread: threading.Thread | None = None
        self._original = self._wake_write = -1
        self._pipe_identity = (0, 0)

    def start(self) -> None:
        """Put the pipe on descriptor 2 and start reading it."""
        if self._thread is not None:
            return
        pipe_read, pipe_write = os.pipe()
        wake_read, self._wake_write = os.pipe()
        self._original = os.dup(2)
        self._pipe_identity = _identity(pipe_write)
        os.dup2(pipe_write, 2)
        os.close(pipe_write)
        self._thread = threading.Thread(
            target=self._pump, args=(pipe_read, wake_read), name="rkllm-stderr", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Give descriptor 2 back, forward what is left, and end the thread (blocking, briefly)."""
        if self._thread is None:
            return
        if _identity(2) == self._pipe_identity:  # unless someone else has put their own file there since
            os.dup2(self._original, 2)
        with contextlib.suppress(BrokenPipeError):  # the thread ended already: descriptor 2 was replaced
            os.write(self._wake_write, b"x")
        self._thread.join()
        for fd in (self._original, self._wake_write):
            os.close(fd)
        self._thread = None

    def _pump(self, pipe_read: int, wake_read: int) -> None:
        pending = b""
        poller = select.poll()  # not select(): a busy process has descriptors above FD_SETSIZE
        poller.register(pipe_read, select.POLLIN)
        poller.register(wake_read, select.POLLIN)
        try:
            while True:
                ready = {fd for fd, _ in poller.poll()}
                if pipe_read in ready and (chunk := os.read(pipe_read, _READ_SIZE)):
                    pending = self._route(pending + chunk)
                elif ready:  # asked to stop, or every writer is gone
                    break
            poller.unregister(wake_read)
            while poller.poll(0) and (chunk := os.read(pipe_read, _READ_SIZE)):
                pending = self._route(pending + chunk)
            if pending:
                self._forward(pending)
        finally:
            os.close(pipe_read)
            os.close(wake_read)

    def _route(self, data: bytes) -> bytes:
        """Handle the complete lines; return the partial one still held back."""
        *lines, rest = data.split(b"\n")
        for line in lines:
            match = _LINE.match(line)
            if match is None:
                self._forward(line + b"\n")
            else:
                self._emit(_LEVELS[match.group(1).upper()], match.group(2))
        if _PREFIX.match(rest) or (_LINE.match(rest) and len(rest) < _READ_SIZE):
            return rest
        self._forward(rest)
        return b""

    def _emit(self, level: int, text: bytes) -> None:
        try:
            self._sink(level, text.decode("utf-8", "replace"))
        except Exception:  # noqa: BLE001 - a failing sink must not stop stderr
            self._forward(b"rkllm: " + text + b"\n")

    def _forward(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # the original stderr is gone: nothing to tell it
            os.write(self._original, data)


def _identity(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino
