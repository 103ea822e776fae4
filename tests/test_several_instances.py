"""Several bot processes on one Redis state store are one bot: every delivery is answered once, whichever process
it reaches (Slack spreads Socket Mode envelopes over the app's connections and sends an HTTP retry wherever the
load balancer points; a Discord interaction may reach two sessions), and limits, pause, buttons and Slack's
per-workspace edit budget are shared.

Two real `python -m bot` processes (tests/process_harness.py) against the fakes and a real redis-server
(tests/redis_server.py): A starts first (Slack connection 1, the first Discord session), then B.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from adapters.rendering import CURSOR
from adapters.slack import WORKING_TEXT
from tests.bot_harness import started_fakes
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack, Message, signed_headers
from tests.fakes.slack_socket import event_callback_payload
from tests.harness_common import ASK_MODEL, WAIT_S
from tests.process_harness import (
    QUICK_TOKENS,
    SIGNING_SECRET,
    BotProcess,
    add_process_models,
    discord_contents,
    launch_bot,
)

ANSWER = "".join(QUICK_TOKENS)
ADMIN = "U0ADMIN"
CHANNEL = "C0MULTI"


@dataclass
class Instance:
    bot: BotProcess
    http_port: int
    slack_connection: int | None  # its Socket Mode connection (fake.socket index), None in HTTP mode
    discord_session: str  # its gateway session id


@dataclass
class TwoBots:
    replicate: FakeReplicate
    slack: FakeSlack
    discord: FakeDiscord
    a: Instance
    b: Instance

    def predictions(self) -> int:
        return len(self.replicate.creates)


@asynccontextmanager
async def two_bots(tmp_path: Path, redis_url: str, **settings: str) -> AsyncIterator[TwoBots]:
    """The fakes and two bot processes sharing `redis_url` (each in a directory of its own)."""
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_process_models(replicate)
        env = {"STATE_URL": redis_url, "ADMIN_USERS": f"slack:{ADMIN}", **settings}
        started: list[Instance] = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                bot, port = await launch_bot(tmp_path / name, replicate, slack, discord, **env)
                connection, session = slack.socket.current(), discord.gateway.current  # the newest: its own
                assert session is not None
                started.append(Instance(bot, port, connection.index if connection is not None else None, session.id))
            yield TwoBots(replicate, slack, discord, *started)
        finally:
            for instance in started:
                await instance.bot.kill()


def connection_of(instance: Instance) -> int:
    assert instance.slack_connection is not None
    return instance.slack_connection


def bot_replies(slack: FakeSlack, channel: str) -> list[str]:
    """The bot's messages in the threads of `channel` (a user's reply in a thread is not one)."""
    return [reply.text for parent in slack.channel_messages(channel) for reply in slack.thread(channel, parent.ts)
            if reply.bot_id == slack.bot_id]


def finished(slack: FakeSlack, channel: str) -> bool:
    replies = bot_replies(slack, channel)
    return bool(replies) and all(CURSOR not in text and not text.startswith("_⏳") for text in replies) \
        and ANSWER in replies[-1]


async def ack_text(slack: FakeSlack, envelope: str) -> str | None:
    ack = await slack.wait_for_ack(envelope, timeout=WAIT_S)
    text = (ack.get("payload") or {}).get("text")
    return str(text) if text else None


# --- one delivery, two processes: answered once -------------------------------------------------------------


async def test_a_slash_command_redelivered_to_another_process_is_answered_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_bots(tmp_path, redis_url) as bots:
        first = await bots.slack.send_slash_command_on(connection_of(bots.a), "/ask", "once", channel_id=CHANNEL)
        assert await ack_text(bots.slack, first) is None
        again = await bots.slack.redeliver(first, connection=connection_of(bots.b))
        assert await ack_text(bots.slack, again) is None  # acked, as Slack wants, and dropped
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the answer")

        await bots.b.bot.wait_for_line("dropped a repeated delivery")
        assert bots.predictions() == 1
        assert len(bots.slack.channel_messages(CHANNEL)) == 1
        assert bot_replies(bots.slack, CHANNEL) == [ANSWER]


async def test_a_mention_and_a_thread_reply_redelivered_to_another_process_are_answered_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_bots(tmp_path, redis_url) as bots:
        mention = bots.slack.mention_event("start a conversation", channel_id=CHANNEL)
        first = await bots.slack.send_event(mention, connection=connection_of(bots.a))
        await bots.slack.wait_for_ack(first)
        await bots.slack.wait_for_ack(await bots.slack.redeliver(first, connection=connection_of(bots.b)))
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the mention's answer")
        await bots.b.bot.wait_for_line("dropped a repeated delivery")
        assert bots.predictions() == 1

        reply = bots.slack.message_event("and then?", channel_id=CHANNEL, thread_ts=mention["ts"])
        first = await bots.slack.send_event(reply, connection=connection_of(bots.b))
        await bots.slack.wait_for_ack(first)
        await bots.slack.wait_for_ack(await bots.slack.redeliver(first, connection=connection_of(bots.a)))
        await bots.slack.wait_until(lambda: len(bot_replies(bots.slack, CHANNEL)) == 2
                                    and finished(bots.slack, CHANNEL), WAIT_S, what="the reply's answer")
        await bots.a.bot.wait_for_line("dropped a repeated delivery")

        assert bots.predictions() == 2
        assert bot_replies(bots.slack, CHANNEL) == [ANSWER, ANSWER]
        assert "and then?" in json.dumps(bots.replicate.creates[1].input)  # the second turn, in the conversation


async def test_in_http_mode_a_retry_reaching_another_process_is_answered_once(tmp_path: Path, redis_url: str) -> None:
    async with two_bots(tmp_path, redis_url, SLACK_APP_TOKEN="") as bots:
        mention = bots.slack.mention_event("over HTTP", channel_id=CHANNEL)
        bots.slack.messages[(CHANNEL, mention["ts"])] = Message(CHANNEL, mention["ts"], mention["text"], "U0USER",
                                                                None, 0.0, history=[mention["text"]])
        body = json.dumps(event_callback_payload(mention, team_id=bots.slack.team_id, api_app_id=bots.slack.app_id,
                                                 bot_user_id=bots.slack.bot_user_id,
                                                 token=bots.slack.verification_token))
        async with aiohttp.ClientSession() as session:
            for instance, retry in ((bots.a, {}), (bots.b, {"X-Slack-Retry-Num": "1",
                                                            "X-Slack-Retry-Reason": "http_timeout"})):
                headers = {**signed_headers(SIGNING_SECRET, body), **retry}
                url = f"http://127.0.0.1:{instance.http_port}/slack/events"
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the answer")
        await bots.b.bot.wait_for_line("dropped a repeated delivery")

        assert bots.predictions() == 1
        assert bot_replies(bots.slack, CHANNEL) == [ANSWER]


async def test_a_discord_interaction_reaching_two_sessions_is_deferred_and_answered_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_bots(tmp_path, redis_url) as bots:
        sent = await bots.discord.send_interaction("ask", {"prompt": "once"})  # B's session, the newest
        bots.discord.gateway.dispatch("INTERACTION_CREATE", sent.payload, session=bots.a.discord_session)
        await bots.discord.wait_until(lambda: ANSWER in "".join(discord_contents(bots.discord, sent)), WAIT_S,
                                      what="the answer")
        await bots.a.bot.wait_for_line("dropped a repeated delivery")

        assert [callback.interaction_id for callback in bots.discord.callbacks] == [sent.id]
        assert [r.status for r in bots.discord.requests if r.path.startswith(f"/interactions/{sent.id}/")] == [200]
        assert bots.predictions() == 1


# --- shared governance and buttons ---------------------------------------------------------------------------


async def test_a_limit_used_up_through_one_process_holds_in_the_other(tmp_path: Path, redis_url: str) -> None:
    async with two_bots(tmp_path, redis_url, LIMITS="ask=1/day") as bots:
        first = await bots.slack.send_slash_command_on(connection_of(bots.a), "/ask", "one", channel_id=CHANNEL)
        assert await ack_text(bots.slack, first) is None
        second = await bots.slack.send_slash_command_on(connection_of(bots.b), "/ask", "two", channel_id="C0OTHER")
        refusal = await ack_text(bots.slack, second)

        assert refusal is not None and "You've used your 1 /ask command for today." in refusal, refusal
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the first answer")
        assert bots.slack.channel_messages("C0OTHER") == []
        assert bots.predictions() == 1


async def test_a_pause_through_one_process_stops_new_commands_in_the_other(tmp_path: Path, redis_url: str) -> None:
    async with two_bots(tmp_path, redis_url) as bots:
        pause = await bots.slack.send_slash_command_on(connection_of(bots.a), "/replicate", "pause", user_id=ADMIN)
        said = await ack_text(bots.slack, pause)
        assert said is not None and said.startswith("Paused"), said

        command = await bots.slack.send_slash_command_on(connection_of(bots.b), "/ask", "anyone?", channel_id=CHANNEL)
        refusal = await ack_text(bots.slack, command)

        assert refusal is not None and "The bot is paused by its admins." in refusal, refusal
        assert bots.predictions() == 0


async def test_again_pressed_through_another_process_runs_the_answer_anew(tmp_path: Path, redis_url: str) -> None:
    async with two_bots(tmp_path, redis_url) as bots:
        command = await bots.slack.send_slash_command_on(connection_of(bots.a), "/ask", "again", channel_id=CHANNEL)
        await bots.slack.wait_for_ack(command)
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the answer")
        [parent] = bots.slack.channel_messages(CHANNEL)
        [answer] = bots.slack.thread(CHANNEL, parent.ts)

        await bots.slack.send_interactive(bots.slack.press(answer, "again"), connection=connection_of(bots.b))
        await bots.slack.wait_until(lambda: len(bot_replies(bots.slack, CHANNEL)) == 2
                                    and finished(bots.slack, CHANNEL), WAIT_S, what="the answer again")

        assert bots.predictions() == 2
        assert bot_replies(bots.slack, CHANNEL) == [ANSWER, ANSWER]


# --- Slack's per-workspace edit budget -------------------------------------------------------------------------

STREAM_TOKENS = [f"w{i} " for i in range(100)] + ["end"]  # 30 s of streaming: past what two buckets keep within
ANSWERS_PER_PROCESS = 6
SLIDING_MINUTE_S = 60.0


def most_in_a_minute(times: list[float]) -> int:
    """The most calls that fall in any 60 s (Slack's sliding window, as the fake enforces it)."""
    return max((sum(1 for t in times if start <= t < start + SLIDING_MINUTE_S) for start in times), default=0)


async def test_two_processes_streaming_at_once_share_the_workspaces_edit_budget(
    tmp_path: Path, redis_url: str
) -> None:
    async with two_bots(tmp_path, redis_url, PREDICTION_TIMEOUT="90") as bots:
        bots.replicate.add_model(ASK_MODEL, TextModel(tokens=STREAM_TOKENS, token_interval_s=0.3))
        bots.slack.enforce_tiers()  # Tier 3: 50 chat.update a minute for the workspace
        channels: list[str] = []
        for instance in (bots.a, bots.b):
            for _ in range(ANSWERS_PER_PROCESS):
                channel = f"C0LOAD{len(channels)}"
                channels.append(channel)
                await bots.slack.send_slash_command_on(connection_of(instance), "/ask", "stream", channel_id=channel,
                                                       user_id=f"U0LOAD{len(channels)}")
        expected = "".join(STREAM_TOKENS)

        def all_finished() -> bool:
            return all(bot_replies(bots.slack, channel) == [expected] for channel in channels)

        await bots.slack.wait_until(all_finished, 80.0, what="every streamed answer, whole")

        updates = bots.slack.requests_to("chat.update")
        assert [call for call in updates if call.status == 429] == []
        assert most_in_a_minute([call.at for call in updates]) <= 50
        assert bots.predictions() == len(channels)
        edited = {str(call.params.get("channel")) for call in updates if call.ok}
        # Both processes streamed (edits, not only posts): channels 0.. are a's answers, the rest b's.
        assert edited & set(channels[:ANSWERS_PER_PROCESS]) and edited & set(channels[ANSWERS_PER_PROCESS:])


async def test_the_first_answer_after_a_quiet_spell_still_gets_its_placeholder(tmp_path: Path, redis_url: str) -> None:
    async with two_bots(tmp_path, redis_url) as bots:  # idle since start-up: no edit leased from the store yet
        await bots.slack.send_slash_command_on(connection_of(bots.a), "/ask", "first", channel_id=CHANNEL)
        await bots.slack.wait_until(lambda: finished(bots.slack, CHANNEL), WAIT_S, what="the answer")

        [parent] = bots.slack.channel_messages(CHANNEL)
        [reply] = bots.slack.thread(CHANNEL, parent.ts)
        [posted] = [call for call in bots.slack.requests_to("chat.postMessage") if call.params.get("ts") == reply.ts
                    or call.response.get("ts") == reply.ts]
        assert posted.params["text"] == WORKING_TEXT  # posted as the placeholder, then edited into the answer
        assert reply.text == ANSWER
