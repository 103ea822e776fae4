"""`adapters.discord_adapter` end to end: the real `BotService` drives discord.py and replicate against fakes.

Interactions arrive as INTERACTION_CREATE dispatches on the fake gateway; every assertion reads what the fake
Discord and the fake Replicate received (callbacks, webhook edits and follow-ups, multipart files, creates).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.discord_adapter import INTERACTION_TOKEN_LIFETIME, TOKEN_SAFETY_MARGIN, DiscordAdapter
from adapters.rendering import CURSOR
from service.bot_service import BotService
from tests.discord_harness import (
    FENCE_LINE,
    NO_MENTIONS,
    SECOND_CHANNEL,
    USER,
    DiscordBot,
    SlowFollowUpDiscord,
    bodies_with_content,
    discord_bot,
    fakes,
    fence_lines,
    running_bot,
    stop_service,
)
from tests.fakes.discord_gateway import ATTACH, BOT_PERMS, DISCORD_EPOCH_MS
from tests.fakes.discord_server import InteractionState, RecordedRequest, SentInteraction
from tests.fakes.replicate_server import ImageModel, TextModel
from tests.harness_common import (
    ASK_MODEL,
    CHANNEL,
    FAST_POLICY,
    GUILD,
    IMAGINE_MODEL,
    PNG,
    bot_settings,
    redirect_snapshot,
    restore_redirect,
)

NSFW = "NSFW content detected. Try running it again, or try a different prompt."
EPHEMERAL = 64
DEFERRED, MESSAGE = 5, 4  # interaction callback types


@pytest.fixture
async def bot(caplog: pytest.LogCaptureFixture) -> AsyncIterator[DiscordBot]:
    async with discord_bot() as running:
        yield running
    # A command task that died, an unhandled error in discord.py's handlers: nothing may fail out of sight.
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert errors == []


def original_patches(bot: DiscordBot, sent: SentInteraction) -> list[RecordedRequest]:
    return [r for r in bot.requests_for(sent) if r.method == "PATCH" and r.path.endswith("/messages/@original")]


def text_lines(text: str) -> list[str]:
    """The lines that carry content: blank lines and fence lines (which a split may add) left out."""
    return [line for line in text.splitlines() if line.strip() and not FENCE_LINE.match(line)]


# --- 1. registration -------------------------------------------------------------------------------------


async def test_commands_are_registered_in_the_configured_guild_at_start(bot: DiscordBot) -> None:
    [put] = bot.discord.command_puts
    assert put.guild_id == GUILD
    commands = {command["name"]: command for command in put.body}
    assert sorted(commands) == ["ask", "imagine", "replicate", "replicate-admin"]
    ask_options = {o["name"]: o for o in commands["ask"]["options"]}
    assert next(iter(ask_options)) == "prompt" and ask_options["prompt"]["required"] is True
    assert ask_options["prompt"]["type"] == 3
    assert {"max_tokens", "temperature"} <= set(ask_options)
    imagine_options = {o["name"]: o for o in commands["imagine"]["options"]}
    assert imagine_options["prompt"]["required"] is True
    assert {"aspect_ratio", "seed"} <= set(imagine_options)
    assert "negative_prompt" not in imagine_options  # flux-schnell, the only image model, takes none
    ratios = [choice["value"] for choice in imagine_options["aspect_ratio"]["choices"]]
    assert {"1:1", "16:9", "9:16"} <= set(ratios)
    assert ask_options["max_tokens"]["max_value"] == 4096  # the operator's cap: never more than the bot allows
    assert imagine_options["seed"]["type"] == 4
    # Only one model per command is allowed by default: no `model` option to choose from.
    assert "model" not in ask_options and "model" not in imagine_options
    assert [(r.method, r.path) for r in bot.discord.requests if "/commands" in r.path] == [
        ("GET", f"/applications/111/guilds/{GUILD}/commands"),
        ("PUT", f"/applications/111/guilds/{GUILD}/commands"),
    ]


async def test_an_unchanged_command_set_is_not_registered_again_and_a_changed_one_is() -> None:
    async with fakes() as (discord_fake, replicate):
        async with running_bot(discord_fake, replicate):
            [first] = discord_fake.command_puts
    async with fakes() as (discord_fake, replicate):
        discord_fake.set_commands(first.body, guild_id=GUILD)  # as an earlier run left them
        async with running_bot(discord_fake, replicate) as service:
            assert discord_fake.command_puts == []
            discord_adapter = service.adapter("discord")
            assert isinstance(discord_adapter, DiscordAdapter) and discord_adapter.registrations_skipped == 1
            assert [r.method for r in discord_fake.requests if "/commands" in r.path] == ["GET"]
            # ... and the commands registered earlier still work.
            sent = await discord_fake.send_interaction("ask", {"prompt": "still there?"})
            bot = DiscordBot(discord_fake, replicate, service, bot_settings(replicate, discord=discord_fake))
            assert (await bot.answered(sent)).content == "Hello, world"
    async with fakes() as (discord_fake, replicate):
        older = [dict(command) for command in first.body]
        older[0] = {**older[0], "description": "an older description"}
        discord_fake.set_commands(older, guild_id=GUILD)
        async with running_bot(discord_fake, replicate):
            [put] = discord_fake.command_puts
            assert put.body == first.body


# --- 2-3. defer first, then streamed edits -------------------------------------------------------------


async def test_interaction_is_deferred_before_any_call_to_replicate(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "hi"})
    await bot.answered(sent)

    [callback] = bot.callbacks(sent)
    assert callback.type == DEFERRED and not callback.data.get("flags", 0) & EPHEMERAL
    first_replicate_request = bot.replicate.requests[0]
    assert first_replicate_request.method == "POST"
    assert callback.at < first_replicate_request.at
    assert callback.at - bot.discord.interactions[sent.token].created < 1.0  # well inside the 3 s deadline


async def test_ask_streams_coalesced_edits_into_the_original_and_ends_with_exactly_the_text(bot: DiscordBot) -> None:
    tokens = [f"word{i} " for i in range(35)] + ["end."]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.05))  # ~1.8 s of streaming
    sent = await bot.interact("ask", {"prompt": "count for me"})
    original = await bot.answered(sent)

    assert original.content == "".join(tokens)
    assert not original.ephemeral and bot.visible(sent) == [original]
    contents = [op.payload.get("content", "") for op in original.history if op.kind == "edit"]
    assert contents[0].startswith("⏳ ")  # status first ...
    assert "Starting" in contents[0]
    interim = [c for c in contents[1:-1] if not c.startswith("⏳")]
    assert interim and all(c.endswith(CURSOR) and "".join(tokens).startswith(c[: -len(CURSOR)]) for c in interim)
    patches = original_patches(bot, sent)
    assert 3 <= len(patches) <= 6 < len(tokens)  # status, interim, final: coalesced, far fewer than tokens
    interim_gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(patches[:-1])]
    assert all(gap >= 0.9 for gap in interim_gaps)  # progress edits at most once per second
    assert bot.requests_for(sent)[-1].json["content"] == "".join(tokens)


async def test_rate_limited_edit_is_retried_and_the_final_text_lands(bot: DiscordBot) -> None:
    tokens = ["Slow", " and", " steady", " wins", " the", " race."]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.1))
    sent = await bot.interact("ask", {"prompt": "a proverb"})
    await bot.until(lambda: any(p.status == 200 for p in original_patches(bot, sent)), "the status edit")
    bot.discord.rate_limit("PATCH", r"/messages/@original$", times=1, retry_after=0.3)
    original = await bot.answered(sent)

    assert original.content == "".join(tokens)
    statuses = [p.status for p in original_patches(bot, sent)]
    assert statuses[0] == 200 and statuses[-2:] == [429, 200]
    limited, retried = original_patches(bot, sent)[-2:]
    assert retried.at - limited.at >= 0.3
    assert retried.json == limited.json and retried.json["content"] == "".join(tokens)


# --- 5. long answers ---------------------------------------------------------------------------------


def long_answer() -> str:
    """~5,000 characters whose one code block (~2,900) cannot fit in a message and spans character 2,000."""
    prose = [f"Line {i} of the introduction explains one more thing about the topic at hand." for i in range(12)]
    code = [f"    total_{i} = compute_something(value_{i}, factor={i})  # step {i}" for i in range(44)]
    outro = [f"Outro sentence {i} wraps up what the code above does, line by line." for i in range(20)]
    return (
        "\n".join(prose[:6]) + "\n\n" + "\n".join(prose[6:]) + "\n\n"
        + "```python\ndef main():\n" + "\n".join(code) + "\n```\n\n"
        + "\n".join(outro[:10]) + "\n\n" + "\n".join(outro[10:])
    )


async def test_long_answer_continues_in_follow_ups_with_code_blocks_intact(bot: DiscordBot) -> None:
    text = long_answer()
    assert 4500 < len(text) < 5500
    code_start = text.index("```python")
    assert code_start < 2000 < text.index("\n```", code_start)  # the code block spans the first limit
    pieces = [text[i : i + 60] for i in range(0, len(text), 60)]
    # ~1.5 s of streaming: the progress edit at ~1 s posts follow-ups, and the answer ends well clear of it
    # (an answer ending while a follow-up is being posted has its own test further down).
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=pieces, token_interval_s=0.018))
    sent = await bot.interact("ask", {"prompt": "explain with code"})

    def complete() -> bool:
        shown = [m.content for m in bot.visible(sent)]
        return all(not c.endswith(CURSOR) and not c.startswith("⏳") for c in shown) and \
            text_lines("\n".join(shown)) == text_lines(text)

    await bot.until(complete, "the whole answer, split")
    messages = bot.visible(sent)
    assert messages[0] is bot.original(sent) and len(messages) >= 3
    assert all(len(m.content) <= 2000 for m in messages)
    assert all(fence_lines(m.content) % 2 == 0 for m in messages), [m.content[-80:] for m in messages]
    assert not any(m.ephemeral for m in messages)
    # The block was closed at a cut and reopened, with its language, in the next message.
    cut = next(i for i, m in enumerate(messages[:-1]) if m.content.rstrip().endswith("```"))
    assert messages[cut + 1].content.startswith("```python\n")
    for message in messages:  # every cut is at a line boundary: each message's lines are whole lines
        assert set(text_lines(message.content)) <= set(text_lines(text))
    # No request was refused (the fake answers 400 to content over 2,000 characters, as Discord does).
    assert [r.status for r in bot.requests_for(sent) if not 200 <= r.status < 300] == []


# --- 6. images ---------------------------------------------------------------------------------------


async def test_imagine_attaches_the_image_bytes_with_prompt_model_and_seed(bot: DiscordBot) -> None:
    typed = await bot.interact("imagine", {"prompt": "a red fox", "aspect_ratio": "16:9", "seed": 1234})
    inline = await bot.interact("imagine", {"prompt": "a blue whale --ar 3:2 --seed 77"})
    original = await bot.answered(typed)
    other = await bot.answered(inline)

    assert [(a.filename, a.data) for a in original.attachments] == [("image-1.png", PNG)]
    assert "a red fox" in original.content and IMAGINE_MODEL in original.content and "1234" in original.content
    assert not original.ephemeral and original.allowed_mentions == NO_MENTIONS
    upload = next(p for p in original_patches(bot, typed) if p.files)
    assert [(name, data) for name, data, _ in upload.files] == [("image-1.png", PNG)]
    assert upload.json["content"] == original.content and upload.json["allowed_mentions"] == NO_MENTIONS
    assert "http" not in original.content  # the bytes, not a link that dies in an hour

    assert [(a.filename, a.data) for a in other.attachments] == [("image-1.png", PNG)]
    assert "a blue whale" in other.content and "77" in other.content and "--ar" not in other.content
    inputs = {p.input["prompt"]: p.input for p in bot.replicate.creates}
    assert (inputs["a red fox"]["seed"], inputs["a red fox"]["aspect_ratio"]) == (1234, "16:9")
    assert (inputs["a blue whale"]["seed"], inputs["a blue whale"]["aspect_ratio"]) == (77, "3:2")


async def test_imagine_shows_it_is_starting_while_the_create_is_still_out(bot: DiscordBot) -> None:
    bot.replicate.hold("create", 1)  # Replicate takes the create and says nothing: no bare "thinking…"

    sent = await bot.interact("imagine", {"prompt": "a slow lighthouse"})

    await bot.until(lambda: bot.original(sent).content.startswith("⏳ Starting"), "a starting status")
    await bot.replicate.wait_until(lambda: len(bot.replicate.creates) == 1, what="the held create")
    assert bot.original(sent).content.startswith("⏳ Starting")  # still out, and the user already knows

    bot.replicate.release_held()
    answered = await bot.answered(sent)
    assert [a.data for a in answered.attachments] == [PNG]


# --- 7. mentions -----------------------------------------------------------------------------------------


async def test_nothing_the_model_writes_can_ping_anyone(bot: DiscordBot) -> None:
    hostile = "@everyone @here <@123> <@&456> <@!789> "
    tokens = [hostile] * 60 + ["done"]  # ~2,500 characters: streamed edits and a follow-up
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.025))
    sent = await bot.interact("ask", {"prompt": "say hello to everyone"})
    image = await bot.interact("imagine", {"prompt": "@everyone <@&456> a poster"})

    def complete() -> bool:
        shown = [m.content for m in bot.visible(sent)]
        return len(shown) == 2 and not shown[-1].endswith(CURSOR) and "".join(shown).replace("\n", "").endswith("done")

    await bot.until(complete, "the hostile answer")
    await bot.answered(image)

    sends = bodies_with_content(bot.requests_for(sent) + bot.requests_for(image))
    assert len(sends) >= 4  # status, interim, final edits and the follow-up post (and the caption)
    assert any(r.method == "POST" and "/webhooks/" in r.path for r, _ in sends)
    assert all(body.get("allowed_mentions") == NO_MENTIONS for _, body in sends), \
        [(r.method, r.path[-20:], body.get("allowed_mentions")) for r, body in sends]
    assert all(not m.pings for m in bot.discord.messages.values())
    assert "@everyone" in bot.original(sent).content and "@everyone" in bot.original(image).content


# --- 8. errors are private ----------------------------------------------------------------------------


async def test_empty_prompt_gets_the_usage_privately_and_costs_nothing(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "--max-tokens 50"})
    await bot.until(lambda: bool(bot.callbacks(sent)), "the usage reply")

    [callback] = bot.callbacks(sent)
    assert callback.type == MESSAGE and callback.data["flags"] & EPHEMERAL
    assert callback.data["content"].startswith("Usage: `/ask")
    assert callback.data["allowed_mentions"] == NO_MENTIONS
    assert bot.original(sent).ephemeral
    assert bot.replicate.requests == []


async def test_unknown_inline_flag_is_named_in_a_private_error(bot: DiscordBot) -> None:
    sent = await bot.interact("imagine", {"prompt": "a cat --bogus 3"})
    await bot.until(lambda: bool(bot.callbacks(sent)), "the error reply")

    [callback] = bot.callbacks(sent)
    assert callback.type == MESSAGE and callback.data["flags"] & EPHEMERAL
    assert "`--bogus`" in callback.data["content"]
    assert bot.replicate.requests == []


@pytest.mark.parametrize("command", ["imagine", "ask"])
async def test_safety_filter_failure_is_one_private_message(bot: DiscordBot, command: str) -> None:
    if command == "imagine":
        bot.replicate.add_model(IMAGINE_MODEL, ImageModel(fail_with=NSFW))
    else:
        bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[], fail_with=NSFW))
    sent = await bot.interact(command, {"prompt": "something naughty"})
    await bot.until(lambda: any(m.ephemeral for m in bot.visible(sent)), "the private error")

    [error] = bot.visible(sent)
    assert error.ephemeral and "safety filter" in error.content
    assert error.allowed_mentions == NO_MENTIONS
    assert bot.original(sent).deleted  # the public "thinking…" placeholder is gone
    public = [m for m in bot.discord.messages.values() if not m.ephemeral and not m.deleted]
    assert public == []
    assert sum("safety filter" in m.content for m in bot.discord.messages.values()) == 1
    assert len(bot.replicate.creates) == 1 and NSFW not in error.content  # raw model text stays in the log


# --- 9. permissions ------------------------------------------------------------------------------------


async def test_imagine_without_attach_files_is_explained_privately_and_costs_nothing(bot: DiscordBot) -> None:
    no_attach = str(BOT_PERMS & ~ATTACH)
    sent = await bot.interact("imagine", {"prompt": "a lighthouse"}, app_permissions=no_attach)
    await bot.until(lambda: bool(bot.callbacks(sent)), "the explanation")

    [callback] = bot.callbacks(sent)
    assert callback.type == MESSAGE and callback.data["flags"] & EPHEMERAL
    assert "Attach Files" in callback.data["content"]
    assert bot.replicate.requests == []

    asked = await bot.interact("ask", {"prompt": "but can you talk?"}, app_permissions=no_attach)
    assert (await bot.answered(asked)).content == "Hello, world"  # text needs no attachments


# --- 10. DMs -------------------------------------------------------------------------------------------


async def test_commands_work_in_a_dm_with_the_bot() -> None:
    async with discord_bot(discord_guild_ids=()) as bot:  # global commands are the ones DMs can use
        [put] = bot.discord.command_puts
        assert put.guild_id is None and sorted(c["name"] for c in put.body) == ["ask", "imagine", "replicate",
                                                                                  "replicate-admin"]
        asked = await bot.interact("ask", {"prompt": "psst"}, dm=True, user_id=USER)
        drawn = await bot.interact("imagine", {"prompt": "a secret", "seed": 5}, dm=True, user_id=USER)
        answer = await bot.answered(asked)
        picture = await bot.answered(drawn)

        assert "member" not in asked.payload and asked.guild_id is None
        assert answer.content == "Hello, world" and answer.guild_id is None
        assert answer.channel_id == asked.channel_id != CHANNEL
        assert [a.data for a in picture.attachments] == [PNG] and "5" in picture.content
        assert [c.type for c in bot.callbacks(asked) + bot.callbacks(drawn)] == [DEFERRED, DEFERRED]


async def test_commands_work_in_a_thread(bot: DiscordBot) -> None:
    parent = bot.discord.objects.channels[CHANNEL]
    thread_id = bot.discord.objects.snowflake()
    bot.discord.objects.thread(thread_id, parent, "pictures", 11, {})
    sent = await bot.interact("imagine", {"prompt": "a tiny robot"}, channel_id=thread_id)
    answer = await bot.answered(sent)

    assert answer.channel_id == thread_id and [a.data for a in answer.attachments] == [PNG]
    assert bot.discord.channel_messages(CHANNEL) == []


# --- 11. gateway reconnect --------------------------------------------------------------------------------


async def test_dropped_gateway_resumes_and_keeps_commands_in_flight(bot: DiscordBot) -> None:
    tokens = ["Still", " here", " after", " the", " drop."]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.1))
    in_flight = await bot.interact("ask", {"prompt": "long one"})
    await bot.until(lambda: bool(original_patches(bot, in_flight)), "the first edit")

    await bot.discord.drop_gateway(4000)
    await bot.discord.wait_for_ready(2)
    assert (bot.discord.gateway_connections, bot.discord.identify_count, bot.discord.resume_count) == (2, 1, 1)
    after = await bot.interact("ask", {"prompt": "after the drop"}, channel_id=SECOND_CHANNEL)

    assert (await bot.answered(in_flight)).content == "".join(tokens)
    assert (await bot.answered(after)).content == "".join(tokens)
    assert len(bot.replicate.creates) == 2


# --- 12. exactly once ---------------------------------------------------------------------------------


async def test_a_redelivered_interaction_creates_one_prediction(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "only once"})
    bot.discord.dispatch("INTERACTION_CREATE", sent.payload)  # the same interaction (same id) again
    later = await bot.interact("ask", {"prompt": "a later command"})  # handled after the repeat
    await bot.answered(sent)
    await bot.answered(later)

    assert len(bot.callbacks(sent)) == 1
    assert len([r for r in bot.discord.requests if r.path.startswith(f"/interactions/{sent.id}/")]) == 1
    assert sorted(p.input["prompt"] for p in bot.replicate.creates) == ["a later command", "only once"]


# --- beyond the 15-minute interaction token --------------------------------------------------------------


def dispatch_ask_created_at(bot: DiscordBot, created: datetime, token: str, prompt: str) -> None:
    """An /ask interaction that Discord created at `created` (its id says so), dispatched now."""
    interaction_id = (int(created.timestamp() * 1000) - DISCORD_EPOCH_MS) << 22
    [ask] = [c for c in bot.discord.commands(GUILD) if c["name"] == "ask"]
    data = {"id": ask["id"], "name": "ask", "type": 1, "guild_id": str(GUILD),
            "options": [{"name": "prompt", "type": 3, "value": prompt}]}
    payload = bot.discord.objects.interaction(interaction_id=interaction_id, token=token, data=data, guild_id=GUILD,
                                              channel_id=CHANNEL, user_id=USER, app_permissions=str(BOT_PERMS),
                                              locale="en-US")
    bot.discord.interactions[token] = InteractionState(interaction_id, token, "ask", GUILD, CHANNEL, USER, payload,
                                                       time.monotonic())
    bot.discord.dispatch("INTERACTION_CREATE", payload)


async def test_answer_finishing_after_the_interaction_token_expires_is_posted_in_the_channel(bot: DiscordBot) -> None:
    # An interaction created 14.5 minutes ago: the token has under a minute left when it ends.
    dispatch_ask_created_at(bot, datetime.now(UTC) - INTERACTION_TOKEN_LIFETIME + timedelta(seconds=30),
                            "aW50ZXJhY3Rpb246" + "old" * 30, "an old question")
    # Past the token, a "still running" notice says where the answer will come; the answer takes its place.
    await bot.until(lambda: [m.content.endswith("Hello, world")
                             for m in bot.discord.channel_messages(CHANNEL)] == [True]
                    and bool(bot.discord.requests_to("DELETE", f"/channels/{CHANNEL}/messages/")), "the channel post")

    [posted] = bot.discord.channel_messages(CHANNEL)
    assert posted.content.endswith("\nHello, world") and f"<@{USER}>" in posted.content
    assert posted.allowed_mentions == NO_MENTIONS and not posted.pings
    notice, answer = [r for r in bot.discord.requests if r.path == f"/channels/{CHANNEL}/messages"]
    assert (notice.method, answer.method) == ("POST", "POST") and "still running" in notice.json["content"]


async def test_an_answer_leaving_the_interaction_midway_takes_its_stop_button_with_it(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[f"w{i} " for i in range(16)], token_interval_s=0.25))
    # Two seconds of the token left before the adapter's margin: the answer starts streaming there, with Stop.
    token = "aW50ZXJhY3Rpb246" + "mid" * 30
    dispatch_ask_created_at(bot, datetime.now(UTC) - INTERACTION_TOKEN_LIFETIME + TOKEN_SAFETY_MARGIN
                            + timedelta(seconds=2), token, "a question near the end of the token")

    def original_components() -> str:
        original = bot.discord.original_message(token)
        return str(original.components) if original is not None else ""

    await bot.until(lambda: "stop:" in original_components(), "the answer streaming with Stop")
    await bot.until(lambda: any("w15" in m.content for m in bot.discord.channel_messages(CHANNEL))
                    and bool(bot.discord.requests_to("DELETE", f"/channels/{CHANNEL}/messages/")),
                    "the answer in the channel (its notice gone)")

    original = bot.discord.original_message(token)
    assert original is not None and "w0" in original.content  # what it streamed stays
    assert "stop:" not in original_components()  # but no Stop is left on it


# --- regressions ---------------------------------------------------------------------------------------


async def test_failure_after_text_started_leaves_no_status_or_cursor_behind(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL,
                            TextModel(tokens=["Partial"], token_interval_s=0.2, fail_with="CUDA out of memory"))
    sent = await bot.interact("ask", {"prompt": "fail half way"})
    await bot.until(lambda: any(m.ephemeral for m in bot.visible(sent)), "the private error")

    errors = [m for m in bot.visible(sent) if "failed while running" in m.content]
    assert len(errors) == 1 and errors[0].ephemeral
    public = [m.content for m in bot.visible(sent) if not m.ephemeral]
    assert all(not text.startswith("⏳") and not text.endswith(CURSOR) for text in public), public
    assert public == ["Partial\n\n*(answer incomplete)*"]  # what was written stays, marked unfinished


async def test_many_answers_at_once_in_one_channel_each_fill_their_own_response(bot: DiscordBot) -> None:
    sent = [await bot.interact("ask", {"prompt": f"question {i}"}) for i in range(8)]
    await bot.until(lambda: all(any(m.content == "Hello, world" for m in bot.visible(s)) for s in sent), "8 answers")

    assert [bot.original(s).content for s in sent] == ["Hello, world"] * 8
    assert [len(bot.discord.followups(s.token)) for s in sent] == [0] * 8


async def test_answer_ending_while_a_follow_up_is_being_posted_leaves_no_stray_message() -> None:
    head = "".join(f"Paragraph line {i} of a long answer.\n" for i in range(80))  # ~2,800 characters
    async with discord_bot(discord_class=SlowFollowUpDiscord) as bot:
        slow = bot.discord
        assert isinstance(slow, SlowFollowUpDiscord)
        bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[head], hang=True))  # the test says when it ends
        sent = await bot.interact("ask", {"prompt": "a long one"})
        await bot.replicate.wait_until(lambda: bool(bot.replicate.creates), what="the create")
        prediction = bot.replicate.creates[0]

        def end_the_answer() -> None:  # while the progress edit's follow-up post waits for its response
            bot.replicate._token(prediction, "The end.")
            bot.replicate._finish(prediction)

        slow.on_hold, slow.holding = end_the_answer, True
        await bot.until(lambda: any(m.content.endswith("The end.") for m in bot.visible(sent)), "the final text")

        assert slow.held, "the progress edit never posted a follow-up"
        shown = [m.content for m in bot.visible(sent)]
        assert "".join(text_lines("\n".join(shown))) == "".join(text_lines(head + "The end."))
        assert not any(text.endswith(CURSOR) for text in shown), shown


async def test_idle_shutdown_is_prompt() -> None:
    async with fakes() as (discord_fake, replicate):
        saved = redirect_snapshot()
        service = BotService(bot_settings(replicate, discord=discord_fake), FAST_POLICY)
        finished = False
        try:
            await service.start()
            await discord_fake.wait_for_ready()
            async with asyncio.timeout(2.0):
                await service.shutdown()
            finished = True
        except TimeoutError:
            pass
        finally:
            if not finished:
                await stop_service(service)
            restore_redirect(saved)
        assert finished, "shutdown of an idle bot took more than 2 s"


async def test_a_defer_discord_refuses_still_gets_the_user_a_private_reply_and_runs_nothing(bot: DiscordBot) -> None:
    bot.discord.fail("POST", r"/interactions/\d+/[^/]+/callback$", status=403, code=50001, message="Missing Access")

    sent = await bot.interact("ask", {"prompt": "hello?"})

    await bot.until(lambda: bot.discord.original_message(sent.token) is not None, "a private reply")
    told = bot.original(sent)
    assert told.ephemeral and "went wrong on our side" in told.content
    assert bot.replicate.creates == []
