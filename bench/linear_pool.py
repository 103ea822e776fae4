"""Experiment only (`bin/bench --linear-pool`): httpcore's pool bookkeeping made linear, to measure its cost.

Why: httpcore 1.0.9's `AsyncConnectionPool._assign_requests_to_connections` runs on every request start
and end and, for each idle connection, re-counts every connection (`len([c.is_idle() for c in ...])`),
so one pass costs O(connections²). With 200 streams and 200 finished creates in one pool, each pass scans
~400×400 connections while holding the event loop. Upstream: encode/httpcore#1035 (open), fixed in the
httpx2 fork (pydantic/httpx2#974). This replacement does the same work in one pass per call; running
the benchmark with and without it shows how much of the bot's lag and slowness is this alone.

It changes nothing in the product: `bench/instrumented_bot.py` installs it only when `BENCH_LINEAR_POOL=1`.
"""

from __future__ import annotations

from typing import Any

from httpcore._async.connection_pool import AsyncConnectionPool


def _assign_requests_to_connections(self: Any) -> list[Any]:
    """httpcore's assignment rules, each connection examined a constant number of times per pass."""
    closing: list[Any] = []
    kept: list[Any] = []
    for connection in self._connections:
        if connection.is_closed():
            continue
        if connection.has_expired():
            closing.append(connection)
        else:
            kept.append(connection)
    idle = [connection for connection in kept if connection.is_idle()]
    surplus = set(idle[: max(0, len(idle) - self._max_keepalive_connections)])
    closing.extend(surplus)
    self._connections = [connection for connection in kept if connection not in surplus]

    # As upstream, a connection stays "available" until its request starts, so one snapshot per pass
    # assigns exactly what re-filtering per request would.
    available = [connection for connection in self._connections if connection.is_available()]
    idle_connections = [connection for connection in self._connections if connection.is_idle()]
    for pool_request in [request for request in self._requests if request.is_queued()]:
        origin = pool_request.request.url.origin
        reusable = next((c for c in available if c.can_handle_request(origin)), None)
        if reusable is not None:
            pool_request.assign_to_connection(reusable)
        elif len(self._connections) < self._max_connections:
            connection = self.create_connection(origin)
            self._connections.append(connection)
            pool_request.assign_to_connection(connection)
        elif idle_connections:
            victim = idle_connections.pop(0)
            self._connections.remove(victim)
            closing.append(victim)
            connection = self.create_connection(origin)
            self._connections.append(connection)
            pool_request.assign_to_connection(connection)
    return closing


def install() -> None:
    AsyncConnectionPool._assign_requests_to_connections = _assign_requests_to_connections  # type: ignore[method-assign]
