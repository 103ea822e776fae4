"""Slack answers through each way the workspace's limits allow, over the wire (real bolt/slack_sdk, fake Slack and
Replicate): a native stream (chat.startStream/appendStream/stopStream), the fall back when a workspace refuses it,
an expired stream, placeholder-and-edit streaming, one post when no budget is left, and a long answer past one
message; each with its buttons (Stop while written, Again once finished)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from adapters import slack as slack_adapter
from adapters.slack import RetryBackoff
from adapters.slack_format import STREAM_MAX_CHARS, STREAM_STOP_TEXT
from bot.runner import RunPolicy
from service.bot_service import BotService
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack, Message
from tests.harness_common import (
    ASK_MODEL,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
    bot_settings,
    default_models,
)
from tests.slack_harness import CURSOR

CHANNEL = "C0CHAN"
ASKER, OTHER = "U0USER", "U0OTHER"
HOSTILE = ["Hi <@U999> ", "<!here> **bold** ", "and <https://evil.example|click> ", "done."]
HOSTILE_SHOWN = "Hi &lt;@U999&gt; &lt;!here&gt; **bold** and &lt;https://evil.example|click&gt; done."
STOPPED = "⚠️ Stopped."


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk's retry handlers run as in production, waiting milliseconds instead of seconds."""
    monkeypatch.setattr(slack_adapter, "RETRY_BACKOFF", RetryBackoff(first_wait_s=0.01, jitter_s=0.01))


@asynccontextmanager
async def running_bot(
    arrange_slack: Callable[[FakeSlack], None], model: TextModel
) -> AsyncIterator[tuple[FakeSlack, FakeReplicate]]:
    """A bot (Socket Mode) on fakes; `arrange_slack` runs before it starts (it reads its scopes at start-up)."""
    async with FakeReplicate(api_token=REPLICATE_TOKEN) as replicate, \
            FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN) as slack:
        default_models(replicate)
        replicate.add_model(ASK_MODEL, model)
        arrange_slack(slack)
        service = BotService(bot_settings(replicate, slack, slack_app_token=slack.app_token),
                             RunPolicy(timeout_s=10, poll_interval_s=0.05, create_wait_s=1))
        await service.start()
        await slack.wait_for_socket(1, timeout=WAIT_S)
        try:
            yield slack, replicate
        finally:
            await service.shutdown()
        assert slack.fake_errors == [] and replicate.fake_errors == []


def slow(tokens: list[str], interval_s: float = 0.3, **kwargs: Any) -> TextModel:
    return TextModel(tokens=tokens, token_interval_s=interval_s, **kwargs)


async def ask(slack: FakeSlack, text: str = "go", channel: str = CHANNEL, user: str = ASKER) -> str:
    """`/ask text`; the ts of its parent message (the thread's root)."""
    before = len(slack.channel_messages(channel))
    await slack.send_slash_command(command="/ask", text=text, user_id=user, channel_id=channel)
    await slack.wait_until(lambda: len(slack.channel_messages(channel)) > before, timeout=WAIT_S, what="the parent")
    return slack.channel_messages(channel)[-1].ts


def replies(slack: FakeSlack, root: str, channel: str = CHANNEL) -> list[Message]:
    return [m for m in slack.thread(channel, root) if m.user == slack.bot_user_id]


async def finished_replies(slack: FakeSlack, root: str, last_ends: str, channel: str = CHANNEL) -> list[Message]:
    def done() -> bool:
        mine = replies(slack, root, channel)
        return bool(mine) and not any(m.streaming or CURSOR in m.text or m.text.startswith("_⏳") for m in mine) \
            and mine[-1].text.endswith(last_ends)

    await slack.wait_until(done, timeout=WAIT_S, what=f"the finished answer in {channel}/{root}")
    return replies(slack, root, channel)


def allow(slack: FakeSlack) -> None:
    slack.allow_streaming()


# --- native stream -----------------------------------------------------------------------------------


async def test_a_native_stream_shows_the_answer_as_it_is_written_inert_then_again_under_it() -> None:
    async with running_bot(allow, slow(HOSTILE)) as (slack, _):
        root = await ask(slack)
        [answer] = await finished_replies(slack, root, "done.")

        assert answer.stream_started_at is not None  # a native stream, not a post
        shown = [text for _, text in answer.stream_history]
        assert shown[-1] == HOSTILE_SHOWN and answer.markdown == HOSTILE_SHOWN
        assert any(text and text != HOSTILE_SHOWN for text in shown)  # some of it shown before the final text
        assert all(HOSTILE_SHOWN.startswith(text) for text in shown)  # only ever grew, always inert
        assert list(answer.buttons) == ["again"]
        assert slack.requests_to("chat.update") == []  # the edit budget is left to others
        start = slack.requests_to("chat.startStream")[0].params
        assert (start["recipient_user_id"], start["recipient_team_id"]) == (ASKER, slack.team_id)


async def test_stop_reaches_the_asker_privately_during_a_native_stream_and_stops_it() -> None:
    async with running_bot(allow, TextModel(tokens=["Thinking", " hard"], hang=True)) as (slack, replicate):
        root = await ask(slack)
        await slack.wait_until(lambda: any("Thinking hard" in m.text for m in replies(slack, root)), timeout=WAIT_S,
                               what="the text so far")
        [stop_notice] = slack.ephemerals
        assert stop_notice["user"] == ASKER and stop_notice["thread_ts"] == root
        assert stop_notice["text"] == STREAM_STOP_TEXT

        payload = slack.press_ephemeral(stop_notice, "stop")
        await slack.wait_for_ack(await slack.send_interactive(payload))

        [answer] = await finished_replies(slack, root, STOPPED)
        assert answer.text == f"Thinking hard\n\n{STOPPED}" and answer.buttons == {}
        [prediction] = replicate.creates
        await replicate.wait_until(lambda: prediction.canceled, timeout=WAIT_S, what="the cancel on Replicate")


async def test_a_long_native_answer_goes_on_in_new_messages_with_again_on_the_last() -> None:
    paragraph = "word " * 199 + "end.\n\n"  # 1,000 characters
    code = "```python\n" + "x = 1\n" * 300 + "```\n\n"
    tokens = [paragraph] * 9 + [code] + [paragraph] * 4 + ["The end."]
    async with running_bot(allow, slow(tokens, 0.05)) as (slack, _):
        root = await ask(slack)
        messages = await finished_replies(slack, root, "The end.")

        assert len(messages) >= 2 and messages[0].stream_started_at is not None
        assert len(messages[0].text) <= STREAM_MAX_CHARS and all(len(m.text) <= 4000 for m in messages[1:])
        assert all(m.text.count("```") % 2 == 0 for m in messages), [m.text[-40:] for m in messages]
        assert [list(m.buttons) for m in messages] == [[]] * (len(messages) - 1) + [["again"]]
        words = "\n".join(m.text for m in messages).replace("```python\n", "").replace("```", "").split()
        assert words == "".join(tokens).replace("```python\n", "").replace("```", "").split()
        assert [c.error for c in slack.requests if c.error] == []


# --- falling back ------------------------------------------------------------------------------------


def granted_but_refused(slack: FakeSlack) -> None:
    slack.grant_scope("assistant:write")
    slack.refuse_streaming("messages_tab_disabled")


async def test_a_workspace_that_refuses_native_streaming_gets_edits_and_is_asked_once() -> None:
    async with running_bot(granted_but_refused, slow(["Hello", ", world"])) as (slack, _):
        first = await ask(slack)
        [answer] = await finished_replies(slack, first, "Hello, world")
        assert answer.stream_started_at is None
        assert answer.buttons_history[0] == {"stop": answer.buttons_history[0]["stop"]}  # the placeholder's Stop
        assert answer.markdown == "Hello, world" and list(answer.buttons) == ["again"]

        second = await ask(slack)
        await finished_replies(slack, second, "Hello, world")
        assert [c.error for c in slack.requests_to("chat.startStream")] == ["messages_tab_disabled"]


async def test_an_app_without_the_ai_scope_never_tries_native_streaming() -> None:
    async with running_bot(lambda slack: None, slow(["Hello", ", world"])) as (slack, _):
        root = await ask(slack)
        await finished_replies(slack, root, "Hello, world")
        assert slack.requests_to("chat.startStream") == []


async def test_an_expired_stream_is_edited_into_the_answer_once_it_is_over() -> None:
    async with running_bot(allow, slow(["Part one. ", "Part two. ", "Part three."], 0.5)) as (slack, _):
        root = await ask(slack)
        await slack.wait_until(lambda: any("Part one" in m.text for m in replies(slack, root)), timeout=WAIT_S,
                               what="the first text")
        [stream] = replies(slack, root)
        slack.expire_stream(stream)

        [answer] = await finished_replies(slack, root, "Part three.")
        assert answer is stream and answer.markdown == "Part one. Part two. Part three."
        assert list(answer.buttons) == ["again"]
        refused = [c for c in slack.requests if c.error == "message_not_in_streaming_state"]
        assert refused and {c.method for c in refused} <= {"chat.appendStream", "chat.stopStream"}
        assert [c.ok for c in slack.requests_to("chat.update")][-1]


async def test_a_stop_that_fails_leaves_the_answer_posted_and_the_stream_removed() -> None:
    def stop_fails(slack: FakeSlack) -> None:
        slack.allow_streaming()
        slack.fail("chat.stopStream", "internal_error", status=500, times=3)

    async with running_bot(stop_fails, slow(["Hello", ", world"])) as (slack, _):
        root = await ask(slack)
        [answer] = await finished_replies(slack, root, "Hello, world")
        assert answer.stream_started_at is None and answer.markdown == "Hello, world"
        assert list(answer.buttons) == ["again"]
        assert [m.stream_started_at is not None for m in slack.deleted] == [True]


# --- the edit path and one post ----------------------------------------------------------------------


async def test_with_the_stream_budget_spent_the_answer_is_edited_in_with_stop_then_again() -> None:
    def starts_spent(slack: FakeSlack) -> None:
        slack.allow_streaming()
        slack.rate_limit("chat.startStream", times=1, retry_after=30)

    async with running_bot(starts_spent, slow(["Hello", ", world", " again"], 0.6)) as (slack, _):
        root = await ask(slack)
        [answer] = await finished_replies(slack, root, "world again")
        assert answer.stream_started_at is None
        assert any(text and "Hello" in text and CURSOR in text for text in answer.markdown_history)  # streamed
        assert all("stop" in buttons for buttons in answer.buttons_history[:-1])
        assert list(answer.buttons) == ["again"]

        second = await ask(slack)  # the 429 paused starts for 30 s: no second try meanwhile
        await finished_replies(slack, second, "world again")
        assert len(slack.requests_to("chat.startStream")) == 1


async def test_with_no_budget_left_the_answer_is_posted_once_with_again() -> None:
    channels = [f"C0BUSY{n:02d}" for n in range(14)]

    def crowded(slack: FakeSlack) -> None:
        slack.allow_streaming()
        slack.rate_limit("chat.startStream", times=1, retry_after=30)  # and then no more tries for 30 s

    async with running_bot(crowded, slow(["Hello", ", world"], 0.5)) as (slack, _):
        for channel in channels:  # more answers at once than the edit budget's burst
            await slack.send_slash_command(command="/ask", text="go", user_id=ASKER, channel_id=channel)
        await slack.wait_until(lambda: all(len(slack.channel_messages(c)) == 1 for c in channels), timeout=WAIT_S)
        answers = [(await finished_replies(slack, slack.channel_messages(c)[0].ts, "Hello, world", c))
                   for c in channels]

        posted_once = [a for [a] in answers if a.history == [a.text]]
        assert posted_once, "some answer found the edit budget spent"
        for answer in posted_once:
            assert answer.markdown == "Hello, world" and list(answer.buttons) == ["again"]
            assert answer.stream_started_at is None and answer.edit_times == []
