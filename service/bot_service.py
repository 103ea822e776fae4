"""The running bot: the core, every configured chat adapter and the HTTP port, started and stopped together.

Shutdown: new commands are refused politely, running ones get `SHUTDOWN_GRACE` seconds, then whatever is
left is cancelled on Replicate and its users told, all within `SHUTDOWN_TAIL_S` more seconds.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import time
from collections.abc import Callable

from adapters.base import Adapter, CommandIntake
from adapters.registry import PLATFORMS
from adapters.startup import StartupError
from bot.factory import CoreResources, create_core
from bot.inflight import Journal
from bot.runner import RunPolicy
from bot.state.retention import purge_every
from bot.state.store import StateStoreError
from bot.tasks import BackgroundTasks
from config.settings import Settings
from service.health import RECONNECT_WINDOW_S, HealthMonitor
from service.http_server import HttpPort
from service.metrics import BotMetrics
from service.recovery import Recovery

log = logging.getLogger(__name__)
# After SHUTDOWN_GRACE, everything else (cancels on Replicate, the users' last replies, closing connections)
# fits in SHUTDOWN_TAIL_S: with the default grace of 25 s the process is gone before Heroku's kill at 30 s
# (devcenter.heroku.com/articles/dynos#shutdown). Cancels get the first part, last replies the rest.
SHUTDOWN_TAIL_S = 4.0
CANCELS_SHARE_S = 2.0
CLOSE_RESERVE_S = 0.5


async def open_state(resources: CoreResources) -> None:
    """The state store before any command: limits and settings must hold from the first one."""
    try:
        await resources.open_state()
    except StateStoreError as error:
        raise StartupError(f"STATE_URL can't be opened ({error})", "check the path or the Redis server") from error


class BotService:
    """The chat adapters, the HTTP port (`/healthz`, `/metrics`, an adapter's own routes) and the core, started and
    stopped together."""

    def __init__(
        self,
        settings: Settings,
        policy: RunPolicy | None = None,
        *,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self.metrics = BotMetrics()  # this service's own registry: several services in one process never clash
        self._resources = create_core(settings, policy, observer=self.metrics)
        self.core = self._resources.core
        self.tasks = BackgroundTasks("command")
        self._housekeeping = BackgroundTasks("housekeeping")
        intake = CommandIntake(self.core, self.tasks)
        self.adapters: list[Adapter] = [
            adapter for build in PLATFORMS if (adapter := build(settings, self.core, intake)) is not None
        ]
        self.metrics.watch(self.core, self.adapters)
        probes = {adapter.name: adapter.is_connected for adapter in self.adapters}
        self.health = HealthMonitor(self.core, probes, reconnect_window_s=reconnect_window_s, clock=clock)
        self._http: HttpPort | None = None
        self.recovery: Recovery | None = None
        self.http_host: str | None = None  # where the HTTP port is bound, once started
        self.http_port: int | None = None

    @property
    def adapter_names(self) -> list[str]:
        return [adapter.name for adapter in self.adapters]

    def adapter(self, name: str) -> Adapter | None:
        """The running adapter of platform `name` (`slack`, `discord`), if that platform is configured."""
        return next((adapter for adapter in self.adapters if adapter.name == name), None)

    async def start(self) -> None:
        await open_state(self._resources)
        # Then the models: they decide which commands and options the adapters offer (Discord registers them).
        await self._resources.load_models()
        routes = self.health.routes() + self.metrics.routes()
        routes += [route for adapter in self.adapters for route in adapter.http_routes()]
        self._http = HttpPort(routes)
        try:
            await self._http.start(self._settings.http_listen_host, self._settings.port)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            what = f"PORT {self._settings.port} is already in use"
            raise StartupError(what, "stop what listens there, or set PORT to a free port") from error
        self.http_host, self.http_port = self._http.address
        log.info("HTTP: %s on %s:%d", ", ".join(sorted({route.path for route in routes})), self.http_host,
                 self.http_port)
        for adapter in self.adapters:
            await adapter.start()
        if self._resources.store is not None:
            self._housekeeping.spawn(purge_every(self._resources.store), name="state-purge")
            journal = Journal(self._resources.store, heartbeat_s=self._settings.heartbeat_timeout_s)
            self.core.use_journal(journal)
            # A SQLite file serves one process at a time: whatever is in flight there at start-up was left by the
            # process before this one, which is gone.
            single_process = self._settings.governance.state_url.startswith("sqlite:")
            self.recovery = Recovery(self.core, journal, self.adapters, self.tasks,
                                     takes_every_entry_at_start=single_process)
            self._housekeeping.spawn(self.recovery.run(), name="recovery")
        # What start-up made (modules, clients, the model catalog) lives as long as the process: frozen out of the
        # collector's sight (https://docs.python.org/3/library/gc.html#gc.freeze), a full collection during a burst
        # of commands scans only what the commands made (in `bin/bench`, 35–50 ms pauses down to ~15 ms).
        gc.collect()
        gc.freeze()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; raises `StartupError` if a platform ends the connection for good meanwhile (Discord's
        gateway refusing the token): a bot that cannot get its commands must stop, not look alive on `/healthz`."""
        waits: set[asyncio.Task[object]] = {asyncio.create_task(stop.wait(), name="stop-signal")}
        waits |= {asyncio.create_task(adapter.wait_closed(), name=f"{adapter.name}-watch") for adapter in self.adapters}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for wait in done:
            wait.result()  # a platform's StartupError, if that is what ended the wait

    async def shutdown(self) -> None:
        """Refuse new commands, let in-flight ones finish within the grace, cancel the rest, close everything."""
        loop = asyncio.get_running_loop()
        grace_ends = loop.time() + self._settings.shutdown_grace_s
        self.core.stop_accepting()
        await self.core.drain(self._settings.shutdown_grace_s, cancels_by=grace_ends + CANCELS_SHARE_S)
        replies_by = grace_ends + SHUTDOWN_TAIL_S - CLOSE_RESERVE_S
        await self.tasks.wait(max(replies_by - loop.time(), 0.0))  # the cancelled commands' last replies
        await self.tasks.cancel_all()
        await self._housekeeping.cancel_all()
        for adapter in self.adapters:
            await adapter.close()
        if self._http is not None:
            await self._http.close()
        await self._resources.aclose()
        gc.unfreeze()  # what start-up made may be collected again (several services in one process: the tests)
        log.info("Stopped cleanly")


