"""A running bot wired to a fake Slack and a fake Replicate, for end-to-end tests of the Slack adapter.

Both fakes are real servers on 127.0.0.1 (port 0) driven by the unmodified slack_bolt/slack_sdk and replicate
clients; the bot is the real `BotService`, in Socket Mode or (with `http_mode`) behind its HTTP endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bot.runner import RunPolicy
from service.bot_service import BotService
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack, Message
from tests.harness_common import (
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
    bot_settings,
    default_models,
)

SIGNING_SECRET = "fake-signing-secret"
CURSOR = "▍"  # the streaming cursor's glyph, which ends a draft
CHANNEL = "C0CHAN"


@dataclass
class SlackBot:
    """A started `BotService` (Slack only) plus the two fakes it talks to."""

    slack: FakeSlack
    replicate: FakeReplicate
    service: BotService

    def parents(self, channel: str = CHANNEL) -> list[Message]:
        return self.slack.channel_messages(channel)

    def replies(self, channel: str = CHANNEL) -> list[Message]:
        """The thread replies under the channel's first parent."""
        parents = self.parents(channel)
        return self.slack.thread(channel, parents[0].ts) if parents else []

    async def ask_in_each(self, channels: list[str], *, ending: str, timeout: float = 15) -> None:
        """`/ask` in every channel at once, then wait until each thread holds a finished answer."""
        for channel in channels:
            await self.slack.send_slash_command(command="/ask", text="go", channel_id=channel)
        await self.slack.wait_until(lambda: all(self.answered(channel, ending=ending) for channel in channels),
                                    timeout=timeout, what="every answer")

    def answered(self, channel: str = CHANNEL, ending: str = "") -> bool:
        replies = self.replies(channel)
        return bool(replies) and not any(CURSOR in m.text or m.text.startswith("_⏳") for m in replies) and \
            replies[-1].text.endswith(ending)


@asynccontextmanager
async def slack_bot(
    *,
    http_mode: bool = False,
    timeout_s: float = 10,
    arrange: Callable[[FakeReplicate], None] = lambda _: None,
    **overrides: Any,
) -> AsyncIterator[SlackBot]:
    """`arrange` scripts the fake Replicate (after its default models) before the bot starts; `http_mode` serves
    Slack's requests on the bot's HTTP endpoint (signed with `SIGNING_SECRET`) instead of Socket Mode; `overrides`
    go to `bot_settings`."""
    async with FakeReplicate(api_token=REPLICATE_TOKEN) as replicate, \
            FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN) as slack:
        default_models(replicate)
        arrange(replicate)
        settings = bot_settings(replicate, slack, slack_app_token=None if http_mode else slack.app_token,
                                slack_signing_secret=SIGNING_SECRET if http_mode else None, **overrides)
        service = BotService(settings, RunPolicy(timeout_s=timeout_s, poll_interval_s=0.05, create_wait_s=1))
        await service.start()
        replicate.take_requests()  # the start-up model look-ups are not what a command costs
        if not http_mode:
            await slack.wait_for_socket(1, timeout=WAIT_S)
        try:
            yield SlackBot(slack, replicate, service)
        finally:
            await service.shutdown()


@asynccontextmanager
async def restartable_bot(
    slack: FakeSlack, replicate: FakeReplicate, state_url: str, **overrides: Any
) -> AsyncIterator[BotService]:
    """A started bot (Socket Mode) on `state_url`; a second one on the same URL is the first restarted."""
    settings = bot_settings(replicate, slack, state_url=state_url, **overrides)
    running = BotService(settings, RunPolicy(timeout_s=10, poll_interval_s=0.05, create_wait_s=1))
    sockets = slack.socket.ready_count
    await running.start()
    await slack.wait_for_socket(sockets + 1, timeout=WAIT_S)
    try:
        yield running
    finally:
        await running.shutdown()
