"""`/replicate` on Slack through real bolt/slack_sdk to a fake Slack (Socket Mode and HTTP mode), with a fake
Replicate and a real SQLite state store: every answer private, admin controls only for admins, and their effect
on the next `/ask`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from adapters import base
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import signed_headers, slash_command_form
from tests.harness_common import ANSWER, ASK_MODEL, IMAGINE_MODEL, PNG
from tests.slack_harness import CHANNEL, SIGNING_SECRET, SlackBot, slack_bot

ADMIN, MEMBER, OTHER = "U0ADMIN", "U0USER", "U0OTHER"
ASK_DESCRIPTION = "A small chat model that answers <@U1> questions"
IMAGINE_DESCRIPTION = "Fast pictures from text"


def described_models(replicate: FakeReplicate) -> None:
    """The default models, with the one-line descriptions Replicate's model endpoint gives."""
    replicate.add_model(ASK_MODEL, TextModel(tokens=[ANSWER]), description=ASK_DESCRIPTION)
    replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]), description=IMAGINE_DESCRIPTION)


@pytest.fixture
async def bot() -> AsyncIterator[SlackBot]:
    async with slack_bot(arrange=described_models, admin_users=frozenset({f"slack:{ADMIN}"})) as running:
        yield running


async def replicate(bot: SlackBot, text: str, user: str = MEMBER, **extra: str) -> dict[str, Any]:
    """`/replicate <text>` from `user`; the ack frame it got."""
    envelope = await bot.slack.send_slash_command(command="/replicate", text=text, user_id=user, **extra)
    return await bot.slack.wait_for_ack(envelope)


def ack_text(ack: dict[str, Any]) -> str:
    payload = ack.get("payload") or {}
    return str(payload.get("text", ""))


async def ask(bot: SlackBot, user: str, channel: str) -> dict[str, Any]:
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello", user_id=user, channel_id=channel)
    return await bot.slack.wait_for_ack(envelope)


def nothing_public(bot: SlackBot) -> bool:
    return bot.slack.requests_to("chat.postMessage") == [] and bot.slack.requests_to("chat.postEphemeral") == []


async def test_help_is_private_and_shows_the_admin_controls_only_to_admins(bot: SlackBot) -> None:
    member_help = ack_text(await replicate(bot, "help"))
    admin_help = ack_text(await replicate(bot, "help", user=ADMIN))

    assert "`/replicate models`" in member_help and "`/replicate usage`" in member_help
    assert "/replicate block" not in member_help and "/replicate pause" not in member_help
    assert "`/replicate block <user>`" in admin_help.replace("&lt;", "<").replace("&gt;", ">")
    assert "/replicate pause" in admin_help
    assert nothing_public(bot) and bot.replicate.creates == []


async def test_models_lists_each_commands_models_with_replicates_descriptions_as_literal_text(bot: SlackBot) -> None:
    text = ack_text(await replicate(bot, "models"))

    assert f"`{ASK_MODEL}` (default)" in text and f"`{IMAGINE_MODEL}` (default)" in text
    assert IMAGINE_DESCRIPTION in text
    assert "A small chat model that answers" in text and "<@U1>" not in text  # the owner's markup stays inert
    assert text.index("/ask:") < text.index(ASK_MODEL) < text.index("/imagine:") < text.index(IMAGINE_MODEL)
    assert nothing_public(bot)


async def test_usage_shows_your_own_use_today(bot: SlackBot) -> None:
    await ask(bot, MEMBER, CHANNEL)
    await bot.slack.wait_until(lambda: bot.answered(ending=ANSWER), timeout=10, what="the answer")

    text = ack_text(await replicate(bot, "usage"))

    assert text.startswith("Your use today (UTC):")
    assert "/ask: 1 today, no limit" in text and "/imagine: 0 today, no limit" in text


async def test_an_admin_subcommand_from_a_non_admin_is_refused_privately_and_changes_nothing(bot: SlackBot) -> None:
    text = ack_text(await replicate(bot, "pause"))

    assert "Only the bot's admins can use `/replicate pause`" in text
    assert nothing_public(bot)
    await ask(bot, MEMBER, CHANNEL)
    await bot.slack.wait_until(lambda: bot.answered(ending=ANSWER), timeout=10, what="an answer: not paused")


async def test_an_admins_limit_refuses_the_next_ask_privately_with_when_and_creates_nothing(bot: SlackBot) -> None:
    text = ack_text(await replicate(bot, f"limit <@{MEMBER}|alice> ask 1/day", user=ADMIN))
    assert text == f"/ask for <@{MEMBER}>: at most 1 per day (UTC calendar days)."  # the mention renders as one

    await ask(bot, MEMBER, CHANNEL)
    await bot.slack.wait_until(lambda: bot.answered(ending=ANSWER), timeout=10, what="the first answer")
    posts, creates = len(bot.slack.requests_to("chat.postMessage")), len(bot.replicate.creates)
    refused = ack_text(await ask(bot, MEMBER, "C0SECOND"))

    assert "You've used your 1 /ask command for today" in refused and "00:00 UTC" in refused
    assert len(bot.replicate.creates) == creates == 1
    assert len(bot.slack.requests_to("chat.postMessage")) == posts and bot.slack.channel_messages("C0SECOND") == []


async def test_an_admins_block_pause_and_resume_show_on_the_next_ask(bot: SlackBot) -> None:
    blocked = ack_text(await replicate(bot, f"block <@{OTHER}|bob>", user=ADMIN))
    assert blocked == f"<@{OTHER}> is blocked: their commands are refused."
    assert "blocked you" in ack_text(await ask(bot, OTHER, CHANNEL))

    assert ack_text(await replicate(bot, "pause", user=ADMIN)).startswith("Paused")
    assert "paused" in ack_text(await ask(bot, MEMBER, CHANNEL))
    assert nothing_public(bot) and bot.replicate.creates == []

    assert ack_text(await replicate(bot, "resume", user=ADMIN)).startswith("Resumed")
    await ask(bot, MEMBER, CHANNEL)
    await bot.slack.wait_until(lambda: bot.answered(ending=ANSWER), timeout=10, what="an answer after resume")
    assert len(bot.replicate.creates) == 1


async def test_an_unknown_subcommand_is_answered_clearly_with_what_was_typed_shown_literally(bot: SlackBot) -> None:
    assert ack_text(await replicate(bot, "frobnicate")) == "There is no `/replicate frobnicate`. Try `/replicate help`."
    assert "`/replicate &lt;!channel&gt;`" in ack_text(await replicate(bot, "<!channel>"))


async def test_a_slow_answer_is_acked_at_once_and_sent_privately_through_the_response_url(
    bot: SlackBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No wait at all: `usage` reads the store (SQLite, in aiosqlite's thread), so its answer can't be ready in time.
    monkeypatch.setattr(base, "ADMIN_ANSWER_WAIT_S", 0.0)
    envelope = await bot.slack.send_slash_command(command="/replicate", text="usage")
    ack = await bot.slack.wait_for_ack(envelope)
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: bool(bot.slack.response_url_posts(url)), timeout=10, what="the answer")
    assert ack_text(ack) == ""
    [post] = bot.slack.response_url_posts(url)
    assert post["response_type"] == "ephemeral" and post["text"].startswith("Your use today (UTC):")


async def test_a_redelivered_replicate_command_is_answered_once(bot: SlackBot) -> None:
    first = await replicate(bot, "help", trigger_id="1.2.same-trigger")
    again = await replicate(bot, "help", trigger_id="1.2.same-trigger")

    assert "`/replicate models`" in ack_text(first)
    assert ack_text(again) == ""  # acked, so Slack stops retrying, and quietly


async def test_http_mode_answers_replicate_in_the_http_response() -> None:
    async with slack_bot(http_mode=True, arrange=described_models) as bot:
        body = slash_command_form(command="/replicate", text="models", response_url=bot.slack.new_response_url())
        url = f"http://127.0.0.1:{bot.service.http_port}/slack/events"
        async with aiohttp.ClientSession() as session, \
                session.post(url, data=body, headers=signed_headers(SIGNING_SECRET, body)) as response:
            status, answer = response.status, await response.text()  # a text-only ack is plain text

        assert status == 200 and IMAGINE_DESCRIPTION in answer
        assert nothing_public(bot)
