"""What every chat adapter is to the service, and the inbound sequence every adapter follows for a command.

A new platform is one module that builds an `Adapter` from the settings (`adapters.registry` lists the
builders) and calls `CommandIntake.take` for each command; nothing else in the service changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from aiohttp import web

from bot.core import CommandCore
from bot.replies import Failure
from bot.requests import CommandName, CommandRequest, Origin
from bot.tasks import BackgroundTasks
from config.settings import Settings

log = logging.getLogger(__name__)


class Adapter(Protocol):
    """One chat platform, as the service starts, watches and stops it."""

    name: str

    async def start(self) -> None:
        """Sign in and connect; a refused credential or an unreachable platform raises `StartupError`."""

    async def close(self) -> None:
        """Disconnect and release what `start` opened."""

    async def is_connected(self) -> bool:
        """Whether the platform can reach the bot now (for `/healthz`)."""

    async def wait_closed(self) -> None:
        """Return (or raise `StartupError`) only when the connection has ended for good."""

    def http_routes(self) -> list[web.RouteDef]:
        """Routes the adapter serves on the bot's HTTP port (Slack's HTTP mode); usually none."""


AdapterBuilder = Callable[[Settings, CommandCore, "CommandIntake"], "Adapter | None"]

Refuse = Callable[[str], Awaitable[None]]  # tell the user privately, in the platform's own way
# The platform's plain acknowledgement (Slack ack, Discord defer); what it returns is not read.
Acknowledge = Callable[[], Awaitable[object]]
Answer = Callable[[CommandRequest, float], Coroutine[Any, Any, None]]  # (request, ack latency in seconds)


class CommandIntake:
    """Claim the delivery, prepare the request, refuse privately or acknowledge, then answer in an owned task.

    Acknowledged as soon as the command is parsed, before any network call: the platforms give 3 s.
    """

    def __init__(self, core: CommandCore, tasks: BackgroundTasks) -> None:
        self._core = core
        self._tasks = tasks

    async def take(
        self,
        *,
        delivery_key: str,
        origin: Origin,
        command: CommandName | str,
        text: str,
        acknowledge: Acknowledge,
        refuse: Refuse,
        answer: Answer,
        typed_options: Mapping[str, object] | None = None,
        redelivered: Acknowledge | None = None,
        precondition: Callable[[CommandRequest], str | None] | None = None,
    ) -> None:
        """One command from `origin`. `redelivered` answers a delivery already taken (Slack still wants its ack);
        `precondition` may refuse a valid request for a platform reason (e.g. no permission to attach files)."""
        received = time.monotonic()
        if not self._core.claim_delivery(f"{origin.platform}:{delivery_key}"):
            log.info("%s: dropped a repeated delivery (%s)", origin.platform, delivery_key)
            if redelivered is not None:
                await redelivered()
            return
        prepared = await self._core.prepare(command, text, origin, typed_options)
        if isinstance(prepared, Failure):
            await refuse(prepared.message)
            return
        problem = precondition(prepared) if precondition is not None else None
        if problem is not None:
            await self._core.withdraw(prepared)
            await refuse(problem)
            return
        try:
            await acknowledge()
        except BaseException:
            await self._core.withdraw(prepared)  # never to run: its place and its units go back at once
            raise
        ack_latency_s = time.monotonic() - received
        self._tasks.spawn(answer(prepared, ack_latency_s), name=f"{origin.platform}-{prepared.request_id}")
