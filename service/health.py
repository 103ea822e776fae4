"""`GET /healthz`: each adapter's connection state, the commands running and those queued, 503 past the
reconnect window.

Why a window: Slack sockets and Discord gateways drop and come back routinely; only a connection that
stays down longer than `reconnect_window_s` means the process should be restarted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from bot.core import CommandCore

HEALTH_PATH = "/healthz"
RECONNECT_WINDOW_S = 60.0

ConnectionProbe = Callable[[], Awaitable[bool]]


class HealthMonitor:
    def __init__(
        self,
        core: CommandCore,
        probes: Mapping[str, ConnectionProbe],
        *,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._probes = dict(probes)
        self._window_s = reconnect_window_s
        self._clock = clock
        self._down_since: dict[str, float] = {}

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body)."""
        now = self._clock()
        adapters: dict[str, Any] = {}
        healthy = True
        for name, probe in self._probes.items():
            connected = await probe()
            if connected:
                self._down_since.pop(name, None)
                adapters[name] = {"connected": True}
                continue
            since = self._down_since.setdefault(name, now)
            down_for = now - since
            adapters[name] = {"connected": False, "down_for_s": round(down_for, 1)}
            if down_for > self._window_s:
                healthy = False
        body = {
            "status": "ok" if healthy else "unhealthy",
            "accepting": self._core.accepting,
            "adapters": adapters,
            "running": self._core.running,  # predictions admitted to run (at most MAX_CONCURRENT_PREDICTIONS)
            "queued": self._core.queued,  # commands waiting for a slot (at most MAX_QUEUED)
        }
        return healthy, body

    async def handle(self, request: web.Request) -> web.Response:
        healthy, body = await self.report()
        return web.json_response(body, status=200 if healthy else 503)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(HEALTH_PATH, self.handle)]
