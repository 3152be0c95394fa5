"""Slow clients cannot hold the sockets of a small public aiohttp server (the KIE callback endpoint).

aiohttp has no deadline for receiving request headers and keeps idle connections open, so a
client that opens hundreds of sockets and sends a byte now and then would pin them all. The
guard sits between the listening socket and aiohttp's request handler (public API only: an
`asyncio` server whose protocol factory is the runner's `Server`): a connection must deliver its
request headers within `header_timeout_s`, at most `max_connections` are open at once (extra
ones are closed at once), and each connection carries one request (`Connection: close`), so
the header deadline covers every request. The body deadline is the handler's business.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

log = logging.getLogger("neurocards.http_guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _GuardedProtocol(asyncio.Protocol):
    """Hands every event to aiohttp's handler; tells the guard when the connection opens and closes."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)
        self._guard.opened(self._transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.closed(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    def __init__(self, *, header_timeout_s: float = 10.0, max_connections: int = 100) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.refused = 0  # connections closed because too many were open
        self.timed_out = 0  # connections closed because their headers did not come in time
        self._open: set[asyncio.Transport] = set()
        self._answered: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def listen(self, runner: web.AppRunner, host: str, port: int) -> int:
        """Serve `runner`'s app on host:port through the guard; returns the bound port."""
        factory = runner.server
        assert factory is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _GuardedProtocol(factory(), self), host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._open):
            transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.transport is not None:
            self._answered.add(request.transport)  # type: ignore[arg-type]
        response = await handler(request)
        response.force_close()  # one request per connection: the header deadline covers each
        return response

    def opened(self, transport: asyncio.Transport) -> None:
        if len(self._open) >= self.max_connections:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning("connection refused: %d open (limit %d); %d refused so far",
                            len(self._open), self.max_connections, self.refused)
            transport.abort()
            return
        self._open.add(transport)
        asyncio.get_running_loop().call_later(self.header_timeout_s, self._deadline, transport)

    def closed(self, transport: asyncio.Transport) -> None:
        self._open.discard(transport)
        self._answered.discard(transport)

    def _deadline(self, transport: asyncio.Transport) -> None:
        if transport in self._open and transport not in self._answered:
            self.timed_out += 1
            transport.abort()
