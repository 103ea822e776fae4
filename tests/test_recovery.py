"""Nothing lost when a process dies: `kill -9` of the process running a prediction, then a survivor (another process
on the same Redis, or the same process started again on its SQLite file) follows it and delivers the answer where
it belongs, once; an answer that can go nowhere is cancelled on Replicate; a Stop pressed on another process than
the one streaming the answer still stops it.

Real processes (`python -m bot`) against the fakes; HEARTBEAT_TIMEOUT is shortened so a death shows in a second.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from tests.bot_harness import started_fakes
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack, Message
from tests.harness_common import CHANNEL
from tests.process_harness import BROKEN_MODEL, HUNG_MODEL, BotProcess, add_process_models, launch_bot

WAIT_S = 30.0  # a survivor's start, the death noticed, the prediction's end: generous on a busy machine
SLOW_MODEL = "test/slow"
TOKENS = [f"word{n} " for n in range(16)]
ANSWER = "".join(TOKENS)
SETTINGS = {"ALLOWED_MODELS": f"{HUNG_MODEL},{BROKEN_MODEL},{SLOW_MODEL}", "HEARTBEAT_TIMEOUT": "1"}


def add_models(replicate: FakeReplicate) -> None:
    add_process_models(replicate)
    # Long enough (6.4 s) for a kill to land mid-prediction and a survivor to take it up while it runs.
    replicate.add_model(SLOW_MODEL, TextModel(tokens=TOKENS, token_interval_s=0.4))


def directory(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


def answer_message(slack: FakeSlack, channel: str) -> Message:
    """The one reply in the command's thread (where the answer is written)."""
    [parent] = slack.channel_messages(channel)
    [reply] = slack.thread(channel, parent.ts)
    return reply


def thread_texts(slack: FakeSlack, channel: str) -> list[str]:
    return [reply.text for parent in slack.channel_messages(channel) for reply in slack.thread(channel, parent.ts)]


async def ask_slowly_on_slack(replicate: FakeReplicate, slack: FakeSlack, channel: str, *,
                              model: str = SLOW_MODEL, written: str = "word1") -> None:
    """An /ask of a slow model, acknowledged and partly written (so the kill lands mid-prediction)."""
    envelope = await slack.send_slash_command(command="/ask", text=f"count --model {model}", channel_id=channel)
    await slack.wait_for_ack(envelope)
    await slack.wait_until(lambda: any(written in text for text in thread_texts(slack, channel)), WAIT_S,
                           what="the answer partly written")
    assert replicate.running() != []


def took_up(bot: BotProcess) -> bool:
    return any("Taking up command" in line for line in bot.lines)


@asynccontextmanager
async def killed_and_restarted(
    tmp_path: Path, replicate: FakeReplicate, slack: FakeSlack, discord: FakeDiscord,
    until: Callable[[], Awaitable[None]], *, meanwhile: Callable[[], None] = lambda: None,
) -> AsyncIterator[BotProcess]:
    """The bot on its SQLite file in `tmp_path`: `until()` while it runs, then `kill -9`, `meanwhile()`, and the
    process started again on the same file (yielded; killed after)."""
    first, _ = await launch_bot(tmp_path, replicate, slack, discord, **SETTINGS)
    try:
        await until()
    finally:
        await first.kill()
    meanwhile()
    second, _ = await launch_bot(tmp_path, replicate, slack, discord, **SETTINGS)
    try:
        yield second
    finally:
        await second.kill()


async def test_kill_9_mid_answer_on_slack_then_one_of_two_survivors_on_redis_delivers_it_once(
    tmp_path: Path, redis_url: str
) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)
        settings = {**SETTINGS, "STATE_URL": redis_url}
        survivors = [(await launch_bot(directory(tmp_path, name), replicate, slack, discord, **settings))[0]
                     for name in ("b", "c")]
        doomed, _ = await launch_bot(directory(tmp_path, "a"), replicate, slack, discord, **settings)
        try:
            # Slack hands it to the newest socket: a's. Killed once the answer's message has had an edit, so its
            # id has surely reached the journal (a kill between a message's post and that write leaves it behind,
            # and the survivor writes a message of its own: service/recovery.py).
            await ask_slowly_on_slack(replicate, slack, "C0KILL", written="word4")
            await doomed.kill()

            await slack.wait_until(lambda: answer_message(slack, "C0KILL").text == ANSWER, WAIT_S,
                                   what="the survivor's final answer")
            reply = answer_message(slack, "C0KILL")
            assert list(reply.buttons) == ["again"]  # Stop gone, Again there: settled as a live answer is
            assert len(replicate.creates) == 1 and replicate.cancels == []  # followed, never created again
            assert [took_up(bot) for bot in survivors].count(True) == 1  # two survivors raced; one took it
            await survivors[0].wait_until(lambda: any(bot.command_records() for bot in survivors),
                                          "the survivor's command log line")
            assert thread_texts(slack, "C0KILL") == [ANSWER]  # one reply, in the same thread
        finally:
            for bot in (doomed, *survivors):
                await bot.kill()


async def test_kill_9_mid_answer_on_slack_then_a_restart_on_the_same_sqlite_file_delivers_it(tmp_path: Path) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)
        async with killed_and_restarted(tmp_path, replicate, slack, discord,
                                        lambda: ask_slowly_on_slack(replicate, slack, "C0RESTART")):
            await slack.wait_until(lambda: answer_message(slack, "C0RESTART").text == ANSWER, WAIT_S,
                                   what="the restarted process's final answer")
            assert list(answer_message(slack, "C0RESTART").buttons) == ["again"]
            assert len(replicate.creates) == 1 and replicate.cancels == []


async def test_kill_9_mid_answer_on_discord_then_a_restart_edits_the_interactions_response(tmp_path: Path) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)
        sent: list[SentInteraction] = []

        async def ask_slowly_on_discord() -> None:
            sent.append(await discord.send_interaction("ask", {"prompt": "count", "model": SLOW_MODEL},
                                                       channel_id=CHANNEL))
            await discord.wait_until(lambda: "word1" in original_text(discord, sent[0].token), WAIT_S,
                                     what="the answer partly written")

        async with killed_and_restarted(tmp_path, replicate, slack, discord, ask_slowly_on_discord):
            token = sent[0].token
            await discord.wait_until(lambda: original_text(discord, token).startswith(ANSWER.strip()), WAIT_S,
                                     what="the restarted process's final answer")
            original = discord.original_message(token)
            assert original is not None and "again:" in str(original.components)
            assert len(replicate.creates) == 1 and replicate.cancels == []

            # The resumed answer is linked to its conversation: a reply to it is the conversation's next turn.
            discord.send_message(f"<@{discord.bot_user_id}> and after that?", reply_to=original.id,
                                 channel_id=int(CHANNEL))
            await replicate.wait_until(lambda: len(replicate.creates) == 2, WAIT_S, what="the next turn's create")
            next_prompt = str(replicate.creates[1].input.get("prompt", ""))
            assert "count" in next_prompt and ANSWER.strip() in next_prompt and "and after that?" in next_prompt


def original_text(discord: FakeDiscord, token: str) -> str:
    original = discord.original_message(token)
    return original.content if original is not None else ""


async def test_a_kill_before_the_create_was_answered_or_the_thread_opened_is_still_delivered_by_the_restart(
    tmp_path: Path,
) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)

        async def ask_unheard() -> None:
            replicate.hold("create")  # Replicate makes the prediction; the bot never hears its id
            slack.fail("chat.postMessage", status=500, times=3)  # nor could it open the thread (tried 3 times)
            envelope = await slack.send_slash_command(command="/ask", text=f"count --model {SLOW_MODEL}",
                                                      channel_id="C0CUT")
            await slack.wait_for_ack(envelope)
            await replicate.wait_until(lambda: len(replicate.creates) == 1, WAIT_S, what="the create")
            await slack.wait_until(lambda: len(slack.requests_to("chat.postMessage")) >= 3, WAIT_S,
                                   what="the thread's three failed posts")

        async with killed_and_restarted(tmp_path, replicate, slack, discord, ask_unheard):
            # The restart finds the prediction the cut-off create made, opens the thread and answers in it.
            await slack.wait_until(lambda: ANSWER in thread_texts(slack, "C0CUT"), WAIT_S,
                                   what="the restarted process's answer")
            [parent] = slack.channel_messages("C0CUT")
            assert "count" in parent.text and thread_texts(slack, "C0CUT") == [ANSWER]
            assert len(replicate.creates) == 1 and replicate.cancels == []  # followed, neither made again nor lost


async def test_an_answer_whose_channel_is_gone_is_cancelled_on_replicate_by_the_restarted_process(
    tmp_path: Path,
) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)
        # A model that never ends: whatever the restart takes, the prediction is still running after it.
        hung = functools.partial(ask_slowly_on_slack, replicate, slack, "C0GONE", model=HUNG_MODEL, written="Thinking")
        async with killed_and_restarted(tmp_path, replicate, slack, discord, hung,
                                        meanwhile=lambda: slack.set_missing("C0GONE")) as second:
            [prediction] = replicate.creates
            await replicate.wait_until(lambda: replicate.cancels == [prediction.id], WAIT_S,
                                       what="the undeliverable prediction cancelled")
            assert prediction.canceled and took_up(second)
        assert replicate.fake_errors == [], replicate.fake_errors


async def test_stop_pressed_on_another_process_cancels_the_prediction_and_the_streaming_one_shows_it_stopped(
    tmp_path: Path, redis_url: str
) -> None:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_models(replicate)
        settings = {**SETTINGS, "STATE_URL": redis_url}
        streaming, _ = await launch_bot(directory(tmp_path, "a"), replicate, slack, discord, **settings)
        other: BotProcess | None = None
        try:
            await ask_slowly_on_slack(replicate, slack, "C0STOP")
            other, _ = await launch_bot(directory(tmp_path, "b"), replicate, slack, discord, **settings)
            # Slack hands the press to the newest socket: the other process's, which runs nothing.
            press = slack.press(answer_message(slack, "C0STOP"), "stop")
            await slack.send_interactive(press)

            [prediction] = replicate.creates
            await replicate.wait_until(lambda: prediction.canceled, WAIT_S, what="the prediction cancelled")
            await slack.wait_until(lambda: "Stopped." in answer_message(slack, "C0STOP").text, WAIT_S,
                                   what="the answer marked stopped")
            final = answer_message(slack, "C0STOP")
            assert final.text.startswith("word0 word1") and final.text.endswith("\n\n⚠️ Stopped.")  # as a local Stop
            assert "stop" not in final.buttons
            assert any("Stopped command" in line for line in other.lines)  # the press was taken there
        finally:
            await streaming.kill()
            if other is not None:
                await other.kill()
