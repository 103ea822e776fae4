"""What every fake server shares: serving an aiohttp app on 127.0.0.1 (port 0), one vocabulary for scripting
it and reading what it received, and waiting on its state.

The vocabulary (every fake has each of these; each answers in its platform's own wire format):

| name             | meaning                                                                                     |
|------------------|---------------------------------------------------------------------------------------------|
| `fail(…)`        | the next `times` matching requests get a scripted error answer                              |
| `rate_limit(…)`  | the next `times` matching requests answer 429 with Retry-After                              |
| `requests`       | every request received, in order (`RecordedRequest`s, with the status each was answered)    |
| `requests_to(…)` | the received requests of one kind                                                           |
| `wait_until(…)`  | return once a predicate on the fake's state holds (checked at every change), else time out  |
| `fake_errors`    | bugs inside the fake (its own handlers' exceptions); every harness asserts it stays empty   |
| `start`/`close`  | serve on free ports / stop (`async with Fake() as fake:`); the aiohttp runner is kept here  |

What "matching" means, and the wire formats:

- `FakeReplicate`, by endpoint: "create" (POST a prediction), "get" (GET /v1/predictions/{id}), "model"
  (GET a model or one of its versions). `fail(endpoint, status, …)` answers RFC 7807 `application/problem+json`;
  `rate_limit(endpoint, …)` the same with 429 + `Retry-After`. `requests_to(method, path_prefix)`. Its own:
  `hold("create"|"cancel")` (takes effect, never answered) until `release_held()`; `take_requests()`.
- `FakeSlack`, by Web API method name ("upload" for byte uploads, "response_url" for response_url posts):
  `fail(method, error, status=200|5xx, drop=, when=)` answers `{"ok": false, "error": error}` (or drops the
  connection); `rate_limit(method, …)` answers 429 `{"ok": false, "error": "ratelimited"}` + `Retry-After`.
  `requests_to(method)`.
- `FakeDiscord`, by HTTP method + a regex searched in the path below /api/v10: `fail(method, path_regex, status,
  code, message)` answers `{"message", "code"}`; `rate_limit(method, path_regex, …)` answers 429 with JSON
  `retry_after`/`global`, `Retry-After`, `X-RateLimit-*` and `Via`. `requests_to(method, path_regex)`.

`fake_errors` never holds the client's mistakes: those get the platform's answer (and the client's Socket Mode
protocol violations are listed in `FakeSlack.socket.client_errors`).

Why waiters check synchronously: a fake's state can pass through a condition and leave it again before a
waiting task next runs (a status line shown for one edit). Each waiter's predicate is checked inside
`changed()`, the moment the fake records something, so no passing state is missed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from aiohttp import web

HOST = "127.0.0.1"
BACKLOG = 2048  # a benchmark opens hundreds of connections at once
SHUTDOWN_TIMEOUT_S = 2.0
VOCABULARY = ("fail", "rate_limit", "requests", "requests_to", "wait_until", "fake_errors", "start", "close")


async def serve_app(app: web.Application, *, tls: ssl.SSLContext | None = None) -> tuple[web.AppRunner, list[int]]:
    """Serve `app` on a free port (and, with `tls`, on a second, HTTPS one); returns the runner and the ports."""
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, 0, backlog=BACKLOG).start()
    if tls is not None:
        await web.TCPSite(runner, HOST, 0, backlog=BACKLOG, ssl_context=tls).start()
    return runner, [address[1] for address in runner.addresses]


class LocalServer:
    """The base of every fake: `start()` / `close()` (also `async with Fake() as fake:`), `wait_until`,
    `fake_errors`. A fake builds its app in `_app()`, describes its recent traffic in `_describe()` (for a
    timeout's message) and ends its own sockets and tasks in `_before_close()`."""

    def __init__(self) -> None:
        self.port = 0
        self.fake_errors: list[str] = []  # bugs inside the fake: every harness asserts it stays empty
        self._watch = StateWatch(type(self).__name__, self._describe_all)
        self._runner: web.AppRunner | None = None

    # --- for each fake to fill in ------------------------------------------------------------------

    def _app(self) -> web.Application:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def _tls(self) -> ssl.SSLContext | None:
        """A fake that also serves HTTPS (on a second port, `_started` gets both) returns its context here."""
        return None

    def _started(self, ports: list[int]) -> None:
        self.port = ports[0]

    async def _before_close(self) -> None:
        """End what the fake runs besides the HTTP server (sockets, tasks, held answers)."""

    # --- shared ------------------------------------------------------------------------------------

    async def start(self) -> Self:
        self._runner, ports = await serve_app(self._app(), tls=self._tls())
        self._started(ports)
        return self

    async def close(self) -> None:
        """End the fake's own sockets and tasks, stop the server, then tell whoever still waits."""
        await self._before_close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._changed()
        self._watch.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, *, what: str = "") -> None:
        """Return once `predicate()` is true. It is re-checked whenever something reaches the fake (a request,
        a socket frame, a state change), so it should look at the fake's state; an exception counts as "not yet"."""
        await self._watch.wait_until(predicate, timeout, what=what)

    def _changed(self) -> None:
        self._watch.changed()

    def _fake_error(self, where: str, error: BaseException) -> None:
        """A bug in the fake itself: kept for the harness's assertion (the client gets the platform's 500)."""
        self.fake_errors.append(f"{where}: {error!r}")
        self._changed()

    def _describe_all(self) -> str:
        return f"{self._describe()}; fake errors={self.fake_errors!r}"


@dataclass
class _Waiter:
    predicate: Callable[[], bool]
    future: asyncio.Future[None]
    error: Exception | None = None

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
