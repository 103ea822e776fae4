"""Discord shards over the wire: the real bot (in this process, and as real `python -m bot` processes) against the
fake gateway, which shards like Discord: a guild's events go to shard `(guild_id >> 22) % count`, DMs to shard 0,
IDENTIFYs beyond `max_concurrency` per 5 s get op 9."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from adapters.discord_adapter import DiscordAdapter
from tests.discord_harness import DiscordBot, fakes, running_bot
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack
from tests.harness_common import (
    ANSWER,
    APPLICATION_ID,
    DISCORD_TOKEN,
    PRIVILEGED_INTENTS,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
    bot_settings,
    default_models,
)
from tests.process_harness import QUICK_TOKENS, BotProcess, add_process_models, discord_contents, launch_bot

# Guilds whose events Discord sends to shard 0 and to shard 1 of 2: (guild_id >> 22) % 2.
GUILD_ON_SHARD_0, GUILD_ON_SHARD_1 = 10 << 22, 11 << 22
CHANNEL_ON_SHARD_0, CHANNEL_ON_SHARD_1 = 5001, 5002
SHARDED_GUILDS = {GUILD_ON_SHARD_0: [CHANNEL_ON_SHARD_0], GUILD_ON_SHARD_1: [CHANNEL_ON_SHARD_1]}
QUICK_ANSWER = "".join(QUICK_TOKENS)  # what the processes' /ask model says
NO_GUILD_COMMANDS: dict[str, Any] = {"discord_guild_ids": ()}  # global commands: the harness's guild is not here


@asynccontextmanager
async def sharded_bot(**fake_options: Any) -> AsyncIterator[DiscordBot]:
    """One bot in this process, with no shard settings, against a fake Discord that recommends 2 shards."""
    async with fakes(guilds=SHARDED_GUILDS, recommended_shards=2, **fake_options) as (fake, replicate), \
            running_bot(fake, replicate, sessions=2, **NO_GUILD_COMMANDS) as service:
        yield DiscordBot(fake, replicate, service, bot_settings(replicate, discord=fake, **NO_GUILD_COMMANDS))


def discord_adapter(bot: DiscordBot) -> DiscordAdapter:
    adapter = bot.service.adapter("discord")
    assert isinstance(adapter, DiscordAdapter)
    return adapter


async def test_by_default_one_process_runs_every_recommended_shard_and_answers_guilds_on_each_and_dms() -> None:
    async with sharded_bot(max_concurrency=2) as bot:
        assert bot.discord.identified_shards() == [[0, 2], [1, 2]]
        assert len(bot.discord.requests_to("GET", r"^/gateway/bot$")) == 1  # asked once: count, concurrency

        on_shard_0 = await bot.interact("ask", {"prompt": "hi"}, guild_id=GUILD_ON_SHARD_0)
        on_shard_1 = await bot.interact("ask", {"prompt": "hi"}, guild_id=GUILD_ON_SHARD_1)
        in_dm = await bot.interact("ask", {"prompt": "hi"}, dm=True)

        for sent in (on_shard_0, on_shard_1, in_dm):
            assert (await bot.answered(sent)).content.startswith(ANSWER)
        sessions = {tuple(s.shard or ()): s for s in bot.discord.gateway.sessions.values()}
        delivered_on_0 = {event["d"]["id"] for event in sessions[(0, 2)].events if event["t"] == "INTERACTION_CREATE"}
        assert delivered_on_0 == {str(on_shard_0.id), str(in_dm.id)}  # DMs reach shard 0 only


async def test_healthy_only_while_every_shard_is_connected() -> None:
    async with sharded_bot(max_concurrency=2) as bot:
        adapter = discord_adapter(bot)
        await asyncio.wait_for(adapter.wait_until_ready(), WAIT_S)  # every shard's guilds have arrived
        assert await adapter.is_connected() and adapter.shard_states() == {0: True, 1: True}
        connections = bot.discord.gateway_connections

        bot.discord.gateway.hold_connections()  # shard 1's reconnect hangs until released
        await bot.discord.drop_gateway(4000, shard=1)
        await bot.discord.wait_until(lambda: bot.discord.gateway_connections > connections, what="shard 1 back")

        assert adapter.shard_states() == {0: True, 1: False}
        assert not await adapter.is_connected()
        _, body = await bot.service.health.report()
        assert body["adapters"]["discord"]["connected"] is False

        bot.discord.gateway.release_connections()
        sent = await bot.interact("ask", {"prompt": "back?"}, guild_id=GUILD_ON_SHARD_1)
        await bot.answered(sent)  # read from shard 1's new socket
        assert await adapter.is_connected()


# --- several processes -----------------------------------------------------------------------------------


@asynccontextmanager
async def process_fakes(**fake_options: Any) -> AsyncIterator[tuple[FakeReplicate, FakeSlack, FakeDiscord]]:
    async with AsyncExitStack() as stack:
        replicate = await stack.enter_async_context(FakeReplicate(api_token=REPLICATE_TOKEN))
        default_models(replicate)
        add_process_models(replicate)
        slack = await stack.enter_async_context(FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN))
        discord = await stack.enter_async_context(FakeDiscord(
            token=DISCORD_TOKEN, application_id=APPLICATION_ID, guilds=SHARDED_GUILDS,
            privileged_intents=PRIVILEGED_INTENTS, **fake_options))
        yield replicate, slack, discord
        assert replicate.fake_errors == [] and discord.fake_errors == [] and slack.fake_errors == []


@asynccontextmanager
async def two_processes(tmp_path: Path, redis_url: str, **fake_options: Any) -> AsyncIterator[
    tuple[FakeDiscord, BotProcess, BotProcess]
]:
    """Shard 0 and shard 1 of 2 in two real processes, started at the same moment, one bot through one Redis."""
    async with process_fakes(**fake_options) as (replicate, slack, discord):
        shared = {"STATE_URL": redis_url, "DISCORD_SHARD_COUNT": "2", "DISCORD_GUILD_IDS": ""}
        processes: list[BotProcess] = []
        try:
            for shard in ("0", "1"):
                (tmp_path / shard).mkdir()
            launched = await asyncio.gather(
                *(launch_bot(tmp_path / shard, replicate, slack, discord, DISCORD_SHARD_IDS=shard, **shared)
                  for shard in ("0", "1")),
                return_exceptions=True,
            )
            processes += [result[0] for result in launched if isinstance(result, tuple)]
            for result in launched:
                if isinstance(result, BaseException):
                    raise result
            await discord.wait_for_ready(2, timeout=WAIT_S)
            yield discord, processes[0], processes[1]
        finally:
            for process in processes:
                await process.kill()


async def answered_in(discord: FakeDiscord, sent: SentInteraction) -> list[str]:
    await discord.wait_until(lambda: any(QUICK_ANSWER in text for text in discord_contents(discord, sent)),
                             WAIT_S, what="the answer")
    return discord_contents(discord, sent)


async def test_two_processes_split_the_shards_and_each_answers_only_its_own(tmp_path: Path, redis_url: str) -> None:
    async with two_processes(tmp_path, redis_url, max_concurrency=2) as (discord, shard_0, shard_1):
        assert sorted(map(str, discord.identified_shards())) == ["[0, 2]", "[1, 2]"]
        on_0 = await discord.send_interaction("ask", {"prompt": "hi"}, guild_id=GUILD_ON_SHARD_0)
        on_1 = await discord.send_interaction("ask", {"prompt": "hi"}, guild_id=GUILD_ON_SHARD_1)
        in_dm = await discord.send_interaction("ask", {"prompt": "hi"}, dm=True)
        for sent in (on_0, on_1, in_dm):
            assert len(await answered_in(discord, sent)) == 1  # one answer, no second one from the other process
        await shard_0.wait_until(lambda: len(shard_0.command_records()) == 2, "two command log lines")
        await shard_1.wait_until(lambda: len(shard_1.command_records()) == 1, "one command log line")

        assert sorted(record["channel_id"] for record in shard_0.command_records()) == sorted(
            [str(CHANNEL_ON_SHARD_0), str(in_dm.channel_id)])
        assert [record["channel_id"] for record in shard_1.command_records()] == [str(CHANNEL_ON_SHARD_1)]
        assert [callback.interaction_id for callback in discord.callbacks].count(on_0.id) == 1


async def test_processes_starting_together_take_turns_to_identify_so_none_is_refused(
    tmp_path: Path, redis_url: str
) -> None:
    # One IDENTIFY per 5 s for the whole bot: the second process waits for its turn in Redis instead of colliding.
    async with two_processes(tmp_path, redis_url, max_concurrency=1, enforce_identify_limit=True) as (discord, _, _):
        assert discord.gateway.rate_limited_identifies == []
        assert sorted(map(str, discord.identified_shards())) == ["[0, 2]", "[1, 2]"]
