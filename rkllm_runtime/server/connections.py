"""Open connections: a cap below the descriptor limit, idle and unauthenticated ones shed first.

aiohttp closes a connection that has not sent a whole request head within its keep-alive
time-out (at the start too); what it cannot do is refuse the connection too many, so the
site wraps each connection's protocol and this guard counts them.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass, field
from ssl import SSLContext

from aiohttp import web

_LOGGER = logging.getLogger(__name__)

# Descriptors kept for what is not a connection: the model and library files, the NPU's
# device, prompt-cache files, the log, the runtime's own.
RESERVED_DESCRIPTORS = 64
# asyncio accepts up to the backlog's number of connections at once, before any is counted,
# and each may shed one whose descriptor is only closed on the loop's next turn.
BACKLOG = 32
MIN_CONNECTIONS = 8


def connection_cap(requested: int) -> int:
    """The requested cap, lowered to fit the process's descriptor limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(MIN_CONNECTIONS, min(requested, soft - RESERVED_DESCRIPTORS - 2 * BACKLOG))


@dataclass(eq=False, slots=True)
class _Connection:
    transport: asyncio.Transport
    opened: float = field(default_factory=time.monotonic)
    requests: int = 0
    """Requests being answered now."""
    authenticated: bool = False
    """It sent the API key (every connection counts as not when no key is set)."""


class ConnectionGuard:
    """Counts open connections; at the cap, a new one closes the idle one least worth keeping."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.shed = 0
        """Connections closed to make room."""
        self._open: dict[asyncio.BaseProtocol, _Connection] = {}

    @property
    def count(self) -> int:
        """Connections open now."""
        return len(self._open)

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        """``inner`` (aiohttp's request handler), counted from connection to loss."""
        return _Counted(self, inner)

    def opened(self, inner: asyncio.BaseProtocol, transport: asyncio.Transport) -> None:
        """A connection was accepted: keep it, making room, or close it when all are busy."""
        if len(self._open) >= self.cap:
            idle = [inner for inner, c in self._open.items() if not c.requests]
            if not idle:
                _LOGGER.debug("%d connections are all busy: closing a new one", len(self._open))
                transport.abort()
                return
            victim = min(idle, key=lambda inner: (self._open[inner].authenticated, self._open[inner].opened))
            # Its connection_lost comes later: it stops counting now.
            self._open.pop(victim).transport.abort()
            self.shed += 1
        self._open[inner] = _Connection(transport)

    def closed(self, inner: asyncio.BaseProtocol) -> None:
        """A connection was lost."""
        self._open.pop(inner, None)

    def started(self, request: web.BaseRequest) -> None:
        """A request of this connection is being answered."""
        if (connection := self._open.get(request.protocol)) is not None:
            connection.requests += 1

    def finished(self, request: web.BaseRequest) -> None:
        """That request was answered."""
        if (connection := self._open.get(request.protocol)) is not None:
            connection.requests -= 1

    def authenticated(self, request: web.BaseRequest) -> None:
        """The connection sent the API key."""
        if (connection := self._open.get(request.protocol)) is not None:
            connection.authenticated = True


class _Counted(asyncio.Protocol):
    """Passes every event on to aiohttp's handler, telling the guard of the connection's life."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._guard.opened(self._inner, transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self._inner)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections the guard counts."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        ssl_context: SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol(server()),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
