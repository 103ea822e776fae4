"""The `replicate.Client`s of one event loop, sized for our concurrency and wired to report Retry-After.

Why: `Client(limits=…)` is silently ignored (replicate/client.py builds its transport without it), so the pool
size goes in through the transport; and `ReplicateError` drops response headers, so a response hook keeps
`Retry-After` for the runner.
Why several clients: httpcore re-scans its whole pool at every request's start and end, at a cost that
grows with the square of the pool (encode/httpcore#1035). One pool of 400 connections for 200 streamed
answers took most of the bot's CPU in `bin/bench`; pools of `CONNECTIONS_PER_CLIENT` keep each scan cheap.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import ssl
from collections.abc import Iterator

import httpx
import replicate

CONNECTIONS_PER_CLIENT = 32

# The Retry-After of the last 429 this task received from Replicate, in seconds.
last_retry_after_s: contextvars.ContextVar[float | None] = contextvars.ContextVar("last_retry_after_s", default=None)


async def _remember_retry_after(response: httpx.Response) -> None:
    if response.status_code == 429:
        last_retry_after_s.set(parse_retry_after(response.headers.get("retry-after")))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; HTTP dates are rare on APIs and treated as absent."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def build_replicate_client(
    api_token: str, base_url: str, *, max_connections: int, ssl_context: ssl.SSLContext | None = None
) -> replicate.Client:
    """A client whose pool fits `max_connections` concurrent requests (streams and waits hold one each)."""
    transport = httpx.AsyncHTTPTransport(
        verify=ssl_context or httpx.create_ssl_context(),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
    )
    return replicate.Client(
        api_token=api_token,
        base_url=base_url,
        transport=transport,
        event_hooks={"response": [_remember_retry_after]},
    )


async def close_replicate_client(client: replicate.Client) -> None:
    """`replicate.Client` has no close() (replicate/client.py); its httpx client does."""
    await client._async_client.aclose()


class ReplicateClients:
    """Enough clients for `max_connections`, each with a small pool; a prediction leases the least busy one."""

    def __init__(self, clients: list[replicate.Client]) -> None:
        if not clients:
            raise ValueError("at least one client is needed")
        self._clients = clients
        self._leases = [0] * len(clients)

    @classmethod
    def build(
        cls,
        api_token: str,
        base_url: str,
        *,
        max_connections: int,
        per_client: int = CONNECTIONS_PER_CLIENT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> ReplicateClients:
        count = max(1, math.ceil(max_connections / per_client))
        size = math.ceil(max_connections / count)
        ssl_context = ssl_context or httpx.create_ssl_context()  # loading the CA bundle takes ~15 ms: once
        return cls([
            build_replicate_client(api_token, base_url, max_connections=size, ssl_context=ssl_context)
            for _ in range(count)
        ])

    def __len__(self) -> int:
        return len(self._clients)

    @contextlib.contextmanager
    def lease(self) -> Iterator[replicate.Client]:
        """The client with the fewest predictions on it, for one prediction's whole life (create to download)."""
        index = self._least_busy()
        self._leases[index] += 1
        try:
            yield self._clients[index]
        finally:
            self._leases[index] -= 1

    def any(self) -> replicate.Client:
        """A client for a one-off request (a cancel)."""
        return self._clients[self._least_busy()]

    def _least_busy(self) -> int:
        return min(range(len(self._clients)), key=self._leases.__getitem__)

    async def aclose(self) -> None:
        for client in self._clients:
            await close_replicate_client(client)
