"""`adapters.discord_conversations` end to end: users' messages arrive as MESSAGE_CREATE on the fake gateway (with
mentions, replies and Discord's Message Content rule), the real bot answers through discord.py, and the prompts
the fake Replicate received show which earlier turns the model saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.rendering import CURSOR
from config.governance import UseLimit, Window
from tests.discord_harness import USER, DiscordBot, discord_bot, fakes, running_bot
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import DIRECT_MESSAGES, GUILD_MESSAGES, MESSAGE_CONTENT, FakeDiscord
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.harness_common import ANSWER, APPLICATION_ID, ASK_MODEL, bot_settings

BOT = f"<@{APPLICATION_ID}>"
HINT = "-# Reply to this and mention @fakebot to continue."
USER_TURN = "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
ASSISTANT_TURN = "<|start_header_id|>assistant<|end_header_id|>\n\n{}<|eot_id|>"
FORGOTTEN = "I no longer remember that conversation"


@pytest.fixture
async def bot(caplog: pytest.LogCaptureFixture) -> AsyncIterator[DiscordBot]:
    """The default: no Message Content intent."""
    async with discord_bot(discord_message_content=False) as running:
        yield running
    assert_no_errors(caplog)


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    assert [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR] == []


def settled(messages: list[StoredMessage]) -> bool:
    return bool(messages) and not any(m.content.startswith("⏳") or m.content.endswith(CURSOR) for m in messages)


async def answer_to(discord: FakeDiscord, message: dict[str, Any], what: str = "the answer") -> list[StoredMessage]:
    """Until the bot's replies to `message` are final; returns them, oldest first."""
    message_id = int(message["id"])
    await discord.wait_until(lambda: settled(discord.replies_to(message_id)), 10.0, what=what)
    return discord.replies_to(message_id)


async def ask(bot: DiscordBot, prompt: str) -> StoredMessage:
    sent = await bot.interact("ask", {"prompt": prompt})
    return await bot.answered(sent)


async def until_linked(bot: DiscordBot, message_id: int, timeout_s: float = 10.0) -> None:
    """Until the bot's state store links the message to a conversation."""
    async with asyncio.timeout(timeout_s):
        # Polled under a deadline: the state store tells no one of a write.
        while await bot.service.core.find_conversation(f"discord:msg:{message_id}") is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def prompts(replicate: FakeReplicate) -> list[str]:
    return [str(create.input["prompt"]) for create in replicate.creates]


def transcript_of(*turns: str) -> str:
    """The user and assistant turns, alternating, as the Llama 3 transcript writes them."""
    return "".join((USER_TURN if index % 2 == 0 else ASSISTANT_TURN).format(turn) for index, turn in enumerate(turns))


# --- intents ---------------------------------------------------------------------------------------------------


async def test_the_bot_asks_for_message_events_but_not_for_message_content_by_default(bot: DiscordBot) -> None:
    intents = bot.discord.gateway.identify_payloads[-1]["intents"]
    assert intents & GUILD_MESSAGES and intents & DIRECT_MESSAGES
    assert not intents & MESSAGE_CONTENT


async def test_discord_message_content_asks_for_the_privileged_intent() -> None:
    async with discord_bot(discord_message_content=True) as bot:
        assert bot.discord.gateway.identify_payloads[-1]["intents"] & MESSAGE_CONTENT


# --- replies, mentions, DMs ------------------------------------------------------------------------------------


async def test_replies_that_mention_the_bot_continue_the_conversation_with_every_earlier_turn(bot: DiscordBot) -> None:
    first = await ask(bot, "Name a colour")
    second = bot.discord.send_message(f"{BOT} and another one?", reply_to=first.id)
    [second_answer] = await answer_to(bot.discord, second)
    third = bot.discord.send_message(f"{BOT} which is warmer?", reply_to=second_answer.id)
    [third_answer] = await answer_to(bot.discord, third)

    first_prompt, second_prompt, third_prompt = prompts(bot.replicate)
    assert first_prompt == "Name a colour"  # a first turn is the prompt alone
    assert transcript_of("Name a colour", ANSWER, "and another one?") in second_prompt
    assert transcript_of("Name a colour", ANSWER, "and another one?", ANSWER, "which is warmer?") in third_prompt
    # Each answer replies to the user's message, pinging no one (the user included).
    assert third_answer.content == f"{ANSWER}\n\n{HINT}"
    assert third_answer.message_reference is not None
    assert str(third_answer.message_reference["message_id"]) == third["id"]
    posts = bot.discord.requests_to("POST", r"/channels/\d+/messages$")
    assert posts and all(post.json["allowed_mentions"]["parse"] == [] for post in posts)
    assert not any(post.json["allowed_mentions"].get("replied_user") for post in posts)
    assert not second_answer.pings and not third_answer.pings


async def test_a_mention_starts_a_conversation_answered_as_a_reply(bot: DiscordBot) -> None:
    message = bot.discord.send_message(f"{BOT} what is a haiku?")
    [reply] = await answer_to(bot.discord, message)
    assert prompts(bot.replicate) == ["what is a haiku?"]  # the mention stripped
    assert reply.content == f"{ANSWER}\n\n{HINT}"
    follow_up = bot.discord.send_message(f"{BOT} shorter", reply_to=reply.id)
    await answer_to(bot.discord, follow_up)
    assert transcript_of("what is a haiku?", ANSWER, "shorter") in prompts(bot.replicate)[1]


async def test_a_dm_continues_the_latest_conversation_and_its_answers_need_no_hint(bot: DiscordBot) -> None:
    first = bot.discord.send_message("tell me a joke", dm=True)
    [first_answer] = await answer_to(bot.discord, first)
    second = bot.discord.send_message("another", dm=True)
    [second_answer] = await answer_to(bot.discord, second)
    assert transcript_of("tell me a joke", ANSWER, "another") in prompts(bot.replicate)[1]
    assert first_answer.content == second_answer.content == ANSWER
    assert first_answer.guild_id is None


async def test_a_plain_dm_continues_an_ask_typed_in_the_dm(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "Name a river"}, dm=True)
    await bot.answered(sent)
    message = bot.discord.send_message("how long is it?", dm=True)
    await answer_to(bot.discord, message)
    assert transcript_of("Name a river", ANSWER, "how long is it?") in prompts(bot.replicate)[1]


# --- the Message Content intent ----------------------------------------------------------------------------------


async def test_without_the_intent_a_reply_without_a_mention_never_reaches_the_model(bot: DiscordBot) -> None:
    answer = await ask(bot, "Name a colour")
    message = bot.discord.send_message("and another one?", reply_to=answer.id)  # Discord withholds its text
    [hint] = await answer_to(bot.discord, message, "the hint")
    assert "Mention me (@fakebot)" in hint.content and not hint.pings
    assert len(bot.replicate.creates) == 1
    # Replying to the hint, with the mention, goes on with the conversation.
    retry = bot.discord.send_message(f"{BOT} and another one?", reply_to=hint.id)
    await answer_to(bot.discord, retry)
    assert transcript_of("Name a colour", ANSWER, "and another one?") in prompts(bot.replicate)[1]


async def test_a_message_with_only_the_mention_gets_a_hint_not_a_prediction(bot: DiscordBot) -> None:
    message = bot.discord.send_message(f"  {BOT}  ")
    [hint] = await answer_to(bot.discord, message, "the hint")
    assert hint.content.startswith("Mention me")
    sync = bot.discord.send_message(f"{BOT} hello")
    await answer_to(bot.discord, sync)
    assert prompts(bot.replicate) == ["hello"]


async def test_with_the_intent_a_plain_reply_continues_and_answers_carry_no_hint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with discord_bot(discord_message_content=True) as bot:
        answer = await ask(bot, "Name a colour")
        assert answer.content == ANSWER
        message = bot.discord.send_message("and another one?", reply_to=answer.id)
        [reply] = await answer_to(bot.discord, message)
        assert transcript_of("Name a colour", ANSWER, "and another one?") in prompts(bot.replicate)[1]
        assert reply.content == ANSWER
    assert_no_errors(caplog)


# --- /ask answers ----------------------------------------------------------------------------------------------


def long_answer(replicate: FakeReplicate) -> None:
    paragraphs = [f"Paragraph {n}: " + "words " * 120 for n in range(6)]  # ~4,300 characters: three messages
    replicate.add_model(ASK_MODEL, TextModel(tokens=["\n\n".join(paragraphs)]))


async def test_ask_answers_end_with_the_hint_and_a_reply_to_any_of_their_messages_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with discord_bot(arrange=long_answer, discord_message_content=False) as bot:
        sent = await bot.interact("ask", {"prompt": "Tell me a lot"})
        await bot.answered(sent)
        await bot.until(lambda: settled(bot.visible(sent)) and "Paragraph 5" in bot.visible(sent)[-1].content,
                        "the last follow-up")
        messages = bot.visible(sent)
        assert all(len(m.content) <= 2000 for m in messages)
        assert messages[-1].content.endswith(f"\n\n{HINT}") and HINT not in messages[0].content
        # Follow-ups the final text added are linked once posted: wait for that, not for a reply to race it.
        await until_linked(bot, messages[-1].id)
        message = bot.discord.send_message(f"{BOT} summarise that", reply_to=messages[-1].id)
        await answer_to(bot.discord, message)
        # Its last message too (the answer is three): the bot closes once the test ends, with nothing in flight.
        await bot.until(lambda: "Paragraph 5" in bot.discord.replies_to(int(message["id"]))[-1].content,
                        "the whole answer")
        assert USER_TURN.format("Tell me a lot") in prompts(bot.replicate)[1]
        assert prompts(bot.replicate)[1].endswith(
            USER_TURN.format("summarise that") + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        )
    assert_no_errors(caplog)


async def test_options_typed_at_the_end_of_a_follow_up_apply_to_it(bot: DiscordBot) -> None:
    answer = await ask(bot, "Name a colour")
    message = bot.discord.send_message(f"{BOT} one more --max-tokens 40", reply_to=answer.id)
    await answer_to(bot.discord, message)
    first, second = bot.replicate.creates
    assert second.input["max_tokens"] == 40 and first.input["max_tokens"] != 40
    assert transcript_of("Name a colour", ANSWER, "one more") in str(second.input["prompt"])


# --- ignored, once, refused -------------------------------------------------------------------------------------


async def test_bots_the_bot_itself_and_messages_not_for_it_are_ignored(bot: DiscordBot) -> None:
    answer = await ask(bot, "Name a colour")
    bot.discord.send_message(f"{BOT} hello from a bot", author_is_bot=True)
    bot.discord.send_message(f"{BOT} hello from myself", user_id=APPLICATION_ID)
    bot.discord.send_message("just chatting, no mention")
    bot.discord.send_message(f"{BOT} a reply from a bot", reply_to=answer.id, author_is_bot=True)
    last = bot.discord.send_message(f"{BOT} the only one for me")  # after the others: they were all seen by now
    await answer_to(bot.discord, last)
    assert len(bot.replicate.creates) == 2 and "the only one for me" in prompts(bot.replicate)[1]
    assert [m.content for m in bot.discord.channel_messages(int(last["channel_id"]))] == [
        f"{ANSWER}\n\n{HINT}"
    ]


async def test_a_redelivered_message_is_answered_once(bot: DiscordBot) -> None:
    message = bot.discord.send_message(f"{BOT} once please")
    bot.discord.dispatch("MESSAGE_CREATE", message)  # Discord replays it (a resumed session)
    await answer_to(bot.discord, message)
    last = bot.discord.send_message(f"{BOT} and now")
    await answer_to(bot.discord, last)
    assert len(bot.replicate.creates) == 2
    assert len(bot.discord.replies_to(int(message["id"]))) == 1


async def test_a_refused_turn_is_told_by_dm_and_creates_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async with discord_bot(limits={"ask": UseLimit(0, Window.DAY)}, discord_message_content=False) as bot:
        message = bot.discord.send_message(f"{BOT} hello")
        dm = bot.discord.objects.dm_channel(USER)
        await bot.until(lambda: bool(bot.discord.channel_messages(dm)), "the refusal by DM")
        [refusal] = bot.discord.channel_messages(dm)
        assert refusal.content and not refusal.pings
        assert bot.replicate.creates == []
        assert bot.discord.replies_to(int(message["id"])) == []
    assert_no_errors(caplog)


async def test_a_refusal_without_dms_is_a_reply_that_pings_no_one(caplog: pytest.LogCaptureFixture) -> None:
    async with discord_bot(limits={"ask": UseLimit(0, Window.DAY)}, discord_message_content=False) as bot:
        bot.discord.refuse_dms(USER)
        message = bot.discord.send_message(f"{BOT} hello")
        await bot.until(lambda: bool(bot.discord.replies_to(int(message["id"]))), "the refusal as a reply")
        [refusal] = bot.discord.replies_to(int(message["id"]))
        assert refusal.content and not refusal.pings
        assert bot.replicate.creates == []
    assert_no_errors(caplog)


# --- memory ---------------------------------------------------------------------------------------------------


async def continue_after_restart(same_state: bool) -> tuple[FakeReplicate, list[StoredMessage]]:
    """An /ask on one bot; then, on a new bot process state (the same SQLite file or a new one), a reply to it."""
    async with fakes() as (discord_fake, replicate):
        first = bot_settings(replicate, discord=discord_fake)
        state: dict[str, Any] = {"state_url": first.governance.state_url} if same_state else {}
        async with running_bot(discord_fake, replicate, discord_message_content=False, **state) as service:
            bot = DiscordBot(discord_fake, replicate, service, first)
            answer = await ask(bot, "Name a colour")
        async with running_bot(discord_fake, replicate, discord_message_content=False, **state):
            message = discord_fake.send_message(f"{BOT} and another one?", reply_to=answer.id)
            return replicate, await answer_to(discord_fake, message)


async def test_a_conversation_survives_a_restart() -> None:
    replicate, [reply] = await continue_after_restart(same_state=True)
    assert transcript_of("Name a colour", ANSWER, "and another one?") in prompts(replicate)[1]
    assert FORGOTTEN not in reply.content


async def test_a_reply_to_an_answer_the_bot_no_longer_knows_starts_afresh_and_says_so() -> None:
    replicate, [reply] = await continue_after_restart(same_state=False)
    assert "Name a colour" not in prompts(replicate)[1]
    assert FORGOTTEN in reply.content and reply.content.endswith(HINT)
