"""What every chat adapter is to the service, and the inbound sequence every adapter follows for a command.

A new platform is one module that builds an `Adapter` from the settings (`adapters.registry` lists the
builders) and calls `CommandIntake.take` for each command; nothing else in the service changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol

from aiohttp import web

from adapters.ack_first import AcksFirst
from bot.buttons import STOP_EXPIRED_TEXT, STOP_NOT_YOURS_TEXT, ButtonAction, StopOutcome
from bot.core import CommandCore
from bot.replies import Failure, ReplyEvent
from bot.requests import CommandName, CommandRequest, Origin
from bot.state.store import StateStoreError
from bot.tasks import BackgroundTasks
from config.settings import Settings

log = logging.getLogger(__name__)

# `/replicate` is answered in the acknowledgement when the core has the answer by then (state store I/O, normally
# milliseconds); past it, the command is acknowledged and answered when ready. Slack and Discord allow 3 s for the
# acknowledgement (api.slack.com/interactivity/slash-commands#responding_to_commands,
# discord.com/developers/docs/interactions/receiving-and-responding#responding-to-an-interaction).
ADMIN_ANSWER_WAIT_S = 2.0
ADMIN_FAILED_TEXT = "Something went wrong on our side. Try again in a moment."
PRESS_FAILED_TEXT = ADMIN_FAILED_TEXT


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

    async def resume(
        self, request: CommandRequest, destination: Mapping[str, Any], events: AsyncIterator[ReplyEvent]
    ) -> None:
        """Finish an answer that a process which died began (`service.recovery`), where `destination` says: the
        dict this adapter noted for it (`CommandCore.note_destination`). `events` follow its prediction from the
        start. Returning before their end, when the answer can go nowhere, cancels the prediction."""


AdapterBuilder = Callable[[Settings, CommandCore, "CommandIntake"], "Adapter | None"]

Refuse = Callable[[str], Awaitable[None]]  # tell the user privately, in the platform's own way
# The platform's plain acknowledgement (Slack ack, Discord defer); what it returns is not read.
Acknowledge = Callable[[], Awaitable[object]]
Answer = Callable[[CommandRequest, float], Coroutine[Any, Any, None]]  # (request, ack latency in seconds)
Tell = Callable[[str], Awaitable[object]]  # one private message, in the platform's own way


class CommandIntake:
    """Claim the delivery, prepare the request, refuse privately or acknowledge, then answer in an owned task.

    Acknowledged as soon as the command is parsed, before any network call: the platforms give 3 s. Answers start
    once no delivery is owed its acknowledgement (`adapters.ack_first`).
    """

    def __init__(self, core: CommandCore, tasks: BackgroundTasks) -> None:
        self._core = core
        self._tasks = tasks
        self._acks = AcksFirst()

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
        with self._acks.owed():
            prepared = await self._prepare_and_acknowledge(
                delivery_key, origin, command, text, typed_options, acknowledge, refuse, redelivered, precondition)
        if prepared is not None:
            self._start_answer(answer, prepared, received)

    def _start_answer(self, answer: Answer, request: CommandRequest, received: float) -> None:
        """The answer in an owned task, started once no delivery is owed its ack; `received` is when it arrived."""
        latency_s = time.monotonic() - received
        self._tasks.spawn(self._acks.answer(lambda: answer(request, latency_s)),
                          name=f"{request.origin.platform}-{request.request_id}")

    async def _prepare_and_acknowledge(
        self,
        delivery_key: str,
        origin: Origin,
        command: CommandName | str,
        text: str,
        typed_options: Mapping[str, object] | None,
        acknowledge: Acknowledge,
        refuse: Refuse,
        redelivered: Acknowledge | None,
        precondition: Callable[[CommandRequest], str | None] | None,
    ) -> CommandRequest | None:
        """`take` up to the acknowledgement: the request to answer, or None (repeated, refused, withdrawn)."""
        if not await self._core.claim_delivery(f"{origin.platform}:{delivery_key}"):
            log.info("%s: dropped a repeated delivery (%s)", origin.platform, delivery_key)
            if redelivered is not None:
                await redelivered()
            return None
        prepared = await self._core.prepare(command, text, origin, typed_options)
        if isinstance(prepared, Failure):
            await refuse(prepared.message)
            return None
        problem = precondition(prepared) if precondition is not None else None
        if problem is not None:
            await self._core.withdraw(prepared)
            await refuse(problem)
            return None
        try:
            await acknowledge()
        except BaseException:
            await self._core.withdraw(prepared)  # never to run: its place and its units go back at once
            raise
        return prepared

    async def take_turn(
        self,
        *,
        delivery_key: str,
        origin: Origin,
        text: str,
        conversation_id: str | None,
        refuse: Refuse,
        answer: Answer,
        forgotten: bool = False,
    ) -> None:
        """A message that continues a conversation (or starts one: `conversation_id` None): claimed once (a
        redelivered event, or the same message arriving as a mention and as a message, answers once), governed
        like /ask, refused privately in the platform's way, else answered in an owned task. Messages need no ack.
        """
        received = time.monotonic()
        if not await self._core.claim_delivery(f"{origin.platform}:{delivery_key}"):
            log.info("%s: dropped a repeated delivery (%s)", origin.platform, delivery_key)
            return
        prepared = await self._core.prepare_turn(text, origin, conversation_id=conversation_id, forgotten=forgotten)
        if isinstance(prepared, Failure):
            await refuse(prepared.message)
            return
        self._start_answer(answer, prepared, received)

    async def take_press(
        self,
        *,
        delivery_key: str,
        origin: Origin,
        action: ButtonAction,
        request_id: str,
        refuse: Refuse,
        answer: Answer,
        acknowledge: Acknowledge | None = None,
    ) -> None:
        """A button press: claimed once (a redelivered interaction is taken once), acknowledged (`acknowledge`,
        right after the claim, for a platform that must not acknowledge twice; Slack's adapter acks every delivery
        itself, first), then handled in an owned task. Again runs the finished command `request_id` anew as the
        presser's command (their limits and access; a double press is dropped; a refusal or an expired button is
        told privately), answered like a command; Stop cancels the running command if the presser may, else says
        why not.
        """
        received = time.monotonic()
        with self._acks.owed():
            if not await self._core.claim_delivery(f"{origin.platform}:{delivery_key}"):
                log.info("%s: dropped a repeated delivery of a button press (%s)", origin.platform, delivery_key)
                return
            if acknowledge is not None:
                await acknowledge()  # only the claim (one store round trip) comes before it; Replicate after
        self._tasks.spawn(self._acks.answer(lambda: self._press(origin, action, request_id, refuse, answer, received)),
                          name=f"{origin.platform}-{action}-{request_id}")

    async def _press(
        self, origin: Origin, action: ButtonAction, request_id: str, refuse: Refuse, answer: Answer, received: float
    ) -> None:
        if action is ButtonAction.STOP:
            outcome = self._core.stop(request_id, origin)
            if outcome is StopOutcome.NOT_RUNNING:  # not here: perhaps in another process (the journal knows)
                try:
                    outcome = await self._core.stop_elsewhere(request_id, origin)
                except StateStoreError:
                    log.exception("%s: Stop could not look for command %s elsewhere", origin.platform, request_id)
            if outcome is not StopOutcome.STOPPING:
                await refuse(STOP_NOT_YOURS_TEXT if outcome is StopOutcome.NOT_YOURS else STOP_EXPIRED_TEXT)
            return
        try:
            prepared = await self._core.prepare_again(request_id, origin)
        except StateStoreError:  # the presser hears it privately, the operator in the log
            log.exception("%s: Again failed for %s", origin.platform, origin.user_id)
            await refuse(PRESS_FAILED_TEXT)
            return
        if prepared is None:
            log.info("%s: dropped a double press of Again by %s", origin.platform, origin.user_id)
        elif isinstance(prepared, Failure):
            await refuse(prepared.message)
        else:
            await answer(prepared, time.monotonic() - received)

    async def administer(
        self,
        *,
        delivery_key: str,
        origin: Origin,
        text: str,
        answer_in_ack: Tell,
        acknowledge: Acknowledge,
        answer_later: Tell,
        redelivered: Acknowledge | None = None,
    ) -> None:
        """`/replicate <text>`, answered privately: in the acknowledgement if the answer is ready within
        `ADMIN_ANSWER_WAIT_S`, else acknowledged at once and sent when ready. A repeated delivery answers once."""
        if not await self._core.claim_delivery(f"{origin.platform}:{delivery_key}"):
            log.info("%s: dropped a repeated delivery (%s)", origin.platform, delivery_key)
            if redelivered is not None:
                await redelivered()
            return
        # Owned, so an answer still being computed at shutdown is waited for like a command's.
        answer = self._tasks.spawn(self._administration(origin, text), name=f"{origin.platform}-replicate")
        done, _ = await asyncio.wait({answer}, timeout=ADMIN_ANSWER_WAIT_S)
        if done:
            await answer_in_ack(answer.result())
            return
        await acknowledge()
        self._tasks.spawn(_send_when_ready(answer, answer_later), name=f"{origin.platform}-replicate-answer")

    async def _administration(self, origin: Origin, text: str) -> str:
        try:
            return await self._core.administer(origin, text)
        except Exception:  # the state store failed: the user hears it privately, the operator in the log
            log.exception("%s: /replicate failed for %s", origin.platform, origin.user_id)
            return ADMIN_FAILED_TEXT


async def _send_when_ready(answer: asyncio.Task[str], send: Tell) -> None:
    await send(await answer)
