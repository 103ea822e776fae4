"""The HTTP port (`/healthz`, `/metrics`, and `/slack/events` in Slack HTTP mode), bounded against slow and
hostile clients.

aiohttp's defaults suit a server that sits behind a proxy doing this job: an idle keep-alive connection is kept
for 3630 s, a request body may take forever to arrive, and nothing caps the number of connections. This port
may face the internet (Slack HTTP mode), so it bounds each of them itself:

- a connection whose request head has not fully arrived `IDLE_TIMEOUT_S` after it opened (or after the last
  response) is closed: aiohttp's keep-alive timer runs from those moments and closes the connection when it
  fires while no complete request is waiting (aiohttp/web_protocol.py, `connection_made`, `_process_keepalive`);
- a request body must arrive whole within `BODY_READ_TIMEOUT_S` (408 otherwise) and weigh at most
  `MAX_BODY_BYTES` (413);
- at most `MAX_CONNECTIONS` connections are open at once; one more is answered 503 and closed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 5.0  # keep-alive, and the deadline for a request's line and headers
BODY_READ_TIMEOUT_S = 5.0  # Slack sends a few KB at once; a body still arriving after this is a slow client
LINGERING_S = 2.0  # after an early answer (408, 413) unread body bytes are drained this long, then we close
# Slack's payloads (slash command forms, interactivity JSON with a message of at most 50 blocks) are tens of KB.
MAX_BODY_BYTES = 512 * 1024
MAX_CONNECTIONS = 100
# A longer request line or header field, or more headers, gets 400 (aiohttp's defaults: 8190, 8190, 128).
MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_FIELD_BYTES = 8190
MAX_HEADERS = 64  # Slack sends about 15
LISTEN_BACKLOG = 128
SHUTDOWN_TIMEOUT_S = 2.0  # requests still running at shutdown (the port only serves short ones)
_REFUSAL_TEXT = b"too many connections, retry\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL_TEXT), _REFUSAL_TEXT)
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def bounded_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reads the whole body within `BODY_READ_TIMEOUT_S` before the handler runs (aiohttp caches it, so the
    handler's own `read()`/`text()` costs nothing); a declared or actual size past `MAX_BODY_BYTES` gets 413."""
    if request.body_exists:
        declared = request.content_length
        if declared is not None and declared > MAX_BODY_BYTES:
            raise _closing(web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, declared))
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_S):
                await request.read()  # raises 413 past the application's client_max_size
        except TimeoutError:
            raise _closing(web.HTTPRequestTimeout(text="request body too slow")) from None
        except web.HTTPRequestEntityTooLarge as too_large:
            raise _closing(too_large) from None
    return await handler(request)


def _closing(error: web.HTTPException) -> web.HTTPException:
    error.force_close()  # the rest of that body is not worth reading: the connection ends after the answer
    return error


class HttpPort:
    """The aiohttp application served on one host and port with the bounds above."""

    def __init__(self, routes: list[web.RouteDef], *, max_connections: int = MAX_CONNECTIONS) -> None:
        self._app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[bounded_body])
        self._app.add_routes(routes)
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            keepalive_timeout=IDLE_TIMEOUT_S,
            lingering_time=LINGERING_S,
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listening socket is bound to."""
        assert self._server is not None and self._server.sockets, "not listening"
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self, host: str, port: int) -> None:
        """Listen; raises OSError when the address can't be bound (e.g. EADDRINUSE)."""
        await self._runner.setup()
        assert self._runner.server is not None
        protocols = ConnectionCap(self._runner.server, self._max_connections)
        # Instead of aiohttp's TCPSite (which hands the runner's server to create_server as it is): the same call
        # with the capped protocol factory in front (aiohttp's low-level server docs: `loop.create_server(server, …)`).
        self._server = await asyncio.get_running_loop().create_server(
            protocols, host, port, backlog=LISTEN_BACKLOG
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()  # stop accepting first, then end the open connections
        await self._runner.cleanup()
        if self._server is not None:
            await self._server.wait_closed()


class ConnectionCap:
    """A protocol factory: aiohttp's request handler while fewer than `limit` connections are open, else a
    protocol that answers 503 and closes."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self._limit = limit
        self.open = 0
        self._refusing = False  # one warning per flood, not one per refused connection

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._limit:
            if not self._refusing:
                log.warning("HTTP: %d connections open, refusing more until some close", self.open)
                self._refusing = True
            return _Refusal()
        self.open += 1
        return _Counted(self._server(), self._release)

    def _release(self) -> None:
        self.open -= 1
        if self.open <= self._limit // 2:
            self._refusing = False


class _Refusal(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(REFUSAL)
        transport.close()


class _Counted(asyncio.Protocol):
    """Forwards every protocol callback to aiohttp's handler, and counts the connection out when it ends."""

    def __init__(self, handler: asyncio.Protocol, release: Callable[[], None]) -> None:
        self._handler = handler
        self._release: Callable[[], None] | None = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> Any:
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._release is not None:
            self._release()
            self._release = None
        self._handler.connection_lost(exc)
