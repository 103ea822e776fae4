"""httpx's requests sent through aiohttp: the replicate client's own code, on a cheaper HTTP stack.

Why: with 200 answers streaming at once, httpcore, anyio and h11 (httpx's default transport) took about a
third of the bot's CPU (`bin/bench --profile`), and a busy loop delays every create and every token. A transport
is httpx's extension point for exactly this (https://www.python-httpx.org/advanced/transports/); aiohttp is
already what the Slack and Discord clients send with.

Errors keep httpx's meaning, which the runner relies on: only a failure before the request left this machine
(`httpx.ConnectError`, `httpx.ConnectTimeout`) says nothing was created; anything later is a read or protocol
error, after which a create may exist (bot.runner looks for it instead of sending it again).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

KEEPALIVE_S = 15.0  # an idle connection is closed after this long (aiohttp's default; httpx's is 5 s)


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exception, raised again as the httpx exception for the same failure (the cause kept)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:  # no connection within the connect (or pool) timeout
        raise httpx.ConnectTimeout(str(error) or "connect timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:  # refused, unresolvable, TLS handshake failed, proxy refused
        raise httpx.ConnectError(str(error), request=request) from error
    except aiohttp.ServerTimeoutError as error:  # sent, but the answer stopped arriving for `read` seconds
        raise httpx.ReadTimeout(str(error) or "read timed out", request=request) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
        raise httpx.RemoteProtocolError(str(error) or type(error).__name__, request=request) from error
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as error:
        raise httpx.UnsupportedProtocol(str(error), request=request) from error
    except (aiohttp.ClientError, OSError) as error:  # reset, broken pipe: the request may have arrived
        raise httpx.ReadError(str(error) or type(error).__name__, request=request) from error


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body as it arrives (an event stream's events are not held back to fill a buffer)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Back to the pool when the body was read to its end; closed otherwise (aiohttp decides).
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (made on the first request: a session belongs to the running loop) with a pool of
    `max_connections`; httpx's timeouts (`connect`, `read`, `pool`) apply to every request."""

    def __init__(self, *, max_connections: int, ssl_context: ssl.SSLContext) -> None:
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, ssl=self._ssl_context, keepalive_timeout=KEEPALIVE_S
            )
            # httpx decodes Content-Encoding itself, from the headers it is given: aiohttp must not do it first.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None)
            )
        timeouts = request.extensions.get("timeout", {})
        connect_s, pool_s = timeouts.get("connect"), timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect_s is None or pool_s is None else connect_s + pool_s,  # a slot, then a socket
            sock_connect=connect_s,
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        with _as_httpx_errors(request):
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
