"""The whole bot (`BotService`, Slack and Discord adapters together) against fake Slack, Discord and Replicate,
plus readers that turn what the fakes received into "the final reply of this command".

Shared by the lifecycle and fault tests. Everything is a real server on 127.0.0.1 driven by the unmodified
clients; a test scripts the fakes, sends commands as the platforms would, and waits on the fakes' state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from adapters.rendering import CURSOR
from bot.runner import RunPolicy
from service.bot_service import BotService
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack, Message
from tests.harness_common import (
    APPLICATION_ID,
    CHANNEL,
    DISCORD_TOKEN,
    FAST_POLICY,
    GUILD,
    PRIVILEGED_INTENTS,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
    bot_settings,
    default_models,
    redirect_snapshot,
    restore_redirect,
)

SLACK_DRAFT_PREFIX = "_⏳"


@dataclass
class Bots:
    """A started `BotService` and the fakes it talks to (a platform the test did not ask for is None)."""

    replicate: FakeReplicate
    slack: FakeSlack | None
    discord: FakeDiscord | None
    service: BotService

    # --- Slack ---------------------------------------------------------------------------------------

    def slack_parents(self, channel: str) -> list[Message]:
        assert self.slack is not None
        return self.slack.channel_messages(channel)

    def slack_replies(self, channel: str) -> list[Message]:
        """Visible thread replies under every parent in `channel` (deleted drafts are gone)."""
        assert self.slack is not None
        return [reply for parent in self.slack_parents(channel) for reply in self.slack.thread(channel, parent.ts)]

    def slack_settled(self, channel: str) -> bool:
        """A thread reply exists and none is still a draft (status line or streaming cursor)."""
        replies = self.slack_replies(channel)
        return bool(replies) and not any(_slack_draft(reply) for reply in replies)

    async def slack_final(self, channel: str, timeout: float = WAIT_S) -> list[str]:
        """The settled thread replies' texts, once nothing in the channel's thread is a draft."""
        assert self.slack is not None
        await self.slack.wait_until(lambda: self.slack_settled(channel), timeout, what=f"settled reply in {channel}")
        return [reply.text for reply in self.slack_replies(channel)]

    # --- Discord -------------------------------------------------------------------------------------

    def discord_messages(self, sent: SentInteraction) -> list[StoredMessage]:
        """The interaction's visible messages: the original response (if not deleted), then follow-ups."""
        assert self.discord is not None
        state = self.discord.interactions[sent.token]
        return [m for m in ([state.original] if state.original else []) + list(state.followups) if not m.deleted]

    def discord_settled(self, sent: SentInteraction) -> bool:
        messages = self.discord_messages(sent)
        return bool(messages) and not any(_discord_draft(message) for message in messages)

    async def discord_final(self, sent: SentInteraction, timeout: float = WAIT_S) -> list[str]:
        assert self.discord is not None
        await self.discord.wait_until(lambda: self.discord_settled(sent), timeout, what=f"settled reply to {sent.id}")
        return [message.content for message in self.discord_messages(sent)]

    async def nothing_running(self, timeout: float = WAIT_S) -> None:
        """Until no prediction is left running on Replicate."""
        await self.replicate.wait_until(lambda: not self.replicate.running(), timeout, what="no prediction running")


def _slack_draft(message: Message) -> bool:
    return message.text.startswith(SLACK_DRAFT_PREFIX) or message.text.endswith(CURSOR)


def _discord_draft(message: StoredMessage) -> bool:
    return message.loading or message.content.startswith("⏳") or message.content.endswith(CURSOR)


@asynccontextmanager
async def started_fakes(*, slack: bool = True, discord: bool = True) -> AsyncIterator[
    tuple[FakeReplicate, FakeSlack | None, FakeDiscord | None]
]:
    """Fake Replicate (with the default models), and the chat fakes asked for; each checked for its own errors."""
    async with AsyncExitStack() as stack:
        replicate = await stack.enter_async_context(FakeReplicate(api_token=REPLICATE_TOKEN))
        default_models(replicate)
        slack_fake = await stack.enter_async_context(
            FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN)) if slack else None
        discord_fake = await stack.enter_async_context(FakeDiscord(
            token=DISCORD_TOKEN, application_id=APPLICATION_ID, guilds={GUILD: [CHANNEL]},
            privileged_intents=PRIVILEGED_INTENTS)) if discord else None
        yield replicate, slack_fake, discord_fake
        assert replicate.fake_errors == []
        if slack_fake is not None:
            assert slack_fake.fake_errors == [] and slack_fake.socket.client_errors == []
        if discord_fake is not None:
            assert discord_fake.fake_errors == []


@asynccontextmanager
async def running_bots(
    *,
    slack: bool = True,
    discord: bool = True,
    policy: RunPolicy = FAST_POLICY,
    arrange: Callable[[FakeReplicate], None] = lambda _: None,
    service_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Bots]:
    """A started `BotService` with the chat platforms asked for, connected; shut down (and discord.py
    un-redirected) afterwards. `arrange` scripts the fake Replicate before the bot starts."""
    async with started_fakes(slack=slack, discord=discord) as (replicate, slack_fake, discord_fake):
        arrange(replicate)
        saved = redirect_snapshot()
        service = BotService(bot_settings(replicate, slack_fake, discord_fake, **overrides), policy,
                             **(service_options or {}))
        try:
            await service.start()
            replicate.take_requests()  # the start-up model look-ups are not what a command costs
            if slack_fake is not None:
                await slack_fake.wait_for_socket(1, timeout=WAIT_S)
            if discord_fake is not None:
                await discord_fake.wait_for_ready(1, timeout=WAIT_S)
            yield Bots(replicate, slack_fake, discord_fake, service)
        finally:
            await service.shutdown()
            restore_redirect(saved)
