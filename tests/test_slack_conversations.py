"""Slack conversations through real bolt/slack_sdk to a fake Slack (Socket Mode; one test in HTTP mode), a fake
Replicate and a real SQLite state store: thread replies, mentions and direct messages become turns whose prompt
carries every earlier turn; what is not a turn is acknowledged and left alone; each message is answered once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.slack_conversations import EMPTY_MENTION_TEXT
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack, Message, event_callback_payload, signed_headers, slash_command_form
from tests.harness_common import ANSWER, REPLICATE_TOKEN, SLACK_APP_TOKEN, SLACK_BOT_TOKEN, WAIT_S
from tests.harness_common import default_models as arrange_default_models
from tests.slack_harness import CHANNEL, CURSOR, SIGNING_SECRET, SlackBot, restartable_bot, slack_bot

ADMIN, USER, OTHER_BOT = "U0ADMIN", "U0USER", "B0OTHER"
DM = "D0DIRECT"
USER_TURN = "<|start_header_id|>user<|end_header_id|>"
ASSISTANT_TURN = "<|start_header_id|>assistant<|end_header_id|>"


@pytest.fixture
async def bot() -> AsyncIterator[SlackBot]:
    async with slack_bot(admin_users=frozenset({f"slack:{ADMIN}"})) as running:
        yield running


# --- helpers -------------------------------------------------------------------------------------------


def answers(slack: FakeSlack, root: str, channel: str = CHANNEL) -> list[Message]:
    """The bot's finished replies in the thread under `root`, oldest first."""
    return [m for m in slack.thread(channel, root)
            if m.user == slack.bot_user_id and CURSOR not in m.text and not m.text.startswith("_⏳")]


async def wait_for_answers(slack: FakeSlack, root: str, count: int, channel: str = CHANNEL) -> list[Message]:
    """Until the thread holds `count` finished answers from the bot (and no draft)."""
    def done() -> bool:
        mine = [m for m in slack.thread(channel, root) if m.user == slack.bot_user_id]
        return len(mine) >= count and len(answers(slack, root, channel)) == len(mine)

    await slack.wait_until(done, timeout=WAIT_S, what=f"{count} finished answer(s) in thread {root}")
    return answers(slack, root, channel)


async def ask(bot: SlackBot, text: str) -> str:
    """`/ask text` in CHANNEL; the ts of its parent message, once the answer under it is finished."""
    await bot.slack.send_slash_command(command="/ask", text=text, user_id=USER, channel_id=CHANNEL)
    await bot.slack.wait_until(lambda: bool(bot.parents()), timeout=WAIT_S, what="the /ask parent")
    root = bot.parents()[0].ts
    await wait_for_answers(bot.slack, root, 1)
    return root


async def reply(bot: SlackBot, root: str, text: str, channel: str = CHANNEL, **extra: Any) -> str:
    """A user's reply in the thread under `root`, acknowledged; returns its envelope id."""
    envelope = await bot.slack.send_event(bot.slack.message_event(text, user_id=USER, channel_id=channel,
                                                                  thread_ts=root, **extra))
    await bot.slack.wait_for_ack(envelope)
    return envelope


def edited(slack: FakeSlack, ts: str) -> dict[str, Any]:
    """A `message_changed` event: the user edited their message `ts` (the new message inside, no top-level user)."""
    event = slack.message_event("", hidden=True, subtype="message_changed",
                                message={"type": "message", "user": USER, "text": "edited", "ts": ts},
                                previous_message={"type": "message", "user": USER, "text": "before", "ts": ts})
    del event["user"], event["text"]
    return event


async def wait_for_prompt(bot: SlackBot, needle: str) -> None:
    """Until a prediction whose prompt holds `needle` has been created."""
    await bot.slack.wait_until(lambda: any(needle in str(c.input.get("prompt")) for c in bot.replicate.creates),
                               timeout=WAIT_S, what=f"a prediction for {needle!r}")


def prompt(bot: SlackBot, index: int) -> str:
    return str(bot.replicate.creates[index].input["prompt"])


# --- threads of /ask ----------------------------------------------------------------------------------


async def test_replies_in_an_ask_thread_continue_its_conversation_with_every_earlier_turn(bot: SlackBot) -> None:
    root = await ask(bot, "first question")

    await reply(bot, root, "second question")
    await wait_for_answers(bot.slack, root, 2)
    await reply(bot, root, "third question")
    third = await wait_for_answers(bot.slack, root, 3)

    assert [m.text for m in third] == [ANSWER] * 3
    assert len(bot.replicate.creates) == 3
    last = prompt(bot, 2)
    assert last.count(USER_TURN) == 3 and last.count(ASSISTANT_TURN) == 3  # two answers, and the one to write
    assert last.index("first question") < last.index("second question") < last.index("third question")
    assert last.count(ANSWER) == 2
    assert prompt(bot, 1).count(USER_TURN) == 2 and "third question" not in prompt(bot, 1)
    assert bot.slack.ephemerals == []


async def test_options_typed_at_the_end_of_a_follow_up_apply_to_that_turn_only(bot: SlackBot) -> None:
    root = await ask(bot, "a question")

    await reply(bot, root, "shorter please --max-tokens 50")
    await wait_for_answers(bot.slack, root, 2)
    await reply(bot, root, "and again")
    await wait_for_answers(bot.slack, root, 3)

    tokens = [create.input.get("max_tokens") for create in bot.replicate.creates]
    assert tokens[1] == 50 and tokens[0] != 50 and tokens[2] == tokens[0]
    assert "--max-tokens" not in prompt(bot, 1) and "shorter please" in prompt(bot, 2)


async def test_a_reply_in_a_thread_the_bot_wrote_but_no_longer_remembers_starts_afresh_and_says_so(
    bot: SlackBot,
) -> None:
    root = "1690000000.000100"  # an old answer of the bot's, from before what the store keeps
    bot.slack.messages[(CHANNEL, root)] = Message(CHANNEL, root, "an old answer", bot.slack.bot_user_id,
                                                  bot.slack.bot_id, 0.0)

    await reply(bot, root, "what about this?")

    [answer] = await wait_for_answers(bot.slack, root, 1)
    assert answer.text.startswith(ANSWER) and "no longer remember" in answer.text
    assert prompt(bot, 0) == "what about this?"  # nothing from before
    await reply(bot, root, "and then?")  # the thread now leads to the new conversation
    await wait_for_answers(bot.slack, root, 2)
    assert prompt(bot, 1).count(USER_TURN) == 2 and "what about this?" in prompt(bot, 1)


# --- mentions and direct messages ---------------------------------------------------------------------


async def test_a_mention_starts_a_conversation_in_its_thread_that_a_plain_reply_continues(bot: SlackBot) -> None:
    mention = bot.slack.mention_event("what is a haiku?", user_id=USER)
    await bot.slack.send_event(mention)

    [first] = await wait_for_answers(bot.slack, mention["ts"], 1)
    assert first.text == ANSWER
    assert "<@" not in prompt(bot, 0) and "what is a haiku?" in prompt(bot, 0)
    await reply(bot, mention["ts"], "write one")
    await wait_for_answers(bot.slack, mention["ts"], 2)
    assert prompt(bot, 1).count(USER_TURN) == 2 and "what is a haiku?" in prompt(bot, 1)


async def test_a_mention_inside_a_conversations_thread_is_its_next_turn(bot: SlackBot) -> None:
    root = await ask(bot, "first question")

    await bot.slack.send_event(bot.slack.mention_event("second question", user_id=USER, thread_ts=root))

    await wait_for_answers(bot.slack, root, 2)
    assert prompt(bot, 1).count(USER_TURN) == 2 and "first question" in prompt(bot, 1)


async def test_a_direct_message_starts_a_conversation_and_a_reply_in_its_thread_continues_it(bot: SlackBot) -> None:
    message = bot.slack.message_event("hello bot", user_id=USER, channel_id=DM, channel_type="im")
    await bot.slack.send_event(message)

    await wait_for_answers(bot.slack, message["ts"], 1, channel=DM)
    await reply(bot, message["ts"], "tell me more", channel=DM, channel_type="im")
    await wait_for_answers(bot.slack, message["ts"], 2, channel=DM)
    assert prompt(bot, 1).count(USER_TURN) == 2 and "hello bot" in prompt(bot, 1)
    assert bot.slack.channel_messages(DM)[0].ts == message["ts"]  # answered in the thread, not beside it


async def test_a_bare_mention_gets_a_private_hint_once_and_no_model_call(bot: SlackBot) -> None:
    mention = bot.slack.mention_event("  ", user_id=USER)
    as_message = bot.slack.message_event(mention["text"], user_id=USER, ts=mention["ts"])
    for event in (mention, as_message):
        await bot.slack.wait_for_ack(await bot.slack.send_event(event))

    await bot.slack.wait_until(lambda: bool(bot.slack.ephemerals), timeout=WAIT_S, what="the hint")
    [hint] = bot.slack.ephemerals
    assert hint["text"] == EMPTY_MENTION_TEXT and hint["user"] == USER and hint["thread_ts"] == mention["ts"]
    assert bot.replicate.creates == [] and bot.slack.requests_to("chat.postMessage") == []


# --- what is not a turn -------------------------------------------------------------------------------


async def test_edits_other_bots_strangers_threads_and_plain_channel_talk_are_acked_and_not_answered(
    bot: SlackBot,
) -> None:
    root = await ask(bot, "first question")
    stranger = bot.slack.message_event("someone's own topic", user_id="U0OTHER")
    ignored = [
        edited(bot.slack, root),
        bot.slack.message_event("a bot's reply", user_id="U0OTHERBOT", thread_ts=root, bot_id=OTHER_BOT),
        bot.slack.message_event("a bot says hi", user_id="U0OTHERBOT", channel_id=DM, channel_type="im",
                                bot_id=OTHER_BOT),
        bot.slack.message_event("chatting", user_id=USER),
        stranger,
    ]
    envelopes = [await bot.slack.send_event(event) for event in ignored]
    envelopes.append(await bot.slack.send_event(
        bot.slack.message_event("a reply in it", user_id=USER, thread_ts=stranger["ts"])))

    acks = [await bot.slack.wait_for_ack(envelope) for envelope in envelopes]
    assert len(acks) == len(envelopes)
    await reply(bot, root, "the real next turn")  # handled after all of the above
    await wait_for_prompt(bot, "the real next turn")
    await wait_for_answers(bot.slack, root, 2)
    assert len(bot.replicate.creates) == 2
    mine = [m for m in bot.slack.messages.values() if m.user == bot.slack.bot_user_id]
    assert {m.thread_ts for m in mine if m.is_reply} == {root}  # nothing in the stranger's thread, nor in the DM
    assert bot.slack.ephemerals == []


# --- exactly once -------------------------------------------------------------------------------------


async def test_a_mention_that_also_arrives_as_a_message_is_answered_once(bot: SlackBot) -> None:
    mention = bot.slack.mention_event("once please", user_id=USER)
    as_message = bot.slack.message_event(mention["text"], user_id=USER, ts=mention["ts"])
    envelopes = [await bot.slack.send_event(mention), await bot.slack.send_event(as_message)]
    for envelope in envelopes:
        await bot.slack.wait_for_ack(envelope)

    await wait_for_answers(bot.slack, mention["ts"], 1)
    await reply(bot, mention["ts"], "next")  # handled after both deliveries
    await wait_for_prompt(bot, "next")
    await wait_for_answers(bot.slack, mention["ts"], 2)
    assert len(bot.replicate.creates) == 2 and "next" in prompt(bot, 1)
    assert len([m for m in bot.slack.thread(CHANNEL, mention["ts"]) if m.user == bot.slack.bot_user_id]) == 2


async def test_a_redelivered_event_is_answered_once(bot: SlackBot) -> None:
    root = await ask(bot, "first question")
    event = bot.slack.message_event("second question", user_id=USER, thread_ts=root)
    first = await bot.slack.send_event(event, event_id="Ev0REDELIVER")
    again = await bot.slack.send_event(event, event_id="Ev0REDELIVER", retry_attempt=1, retry_reason="timeout")
    for envelope in (first, again):
        await bot.slack.wait_for_ack(envelope)

    await wait_for_answers(bot.slack, root, 2)
    await reply(bot, root, "third question")
    await wait_for_prompt(bot, "third question")
    await wait_for_answers(bot.slack, root, 3)
    assert len(bot.replicate.creates) == 3
    assert prompt(bot, 2).count("second question") == 1


# --- refusals -----------------------------------------------------------------------------------------


async def test_a_refused_turn_is_told_privately_in_its_thread_and_nothing_is_posted(bot: SlackBot) -> None:
    root = await ask(bot, "first question")
    pause = await bot.slack.send_slash_command(command="/replicate", text="pause", user_id=ADMIN)
    assert "Paused" in str((await bot.slack.wait_for_ack(pause)).get("payload", {}).get("text"))
    posts_before = len(bot.slack.requests_to("chat.postMessage"))

    await reply(bot, root, "second question")

    await bot.slack.wait_until(lambda: bool(bot.slack.ephemerals), timeout=WAIT_S, what="the private refusal")
    [refusal] = bot.slack.ephemerals
    assert "paused" in refusal["text"].lower()
    assert refusal["user"] == USER and refusal["channel"] == CHANNEL and refusal["thread_ts"] == root
    assert len(bot.slack.requests_to("chat.postMessage")) == posts_before
    assert len(bot.replicate.creates) == 1


# --- HTTP mode ----------------------------------------------------------------------------------------


async def test_http_mode_a_reply_in_an_ask_thread_continues_the_conversation() -> None:
    async with slack_bot(http_mode=True) as bot:
        url = f"http://127.0.0.1:{bot.service.http_port}/slack/events"
        async with aiohttp.ClientSession() as session:
            form = slash_command_form(command="/ask", text="first question", user_id=USER,
                                      response_url=bot.slack.new_response_url())
            async with session.post(url, data=form, headers=signed_headers(SIGNING_SECRET, form)) as response:
                assert response.status == 200
            await bot.slack.wait_until(lambda: bool(bot.parents()), timeout=WAIT_S, what="the /ask parent")
            root = bot.parents()[0].ts
            await wait_for_answers(bot.slack, root, 1)

            event = bot.slack.message_event("second question", user_id=USER, thread_ts=root)
            body = json.dumps(event_callback_payload(event, team_id=bot.slack.team_id, api_app_id=bot.slack.app_id,
                                                     bot_user_id=bot.slack.bot_user_id))
            async with session.post(url, data=body, headers=signed_headers(SIGNING_SECRET, body)) as response:
                assert response.status == 200

        await wait_for_answers(bot.slack, root, 2)
        assert prompt(bot, 1).count(USER_TURN) == 2 and "first question" in prompt(bot, 1)


# --- a restart ----------------------------------------------------------------------------------------


async def test_a_conversation_goes_on_after_the_bot_restarts(tmp_path: Any) -> None:
    state_url = f"sqlite:///{tmp_path}/bot.db"
    async with FakeReplicate(api_token=REPLICATE_TOKEN) as replicate, \
            FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN) as slack:
        arrange_default_models(replicate)
        async with restartable_bot(slack, replicate, state_url):
            await slack.send_slash_command(command="/ask", text="before the restart", user_id=USER)
            await slack.wait_until(lambda: bool(slack.channel_messages(CHANNEL)), timeout=WAIT_S, what="parent")
            root = slack.channel_messages(CHANNEL)[0].ts
            await wait_for_answers(slack, root, 1)
            await slack.send_event(slack.message_event("second, still before", user_id=USER, thread_ts=root))
            await wait_for_answers(slack, root, 2)

        async with restartable_bot(slack, replicate, state_url):
            await slack.send_event(slack.message_event("after the restart", user_id=USER, thread_ts=root))
            await wait_for_answers(slack, root, 3)

        creates = [c for c in replicate.creates if "prompt" in c.input]
        last = str(creates[-1].input["prompt"])
        assert last.count(USER_TURN) == 3
        assert last.index("before the restart") < last.index("second, still before") < last.index("after the restart")


# --- the app's manifests ------------------------------------------------------------------------------


def listed_under(manifest: str, key: str) -> set[str]:
    """The `- item` lines right under the line `key:` of a manifest (comments dropped)."""
    lines = manifest.splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip() == f"{key}:")
    items: set[str] = set()
    for line in lines[start + 1:]:
        item = line.split("#")[0].strip()
        if not item.startswith("- "):
            break
        items.add(item[2:].strip())
    return items


@pytest.mark.parametrize("name", ["manifest.yml", "manifest-http.yml"])
def test_both_manifests_subscribe_to_conversations_and_open_the_messages_tab(name: str) -> None:
    manifest = (Path(__file__).resolve().parent.parent / "slack" / name).read_text()

    assert {"app_mention", "message.channels", "message.groups", "message.mpim", "message.im"} <= \
        listed_under(manifest, "bot_events")
    assert {"app_mentions:read", "channels:history", "groups:history", "mpim:history", "im:history"} <= \
        listed_under(manifest, "bot")
    settings = {line.split("#")[0].strip() for line in manifest.splitlines()}
    assert "messages_tab_enabled: true" in settings and "messages_tab_read_only_enabled: false" in settings
