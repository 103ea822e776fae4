"""`/replicate` and `/replicate-admin` on Discord through real discord.py to a fake Discord (gateway and REST), with a
fake Replicate and a real SQLite state store: registration, ephemeral answers without mentions, who is an admin
(ADMIN_USERS, Manage Server) and the controls' effect on the next `/ask`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters import base
from tests.discord_harness import NO_MENTIONS, DiscordBot, discord_bot, fakes, running_bot
from tests.fakes.discord_server import SentInteraction
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.harness_common import ANSWER, ASK_MODEL, CHANNEL, GUILD, IMAGINE_MODEL, PNG

MEMBER, LISTED_ADMIN, SERVER_MANAGER, OTHER = 444, 555, 666, 777
MANAGE_GUILD = 1 << 5  # discord.com/developers/docs/topics/permissions#permissions-bitwise-permission-flags
EPHEMERAL = 64
ASK_DESCRIPTION = "A small chat model that answers <@1> questions"
IMAGINE_DESCRIPTION = "Fast pictures from text"


def described_models(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK_MODEL, TextModel(tokens=[ANSWER]), description=ASK_DESCRIPTION)
    replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]), description=IMAGINE_DESCRIPTION)


@pytest.fixture
async def bot() -> AsyncIterator[DiscordBot]:
    async with discord_bot(arrange=described_models, admin_users=frozenset({f"discord:{LISTED_ADMIN}"})) as running:
        yield running


async def replicate(
    bot: DiscordBot, subcommand: str, options: dict[str, Any] | None = None, *, user: int = MEMBER,
    admin_group: bool = False, **where: Any,
) -> str:
    """`/replicate <subcommand>` (or `/replicate-admin`) from `user`; the ephemeral answer, checked to be one."""
    name = "replicate-admin" if admin_group else "replicate"
    sent = await bot.discord.send_interaction(name, options, subcommand=subcommand, user_id=user, channel_id=CHANNEL,
                                              **where)
    await bot.until(lambda: _answered(bot, sent), f"/{name} {subcommand} answered")
    [callback] = bot.callbacks(sent)
    assert (callback.type, callback.data["flags"] & EPHEMERAL) == (4, EPHEMERAL)
    assert callback.data["allowed_mentions"] == NO_MENTIONS
    return str(callback.data["content"])


def _answered(bot: DiscordBot, sent: SentInteraction) -> bool:
    message = bot.discord.original_message(sent.token)
    return message is not None and not message.loading


async def ask(bot: DiscordBot, user: int) -> SentInteraction:
    return await bot.interact("ask", {"prompt": "hello"}, channel_id=CHANNEL, user_id=user)


async def refusal(bot: DiscordBot, sent: SentInteraction) -> str:
    """The private refusal of a command: one ephemeral message, nothing else."""
    await bot.until(lambda: bool(bot.callbacks(sent)), "the refusal")
    [callback] = bot.callbacks(sent)
    assert (callback.type, callback.data["flags"] & EPHEMERAL) == (4, EPHEMERAL)
    return str(callback.data["content"])


def nothing_public(bot: DiscordBot) -> bool:
    return bot.discord.channel_messages(CHANNEL) == [] and all(
        message.ephemeral for state in bot.discord.interactions.values() for message in
        ([state.original] if state.original else []) + list(state.followups))


async def test_both_groups_are_registered_and_only_replicate_admin_asks_for_manage_server(bot: DiscordBot) -> None:
    put = bot.discord.command_puts[-1]
    commands = {command["name"]: command for command in put.body}

    assert put.guild_id == GUILD and {"ask", "imagine", "replicate", "replicate-admin"} <= set(commands)
    # discord.py sends the bit set as a number (Discord documents a string, and echoes one): either way, 32.
    assert str(commands["replicate-admin"]["default_member_permissions"]) == str(MANAGE_GUILD) == "32"
    assert commands["replicate"].get("default_member_permissions") is None
    registered = {command["name"]: command for command in bot.discord.commands(GUILD)}
    assert registered["replicate-admin"]["default_member_permissions"] == "32"
    assert registered["replicate"]["default_member_permissions"] is None
    assert [option["name"] for option in commands["replicate"]["options"]] == ["help", "models", "usage"]
    admin_options = {option["name"]: option for option in commands["replicate-admin"]["options"]}
    assert list(admin_options) == ["usage", "limit", "block", "unblock", "pause", "resume"]
    limit_options = {option["name"]: option for option in admin_options["limit"]["options"]}
    assert [choice["value"] for choice in limit_options["command"]["choices"]] == ["ask", "imagine"]
    assert limit_options["user"]["type"] == 6 and not limit_options["user"].get("required")


async def test_commands_registered_without_replicate_admins_default_permissions_are_registered_again() -> None:
    """An earlier registration that showed /replicate-admin to everyone is not left in place as "unchanged"."""
    async with fakes() as (discord_fake, replicate):
        async with running_bot(discord_fake, replicate):
            [first] = discord_fake.command_puts
    async with fakes() as (discord_fake, replicate):
        everyone = [{**command, "default_member_permissions": None} for command in first.body]
        discord_fake.set_commands(everyone, guild_id=GUILD)
        async with running_bot(discord_fake, replicate):
            [put] = discord_fake.command_puts
            assert put.body == first.body


async def test_help_is_ephemeral_and_shows_the_admin_controls_only_to_admins(bot: DiscordBot) -> None:
    member_help = await replicate(bot, "help")
    listed_admin_help = await replicate(bot, "help", user=LISTED_ADMIN)
    manager_help = await replicate(bot, "help", user=SERVER_MANAGER, member_permissions=MANAGE_GUILD)

    assert "`/replicate models`" in member_help and "/replicate block" not in member_help
    assert "`/replicate block <user>`" in listed_admin_help and "`/replicate block <user>`" in manager_help
    assert nothing_public(bot) and bot.replicate.creates == []


async def test_models_lists_each_commands_models_with_replicates_descriptions(bot: DiscordBot) -> None:
    text = await replicate(bot, "models")

    assert f"`{ASK_MODEL}` (default)" in text and IMAGINE_DESCRIPTION in text
    assert "A small chat model that answers" in text and "<@1>" not in text
    assert text.index("/ask:") < text.index(ASK_MODEL) < text.index("/imagine:") < text.index(IMAGINE_MODEL)


async def test_usage_shows_your_own_use_today(bot: DiscordBot) -> None:
    await bot.answered(await ask(bot, MEMBER))

    text = await replicate(bot, "usage")

    assert text.startswith("Your use today (UTC):") and "/ask: 1 today, no limit" in text


async def test_an_admin_subcommand_from_a_member_without_manage_server_is_refused(bot: DiscordBot) -> None:
    """A server may show /replicate-admin to anyone (its own permission override): the core still refuses."""
    text = await replicate(bot, "pause", admin_group=True)

    assert text == "Only the bot's admins can use `/replicate pause`."
    answer = await bot.answered(await ask(bot, MEMBER))
    assert answer.content == ANSWER  # not paused


async def test_a_server_managers_limit_refuses_the_next_ask_privately_and_creates_nothing(bot: DiscordBot) -> None:
    text = await replicate(bot, "limit", {"command": "ask", "limit": "1/day", "user": str(MEMBER)}, user=SERVER_MANAGER,
                           admin_group=True, member_permissions=MANAGE_GUILD)
    assert text == f"/ask for <@{MEMBER}>: at most 1 per day (UTC calendar days)."

    await bot.answered(await ask(bot, MEMBER))
    refused = await refusal(bot, await ask(bot, MEMBER))

    assert "You've used your 1 /ask command for today" in refused
    assert len(bot.replicate.creates) == 1


async def test_a_limit_without_a_user_sets_everyones_default(bot: DiscordBot) -> None:
    text = await replicate(bot, "limit", {"command": "imagine", "limit": "none"}, user=LISTED_ADMIN, admin_group=True)

    assert text == "/imagine for everyone (the default): no limit."


async def test_a_listed_admins_block_pause_and_resume_show_on_the_next_ask(bot: DiscordBot) -> None:
    blocked = await replicate(bot, "block", {"user": str(OTHER)}, user=LISTED_ADMIN, admin_group=True)
    assert blocked == f"<@{OTHER}> is blocked: their commands are refused."
    assert "blocked you" in await refusal(bot, await ask(bot, OTHER))

    assert (await replicate(bot, "pause", user=LISTED_ADMIN, admin_group=True)).startswith("Paused")
    assert "paused" in await refusal(bot, await ask(bot, MEMBER))
    assert nothing_public(bot) and bot.replicate.creates == []

    assert (await replicate(bot, "resume", user=LISTED_ADMIN, admin_group=True)).startswith("Resumed")
    assert (await bot.answered(await ask(bot, MEMBER))).content == ANSWER


async def test_an_unknown_subcommand_is_answered_clearly(bot: DiscordBot) -> None:
    """A client that hasn't caught up with the registration can still send a subcommand the bot no longer has."""
    text = await replicate(bot, "frobnicate")

    assert text == "There is no `/replicate frobnicate`. Try `/replicate help`."


async def test_a_slow_answer_is_deferred_ephemerally_then_sent_as_the_follow_up(
    bot: DiscordBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No wait at all: `usage` reads the store (SQLite, in aiosqlite's thread), so its answer can't be ready in time.
    monkeypatch.setattr(base, "ADMIN_ANSWER_WAIT_S", 0.0)
    sent = await bot.discord.send_interaction("replicate", subcommand="usage", user_id=MEMBER, channel_id=CHANNEL)

    await bot.until(lambda: _answered(bot, sent), "the follow-up")
    [callback] = bot.callbacks(sent)
    assert (callback.type, callback.data["flags"] & EPHEMERAL) == (5, EPHEMERAL)
    message = bot.original(sent)
    assert message.ephemeral and message.content.startswith("Your use today (UTC):")
    followup = next(r for r in bot.requests_for(sent) if r.method == "POST" and "/webhooks/" in r.path)
    assert followup.json["allowed_mentions"] == NO_MENTIONS
