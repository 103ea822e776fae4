"""A running bot wired to a fake Discord and a fake Replicate, for end-to-end tests of the Discord adapter.

Both fakes are real servers on 127.0.0.1 (port 0) driven by the unmodified discord.py and replicate clients;
the bot is the real `BotService` with a fast `RunPolicy`. Tests script the fakes, send wire-shaped
interactions through the fake gateway, and assert on what the fakes received.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from adapters.rendering import CURSOR
from bot.runner import RunPolicy
from config.settings import Settings
from service.bot_service import BotService
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import FakeDiscord, RecordedRequest, SentInteraction
from tests.fakes.replicate_server import FakeReplicate
from tests.harness_common import (
    APPLICATION_ID,
    CHANNEL,
    DISCORD_TOKEN,
    FAST_POLICY,
    GUILD,
    PRIVILEGED_INTENTS,
    REPLICATE_TOKEN,
    WAIT_S,
    bot_settings,
    default_models,
    redirect_snapshot,
    restore_redirect,
)

SECOND_CHANNEL, USER = 334, 444
NO_MENTIONS: dict[str, list[str]] = {"parse": []}


@dataclass
class DiscordBot:
    """A started `BotService` (Discord only) plus the two fakes it talks to."""

    discord: FakeDiscord
    replicate: FakeReplicate
    service: BotService
    settings: Settings

    async def interact(self, name: str, options: dict[str, Any] | None = None, **where: Any) -> SentInteraction:
        return await self.discord.send_interaction(name, options, **where)

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        """Wait on the Discord fake (everything the bot shows ends there)."""
        await self.discord.wait_until(predicate, timeout, what=what)

    def original(self, sent: SentInteraction) -> StoredMessage:
        message = self.discord.original_message(sent.token)
        assert message is not None, "the interaction was never answered"
        return message

    def messages(self, sent: SentInteraction) -> list[StoredMessage]:
        """Every message of the interaction (original first, then follow-ups), deleted ones included."""
        state = self.discord.interactions[sent.token]
        return ([state.original] if state.original else []) + list(state.followups)

    def visible(self, sent: SentInteraction) -> list[StoredMessage]:
        return [m for m in self.messages(sent) if not m.deleted]

    def requests_for(self, sent: SentInteraction) -> list[RecordedRequest]:
        """REST requests made on behalf of this interaction (its callback and its webhook)."""
        return [r for r in self.discord.requests if sent.token in r.path]

    def callbacks(self, sent: SentInteraction) -> list[Any]:
        return [c for c in self.discord.callbacks if c.interaction_id == sent.id]

    async def answered(self, sent: SentInteraction, what: str = "the final answer") -> StoredMessage:
        """Until the original response holds something other than the "thinking…"/status placeholder."""
        await self.until(lambda: _finished(self.original(sent)), what)
        return self.original(sent)


def _finished(message: StoredMessage) -> bool:
    return not message.loading and not message.deleted and bool(message.content or message.attachments) \
        and not message.content.startswith("⏳") and not message.content.endswith(CURSOR)


@asynccontextmanager
async def running_bot(
    discord_fake: FakeDiscord, replicate: FakeReplicate, *, policy: RunPolicy = FAST_POLICY, sessions: int = 1,
    **overrides: Any
) -> AsyncIterator[BotService]:
    """A `BotService` started against the fakes, connected (READY written for each of its `sessions`: one per shard);
    shut down and un-redirected after."""
    saved = redirect_snapshot()
    settings = bot_settings(replicate, discord=discord_fake, **overrides)
    service = BotService(settings, policy)  # after FakeReplicate.start(): the transport trusts its certificate now
    ready_before = discord_fake.ready_count
    try:
        await service.start()
        replicate.take_requests()  # the start-up model look-ups are not what a command costs
        await discord_fake.wait_for_ready(ready_before + sessions, timeout=WAIT_S)
        yield service
    finally:
        await stop_service(service)
        restore_redirect(saved)


async def stop_service(service: BotService) -> None:
    """`BotService.shutdown()`, with discord.py closed first: the tests using this end with no command in
    flight, so nothing is left that would still want to reply through the closed client."""
    if (adapter := service.adapter("discord")) is not None:
        await adapter.close()
    await service.shutdown()


class SlowFollowUpDiscord(FakeDiscord):
    """A fake Discord that is slow to answer one follow-up post: the message is created at once (as on
    Discord), but the response is held until the bot's next request arrives (or `hold_s` passes).

    `on_hold` runs when the hold starts, so a test can make something happen exactly while the bot waits.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold_s = 1.0
        self.holding = False  # set True to hold the next follow-up post
        self.on_hold: Callable[[], None] = lambda: None
        self.held: list[int] = []  # ids of the messages whose responses were held

    async def _execute_webhook(self, request: web.Request) -> web.Response:
        response = await super()._execute_webhook(request)
        if self.holding and request.query.get("wait", "").lower() in ("1", "true"):
            self.holding = False
            assert isinstance(response.body, bytes)  # a JSON response
            self.held.append(int(json.loads(response.body)["id"]))
            seen = len(self.requests)
            self.on_hold()
            try:
                await self.wait_until(lambda: len(self.requests) > seen, self.hold_s, what="the bot's next request")
            except TimeoutError:
                pass  # a bot that waits for the answer gets it after `hold_s`
        return response


@asynccontextmanager
async def fakes(
    guilds: dict[int, list[int]] | None = None, discord_class: type[FakeDiscord] = FakeDiscord, **fake_options: Any
) -> AsyncIterator[tuple[FakeDiscord, FakeReplicate]]:
    """`fake_options` go to the fake Discord (e.g. `recommended_shards`, `max_concurrency`)."""
    replicate = FakeReplicate(api_token=REPLICATE_TOKEN, max_wait_s=5.0)
    await replicate.start()
    discord_fake = discord_class(token=DISCORD_TOKEN, application_id=APPLICATION_ID, bot_user_id=APPLICATION_ID,
                                 guilds=guilds or {GUILD: [CHANNEL, SECOND_CHANNEL]},
                                 privileged_intents=PRIVILEGED_INTENTS, **fake_options)
    await discord_fake.start()
    try:
        default_models(replicate)
        yield discord_fake, replicate
        assert discord_fake.fake_errors == [], discord_fake.fake_errors
        assert replicate.fake_errors == [], replicate.fake_errors
    finally:
        await discord_fake.close()
        await replicate.close()


@asynccontextmanager
async def discord_bot(
    discord_class: type[FakeDiscord] = FakeDiscord,
    arrange: Callable[[FakeReplicate], None] = lambda _: None,
    **overrides: Any,
) -> AsyncIterator[DiscordBot]:
    """`arrange` scripts the fake Replicate before the bot starts (and looks its models up)."""
    async with fakes(discord_class=discord_class) as (discord_fake, replicate):
        arrange(replicate)
        async with running_bot(discord_fake, replicate, **overrides) as service:
            settings = bot_settings(replicate, discord=discord_fake, **overrides)
            yield DiscordBot(discord_fake, replicate, service, settings)


# --- reading what the fakes received ----------------------------------------------------------------

FENCE_LINE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")


def fence_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if FENCE_LINE.match(line))


def bodies_with_content(requests: list[RecordedRequest]) -> list[tuple[RecordedRequest, dict[str, Any]]]:
    """Every message body the bot sent with text in it: callbacks' `data`, webhook and channel sends/edits."""
    found = []
    for request in requests:
        body = request.json
        if not isinstance(body, dict):
            continue
        if request.path.startswith("/interactions/"):
            body = body.get("data") or {}
        if body.get("content"):
            found.append((request, body))
    return found
