"""Every accepted Discord command ends with a reply, and what it shows stays safe (`adapters.discord_replies`,
`adapters.discord_format`), end to end against the fake Discord and the fake Replicate.

A reply goes through the interaction while its token lives, through the channel after, by DM when the channel
refuses, and otherwise into one WARNING line; a command whose answer can go nowhere has its prediction
cancelled. Captions always fit one message, whatever the links, and links in them are inert.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.discord_adapter import INTERACTION_TOKEN_LIFETIME
from adapters.discord_format import MAX_MESSAGE_CHARS
from adapters.discord_format import image_caption as _image_caption
from bot.replies import Image, Images, RunInfo
from bot.runner import MAX_OUTPUT_FILES, RunPolicy
from tests.discord_harness import NO_MENTIONS, USER, DiscordBot, discord_bot, fakes, running_bot
from tests.fakes.discord_gateway import BOT_PERMS, DISCORD_EPOCH_MS
from tests.fakes.discord_server import InteractionState, RecordedRequest, SentInteraction
from tests.fakes.replicate_server import ImageModel, TextModel
from tests.harness_common import APPLICATION_ID, ASK_MODEL, CHANNEL, GUILD, IMAGINE_MODEL, PNG, bot_settings

NSFW = "NSFW content detected. Try running it again, or try a different prompt."
LONG_PROMPT = "a lighthouse on a cliff at dawn, " * 120  # ~3,900 characters, inside MAX_PROMPT_CHARS
EXPIRED = INTERACTION_TOKEN_LIFETIME - timedelta(seconds=30)  # past the adapter's safety margin, not Discord's
LINK = re.compile(r"<(https://[^>]*)>")


@pytest.fixture
async def bot(caplog: pytest.LogCaptureFixture) -> AsyncIterator[DiscordBot]:
    caplog.set_level(logging.INFO)
    async with discord_bot() as running:
        yield running
    assert_quiet_log(caplog)


def assert_quiet_log(caplog: pytest.LogCaptureFixture) -> None:
    """No command task died, nothing logged an error, and no traceback reached the log (in the test and around it:
    in a fixture's teardown `caplog.records` holds only the teardown's records)."""
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    assert [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in records if r.exc_info] == []
    assert not any("Traceback" in r.getMessage() for r in records)


def send_interaction(
    bot: DiscordBot, name: str, options: dict[str, Any], *, age: timedelta = timedelta(0),
    attachment_size_limit: int | None = None,
) -> SentInteraction:
    """INTERACTION_CREATE for `name` in CHANNEL, created `age` ago (its id's snowflake says when, as Discord's do),
    optionally with a smaller `attachment_size_limit`. The fake takes the acknowledgement as a fresh one."""
    if age:
        created = datetime.now(UTC) - age
        interaction_id = (int(created.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22
    else:
        interaction_id = bot.discord.objects.snowflake()
    token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
    [command] = [c for c in bot.discord.commands(GUILD) if c["name"] == name]
    data = {"id": command["id"], "name": name, "type": 1, "guild_id": str(GUILD),
            "options": [{"name": key, "type": 3 if isinstance(value, str) else 4, "value": value}
                        for key, value in options.items()]}
    payload = bot.discord.objects.interaction(interaction_id=interaction_id, token=token, data=data, guild_id=GUILD,
                                              channel_id=CHANNEL, user_id=USER, app_permissions=str(BOT_PERMS),
                                              locale="en-US")
    if attachment_size_limit is not None:
        payload["attachment_size_limit"] = attachment_size_limit
    bot.discord.interactions[token] = InteractionState(interaction_id, token, name, GUILD, CHANNEL, USER, payload,
                                                       time.monotonic())
    bot.discord.dispatch("INTERACTION_CREATE", payload)
    return SentInteraction(interaction_id, token, GUILD, CHANNEL, USER, payload)


def webhook_requests(bot: DiscordBot, sent: SentInteraction) -> list[RecordedRequest]:
    return [r for r in bot.discord.requests if r.path.startswith(f"/webhooks/{APPLICATION_ID}/{sent.token}")]


def refused(bot: DiscordBot) -> list[str]:
    return [f"{r.method} {r.path} → {r.status}" for r in bot.discord.requests if not 200 <= r.status < 300]


def output_urls(bot: DiscordBot) -> list[str]:
    [prediction] = bot.replicate.creates
    return list(prediction.output)


# --- captions always fit --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    urls=st.lists(st.text(max_size=2500).map(lambda tail: "https://cdn.example/" + tail), max_size=MAX_OUTPUT_FILES),
    problems=st.lists(st.one_of(st.none(), st.text(max_size=500)), max_size=MAX_OUTPUT_FILES),
    prompt=st.text(max_size=4000),
)
def test_an_image_caption_fits_one_message_whatever_its_links(urls: list[str], problems: list[str | None],
                                                               prompt: str) -> None:
    links = [Image(b"", "", f"image-{i}", url=url) for i, url in enumerate(urls)]
    links += [Image(b"", "", f"image-{i}", problem=problem) for i, problem in enumerate(problems)]
    images = Images(tuple(links), prompt, 42, RunInfo(IMAGINE_MODEL))
    shown = _image_caption(images, links)
    assert len(shown) <= MAX_MESSAGE_CHARS
    assert all(not set(link) & set("<*()[]`|@ ") for link in LINK.findall(shown))


async def test_forty_long_image_links_and_a_long_prompt_fit_in_one_caption(bot: DiscordBot) -> None:
    signed = "?X-Signature=" + "a1b2c3" * 60  # a long signed query on every URL, as CDNs add
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")] * 40, url_suffix=signed))
    # Every image is over the guild's upload limit, so each one is shown as its link.
    sent = send_interaction(bot, "imagine", {"prompt": LONG_PROMPT}, attachment_size_limit=len(PNG) - 1)
    answer = await bot.answered(sent)

    assert len(answer.content) <= MAX_MESSAGE_CHARS and answer.attachments == []
    shown = LINK.findall(answer.content)
    kept = output_urls(bot)[:MAX_OUTPUT_FILES]  # the core keeps 10 of the 40
    assert shown == kept[: len(shown)]  # whole links only, none cut half way, in order
    assert f"({len(kept) - len(shown)} more links too long to show)" in answer.content
    assert "**prompt:** a lighthouse on a cliff" in answer.content
    assert refused(bot) == []


async def test_a_link_longer_than_a_message_is_left_out_and_the_answer_lands(bot: DiscordBot) -> None:
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(url_suffix="?token=" + "z" * 2500))
    sent = send_interaction(bot, "imagine", {"prompt": LONG_PROMPT}, attachment_size_limit=len(PNG) - 1)
    answer = await bot.answered(sent)

    assert len(answer.content) <= MAX_MESSAGE_CHARS
    assert "(1 more link too long to show)" in answer.content and "https://" not in answer.content
    assert IMAGINE_MODEL in answer.content and "**prompt:** a lighthouse" in answer.content
    assert refused(bot) == []


async def test_each_image_problem_is_one_line_and_an_unsafe_url_is_not_posted(bot: DiscordBot) -> None:
    elsewhere = [f"https://files.elsewhere.example/out-{i}.png" for i in range(10)]
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(output_override=elsewhere))
    sent = send_interaction(bot, "imagine", {"prompt": LONG_PROMPT})
    answer = await bot.answered(sent)

    lines = answer.content.splitlines()
    for number in range(1, 11):  # each image's problem, once, on a line of its own
        assert len([line for line in lines if line.startswith(f"Image {number} could not be posted: ")]) == 1
    assert len(answer.content) <= MAX_MESSAGE_CHARS and "elsewhere.example" not in answer.content
    assert lines[-1].startswith("**prompt:** a lighthouse")


async def test_a_url_with_markup_in_it_stays_one_inert_link(bot: DiscordBot) -> None:
    hostile = "?q=>**bold**)[click](https://evil.example)`code`||spoiler||@everyone"
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(url_suffix=hostile))
    sent = send_interaction(bot, "imagine", {"prompt": "a fox"}, attachment_size_limit=len(PNG) - 1)
    answer = await bot.answered(sent)

    [url] = output_urls(bot)
    assert url.endswith(hostile)
    [link] = LINK.findall(answer.content)
    assert urllib.parse.unquote(link) == url  # the same address ...
    assert not set(link) & set("<>*()[]`|@ ")  # ... in which nothing reads as markup or a mention
    assert "**bold**" not in answer.content and "@everyone" not in answer.content
    assert answer.allowed_mentions == NO_MENTIONS


# --- past the interaction token -------------------------------------------------------------------------


async def test_past_the_token_a_failure_goes_to_the_channel_not_the_webhook(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[], fail_with=NSFW))
    sent = send_interaction(bot, "ask", {"prompt": "something naughty"}, age=EXPIRED)
    await bot.until(lambda: any("safety filter" in m.content for m in bot.discord.channel_messages(CHANNEL)),
                    "the error in the channel")

    assert webhook_requests(bot, sent) == []  # only the acknowledgement used the interaction
    [error] = [m for m in bot.discord.channel_messages(CHANNEL) if "safety filter" in m.content]
    assert f"<@{USER}>" in error.content and error.allowed_mentions == NO_MENTIONS and not error.pings


async def test_past_the_token_images_the_channel_wont_take_as_files_go_there_as_links(bot: DiscordBot) -> None:
    bot.discord.deny_uploads(CHANNEL)  # Attach Files was taken away after the command was accepted
    sent = send_interaction(bot, "imagine", {"prompt": "a red fox"}, age=EXPIRED)
    await bot.until(lambda: any("a red fox" in m.content for m in bot.discord.channel_messages(CHANNEL)),
                    "the images in the channel")

    assert webhook_requests(bot, sent) == []
    [posted] = [m for m in bot.discord.channel_messages(CHANNEL) if "a red fox" in m.content]
    assert LINK.findall(posted.content) == output_urls(bot) and posted.attachments == []
    posts = [r for r in bot.discord.requests_to("POST", f"/channels/{CHANNEL}/messages$") if r.files]
    assert [r.status for r in posts] == [403]  # the upload was tried first


async def test_a_channel_answering_403_gets_the_answer_to_the_user_by_dm(bot: DiscordBot) -> None:
    bot.discord.deny_channel(CHANNEL, 50001)  # the bot can't see the channel any more: 403 Missing Access
    send_interaction(bot, "ask", {"prompt": "are you there?"}, age=EXPIRED)
    dm = bot.discord.objects.dm_channel(USER)
    await bot.until(lambda: [m.content.endswith("Hello, world") for m in bot.discord.channel_messages(dm)] == [True],
                    "the answer by DM, alone")

    [answer] = bot.discord.channel_messages(dm)
    assert f"<#{CHANNEL}>" in answer.content and answer.allowed_mentions == NO_MENTIONS
    assert bot.discord.channel_messages(CHANNEL) == []
    # The "still running" notice found the channel closed; the answer did not ask it again.
    [channel_post] = bot.discord.requests_to("POST", f"/channels/{CHANNEL}/messages$")
    assert channel_post.status == 403 and "still running" in channel_post.json["content"]


async def test_an_answer_that_can_go_nowhere_cancels_its_prediction(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    patient = RunPolicy(timeout_s=60.0, poll_interval_s=0.05, base_backoff_s=0.05, create_wait_s=1,
                        cancel_timeout_s=2.0)  # the prediction would run far longer than the test waits
    async with fakes() as (discord_fake, replicate):
        replicate.add_model(ASK_MODEL, TextModel(tokens=["Thinking"], hang=True))
        async with running_bot(discord_fake, replicate, policy=patient) as service:
            bot = DiscordBot(discord_fake, replicate, service, bot_settings(replicate, discord=discord_fake))
            discord_fake.deny_channel(CHANNEL, 50001)
            discord_fake.refuse_dms(USER)
            sent = send_interaction(bot, "ask", {"prompt": "a long one"}, age=EXPIRED)
            await replicate.wait_until(lambda: bool(replicate.cancels), what="the prediction cancelled")

            assert replicate.cancels == [replicate.creates[0].id]
            dm_posts = discord_fake.requests_to("POST", f"/channels/{discord_fake.objects.dm_channel(USER)}/messages$")
            assert [r.status for r in dm_posts] == [403]
            assert webhook_requests(bot, sent) == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("adapters.")]
    assert str(sent.id) in warning.getMessage() and "cancelling its prediction" in warning.getMessage()
    assert_quiet_log(caplog)
