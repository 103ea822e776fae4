"""What every fake server shares: serving an aiohttp app on 127.0.0.1 (port 0), and waiting on its state.

Why waiters check synchronously: a fake's state can pass through a condition and leave it again before a
waiting task next runs (a status line shown for one edit). Each waiter's predicate is checked inside
`changed()`, the moment the fake records something, so no passing state is missed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Self

from aiohttp import web

HOST = "127.0.0.1"
BACKLOG = 2048  # a benchmark opens hundreds of connections at once
SHUTDOWN_TIMEOUT_S = 2.0


async def serve_app(app: web.Application, *, tls: Optional[ssl.SSLContext] = None) -> tuple[web.AppRunner, list[int]]:
    """Serve `app` on a free port (and, with `tls`, on a second, HTTPS one); returns the runner and the ports."""
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0, backlog=BACKLOG).start()
    if tls is not None:
        await web.TCPSite(runner, HOST, 0, backlog=BACKLOG, ssl_context=tls).start()
    return runner, [address[1] for address in runner.addresses]


class LocalServer:
    """A fake's `start()` / `close()`, also as `async with Fake() as fake:`."""

    async def start(self) -> Self:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]
    error: Optional[Exception] = None

    def check(self) -> None:
        if self.future.done():
            return
        try:
            ok = bool(self.predicate())
        except Exception as error:  # e.g. `fake.thread(...)[0]` before the reply exists: not yet
            self.error, ok = error, False
        if ok:
            self.future.set_result(None)


class StateWatch:
    """`wait_until` for one fake: the fake calls `changed()` whenever it records something."""

    def __init__(self, fake_name: str, describe: Callable[[], str]) -> None:
        self._fake_name = fake_name
        self._describe = describe  # the fake's recent traffic, for a timeout's message
        self._waiters: list[_Waiter] = []

    def changed(self) -> None:
        for waiter in list(self._waiters):
            waiter.check()

    def close(self) -> None:
        """The fake stopped: whoever still waits learns it now rather than at their timeout."""
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(RuntimeError(f"{self._fake_name} closed"))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, *, what: str = "") -> None:
        """Return once `predicate()` is true (checked now and at every change); an exception counts as "not yet"."""
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        waiter.check()
        if waiter.future.done():
            return
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self._fake_name}.wait_until({what or getattr(predicate, '__name__', 'predicate')}) not true after "
                f"{timeout}s (last predicate error: {waiter.error!r}); {self._describe()}"
            ) from None
        finally:
            self._waiters.remove(waiter)
