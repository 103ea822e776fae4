"""Again and Stop on Slack through real bolt/slack_sdk to a fake Slack (Socket Mode; Again in HTTP mode too), a fake
Replicate and a real SQLite state store: which message shows which button when, what a press does, who may press,
and that a press is taken once, under the presser's limits, and after a restart."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.buttons import EXPIRED_TEXT, STOP_EXPIRED_TEXT, STOP_NOT_YOURS_TEXT
from config.governance import UseLimit, Window
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import FakeSlack, Message, interactive_form, signed_headers, slash_command_form
from tests.harness_common import (
    ANSWER,
    ASK_MODEL,
    IMAGINE_MODEL,
    PNG,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
    default_models,
)
from tests.slack_harness import CHANNEL, CURSOR, SIGNING_SECRET, SlackBot, restartable_bot, slack_bot

ASKER, OTHER, THIRD = "U0USER", "U0OTHER", "U0THIRD"
HUNG = "test/hung"  # streams its tokens, then runs until cancelled
HUNG_TEXT = "Thinking hard"
STOPPED = "⚠️ Stopped."
MODELS = frozenset({ASK_MODEL, IMAGINE_MODEL, HUNG})


def add_hung(replicate: FakeReplicate) -> None:
    replicate.add_model(HUNG, TextModel(tokens=["Thinking", " hard"], hang=True))


@pytest.fixture
async def bot() -> AsyncIterator[SlackBot]:
    async with slack_bot(arrange=add_hung, allowed_models=MODELS) as running:
        yield running


# --- helpers -------------------------------------------------------------------------------------------


def bot_replies(slack: FakeSlack, root: str) -> list[Message]:
    """The bot's text replies in the thread under `root` (not the uploaded files' messages), oldest first."""
    return [m for m in slack.thread(CHANNEL, root) if m.user == slack.bot_user_id and not m.files]


def finished(message: Message) -> bool:
    return CURSOR not in message.text and not message.text.startswith("_⏳")


async def wait_for_answers(slack: FakeSlack, root: str, count: int) -> list[Message]:
    """Until the thread under `root` holds `count` finished replies from the bot, and no draft."""
    def done() -> bool:
        mine = bot_replies(slack, root)
        return len(mine) >= count and all(finished(m) for m in mine)

    await slack.wait_until(done, timeout=WAIT_S, what=f"{count} finished repl(ies) in thread {root}")
    return bot_replies(slack, root)


async def command(slack: FakeSlack, name: str, text: str, user: str = ASKER) -> str:
    """`name text` in CHANNEL by `user`; the ts of the new parent message (the thread's root)."""
    before = len(slack.channel_messages(CHANNEL))
    await slack.send_slash_command(command=name, text=text, user_id=user, channel_id=CHANNEL)
    await slack.wait_until(lambda: len(slack.channel_messages(CHANNEL)) > before, timeout=WAIT_S,
                           what=f"the {name} parent")
    return slack.channel_messages(CHANNEL)[-1].ts


async def ask(slack: FakeSlack, text: str, user: str = ASKER) -> tuple[str, Message]:
    """`/ask text`, answered: the thread's root and the answer."""
    root = await command(slack, "/ask", text, user)
    [answer] = await wait_for_answers(slack, root, 1)
    return root, answer


async def running_answer(slack: FakeSlack) -> tuple[str, Message]:
    """An /ask whose model writes `HUNG_TEXT` and goes on until stopped: the root and the message it is written in."""
    root = await command(slack, "/ask", f"think --model {HUNG}")
    await slack.wait_until(lambda: any(HUNG_TEXT in m.text for m in bot_replies(slack, root)),
                           timeout=WAIT_S, what="the text so far")
    [message] = bot_replies(slack, root)
    return root, message


async def press(slack: FakeSlack, message: Message, action_id: str, user: str = ASKER) -> dict[str, Any]:
    """`user` presses the button `message` shows; returns the payload once the bot has acknowledged it."""
    payload = slack.press(message, action_id, user)
    await slack.wait_for_ack(await slack.send_interactive(payload))
    return payload


async def private_reply(slack: FakeSlack, payload: dict[str, Any]) -> str:
    """The one ephemeral message the press got through its response_url."""
    url = payload["response_url"]
    await slack.wait_until(lambda: bool(slack.response_url_posts(url)), timeout=WAIT_S, what="a private reply")
    [body] = slack.response_url_posts(url)
    assert body.get("response_type") == "ephemeral" and body.get("replace_original") is False
    return str(body["text"])


# --- which message shows which button, when ------------------------------------------------------------


async def test_an_answer_shows_stop_while_it_is_written_and_again_once_it_is_finished(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Hello", ",", " world"], token_interval_s=0.4))

    _root, answer = await ask(bot.slack, "hello?")

    request_id = answer.buttons_history[0]["stop"]
    assert answer.text == ANSWER and answer.buttons == {"again": request_id}
    assert len(answer.buttons_history) >= 3  # the placeholder, at least one draft, the final edit
    assert all(shown == {"stop": request_id} for shown in answer.buttons_history[:-1])
    assert bot.slack.channel_messages(CHANNEL)[0].buttons == {}  # the question itself shows none
    assert len(bot.replicate.creates) == 1


async def test_a_split_answer_shows_again_on_its_last_message_only(bot: SlackBot) -> None:
    paragraph = "word " * 199 + "end.\n\n"
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[paragraph] * 9))  # about 9,000 characters

    root = await command(bot.slack, "/ask", "a long one")
    await bot.slack.wait_until(lambda: len(bot_replies(bot.slack, root)) >= 3 and
                               all(finished(m) for m in bot_replies(bot.slack, root)), timeout=WAIT_S,
                               what="the whole answer")

    replies = bot_replies(bot.slack, root)
    assert [m.buttons for m in replies[:-1]] == [{}] * (len(replies) - 1)
    assert list(replies[-1].buttons) == ["again"]
    assert all("stop" not in m.buttons for m in replies)


async def test_an_image_shows_stop_while_it_runs_and_again_on_its_caption(bot: SlackBot) -> None:
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")], run_s=0.3))

    root = await command(bot.slack, "/imagine", "a lighthouse --seed 7")
    await bot.slack.wait_until(lambda: any("seed:* 7" in m.text for m in bot_replies(bot.slack, root)),
                               timeout=WAIT_S, what="the caption")

    [caption] = bot_replies(bot.slack, root)
    request_id = caption.buttons_history[0]["stop"]
    assert caption.buttons == {"again": request_id}
    assert all(shown == {"stop": request_id} for shown in caption.buttons_history[:-1])
    [upload] = bot.slack.uploads.values()
    assert upload.thread_ts == root
    # The buttons cost no call of their own: one post (the status message, later the caption) and the upload's.
    assert len([c for c in bot.slack.requests_to("chat.postMessage") if c.params.get("thread_ts")]) == 1


# --- Again ---------------------------------------------------------------------------------------------


async def test_again_answers_the_same_question_anew_as_a_new_reply_in_its_thread(bot: SlackBot) -> None:
    root, answer = await ask(bot.slack, "what is a haiku?")
    bot.replicate.hold("create")  # Replicate sits on the new prediction: the press is acknowledged regardless

    await press(bot.slack, answer, "again", user=OTHER)
    await bot.replicate.wait_until(lambda: len(bot.replicate.creates) == 2, timeout=WAIT_S, what="the new create")
    bot.replicate.release_held()

    first, second = await wait_for_answers(bot.slack, root, 2)
    assert second.text == ANSWER and list(second.buttons) == ["again"]
    assert second.buttons["again"] != first.buttons["again"]  # its own command, with its own Again
    assert [c.input["prompt"] for c in bot.replicate.creates] == ["what is a haiku?"] * 2
    assert bot.slack.responses == []  # nothing private: the answer is in the thread


async def test_again_on_an_image_makes_a_new_one_with_the_same_prompt_and_a_new_seed_in_its_thread(
    bot: SlackBot,
) -> None:
    root = await command(bot.slack, "/imagine", "a lighthouse --ar 16:9 --seed 7")
    [caption] = await wait_for_answers(bot.slack, root, 1)
    await bot.slack.wait_until(lambda: "again" in caption.buttons, timeout=WAIT_S, what="the caption's Again")

    await press(bot.slack, caption, "again")

    _first, second = await wait_for_answers(bot.slack, root, 2)
    await bot.slack.wait_until(lambda: len([u for u in bot.slack.uploads.values() if u.completed]) == 2,
                               timeout=WAIT_S, what="the second upload")
    assert {u.thread_ts for u in bot.slack.uploads.values()} == {root}
    assert list(second.buttons) == ["again"]
    inputs = [c.input for c in bot.replicate.creates]
    assert [i["prompt"] for i in inputs] == ["a lighthouse"] * 2 and [i["aspect_ratio"] for i in inputs] == ["16:9"] * 2
    assert inputs[0]["seed"] == 7 and inputs[1]["seed"] != 7
    # The caption names the new seed (a whole number: "seed:* 7" would also match a new seed such as 784051529).
    assert re.findall(r"\*seed:\* (\d+)", second.text) == [str(inputs[1]["seed"])]


async def test_again_on_a_conversation_turn_answers_that_turn_anew_with_its_context(bot: SlackBot) -> None:
    root, _ = await ask(bot.slack, "My name is Ada")
    await bot.slack.send_event(bot.slack.message_event("And my name?", user_id=ASKER, thread_ts=root))
    _, turn = await wait_for_answers(bot.slack, root, 2)

    await press(bot.slack, turn, "again")

    await wait_for_answers(bot.slack, root, 3)
    again = str(bot.replicate.creates[2].input["prompt"])
    assert str(bot.replicate.creates[1].input["prompt"]) == again
    assert again.index("My name is Ada") < again.index("And my name?")


async def test_a_double_press_of_again_runs_it_once(bot: SlackBot) -> None:
    root, answer = await ask(bot.slack, "once more")
    other_root, other_answer = await ask(bot.slack, "a later question")

    for _ in range(2):  # two presses: two interactions, each with its own trigger
        await bot.slack.wait_for_ack(await bot.slack.send_interactive(bot.slack.press(answer, "again", OTHER)))
    await press(bot.slack, other_answer, "again", THIRD)  # pressed after both, and answered after them
    await wait_for_answers(bot.slack, other_root, 2)

    await wait_for_answers(bot.slack, root, 2)
    assert len(bot.replicate.creates) == 4 and len(bot_replies(bot.slack, root)) == 2


async def test_again_counts_against_the_pressers_own_limits_and_is_refused_privately() -> None:
    async with slack_bot(limits={"ask": UseLimit(1, Window.DAY)}) as bot:
        _, answer = await ask(bot.slack, "the asker's question")
        await ask(bot.slack, "the other's own question", user=OTHER)  # OTHER's one /ask of the day

        payload = await press(bot.slack, answer, "again", OTHER)

        refusal = await private_reply(bot.slack, payload)
        assert refusal.startswith("You've used your 1 /ask command for today.")
        assert len(bot.replicate.creates) == 2


async def test_http_mode_again_runs_anew_in_its_thread() -> None:
    async with slack_bot(http_mode=True) as bot:
        url = f"http://127.0.0.1:{bot.service.http_port}/slack/events"
        async with aiohttp.ClientSession() as session:
            form = slash_command_form(command="/ask", text="over http", user_id=ASKER,
                                      response_url=bot.slack.new_response_url())
            async with session.post(url, data=form, headers=signed_headers(SIGNING_SECRET, form)) as response:
                assert response.status == 200
            await bot.slack.wait_until(lambda: bool(bot.parents()), timeout=WAIT_S, what="the /ask parent")
            root = bot.parents()[0].ts
            [answer] = await wait_for_answers(bot.slack, root, 1)
            await bot.slack.wait_until(lambda: "again" in answer.buttons, timeout=WAIT_S, what="Again")

            body = interactive_form(bot.slack.press(answer, "again", OTHER))
            async with session.post(url, data=body, headers=signed_headers(SIGNING_SECRET, body)) as response:
                assert response.status == 200

        _, second = await wait_for_answers(bot.slack, root, 2)
        assert second.text == ANSWER and list(second.buttons) == ["again"]
        assert [c.input["prompt"] for c in bot.replicate.creates] == ["over http"] * 2


# --- Stop ----------------------------------------------------------------------------------------------


async def test_stop_by_the_asker_cancels_on_replicate_and_keeps_the_text_so_far(bot: SlackBot) -> None:
    _root, message = await running_answer(bot.slack)
    assert list(message.buttons) == ["stop"]

    await press(bot.slack, message, "stop")

    await bot.slack.wait_until(lambda: message.text.endswith(STOPPED), timeout=WAIT_S, what="the stopped answer")
    assert message.text == f"{HUNG_TEXT}\n\n{STOPPED}" and message.buttons == {}
    [prediction] = bot.replicate.creates
    await bot.replicate.wait_until(lambda: prediction.canceled, timeout=WAIT_S, what="the cancel on Replicate")
    assert bot.slack.responses == []


async def test_stop_by_someone_else_is_refused_privately_and_the_answer_goes_on(bot: SlackBot) -> None:
    _root, message = await running_answer(bot.slack)

    payload = await press(bot.slack, message, "stop", user=OTHER)

    assert await private_reply(bot.slack, payload) == STOP_NOT_YOURS_TEXT
    [prediction] = bot.replicate.creates
    assert not prediction.canceled and list(message.buttons) == ["stop"]
    await press(bot.slack, message, "stop")  # the asker may
    await bot.slack.wait_until(lambda: message.text.endswith(STOPPED), timeout=WAIT_S, what="the stopped answer")


async def test_a_redelivered_press_is_taken_once(bot: SlackBot) -> None:
    _root, message = await running_answer(bot.slack)
    payload = bot.slack.press(message, "stop", OTHER)

    for _ in range(2):  # the same interaction twice, as Slack redelivers an envelope it thinks unacknowledged
        await bot.slack.wait_for_ack(await bot.slack.send_interactive(payload))
    await press(bot.slack, message, "stop")  # taken after both deliveries
    await bot.slack.wait_until(lambda: message.text.endswith(STOPPED), timeout=WAIT_S, what="the stopped answer")

    assert await private_reply(bot.slack, payload) == STOP_NOT_YOURS_TEXT  # once, not twice


# --- a restart ------------------------------------------------------------------------------------------


async def test_after_a_restart_again_still_runs_and_stop_says_it_is_no_longer_running(tmp_path: Path) -> None:
    state_url = f"sqlite:///{tmp_path}/bot.db"
    async with FakeReplicate(api_token=REPLICATE_TOKEN) as replicate, \
            FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN) as slack:
        default_models(replicate)
        add_hung(replicate)
        async with restartable_bot(slack, replicate, state_url, allowed_models=MODELS):
            root, answer = await ask(slack, "before the restart")
            _, running = await running_answer(slack)
            stale_stop = slack.press(running, "stop")  # pressed only once the bot has restarted

        async with restartable_bot(slack, replicate, state_url, allowed_models=MODELS):
            await press(slack, answer, "again", OTHER)
            await wait_for_answers(slack, root, 2)
            await slack.wait_for_ack(await slack.send_interactive(stale_stop))
            assert await private_reply(slack, stale_stop) == STOP_EXPIRED_TEXT

        prompts = [c.input["prompt"] for c in replicate.creates]
        assert prompts == ["before the restart", "think", "before the restart"]


async def test_again_on_a_command_the_bot_no_longer_knows_says_it_expired(bot: SlackBot) -> None:
    _root, answer = await ask(bot.slack, "old")
    payload = bot.slack.press(answer, "again")
    payload["actions"][0]["value"] = "0" * 32  # a command kept past RETENTION_DAYS is gone from the store

    await bot.slack.wait_for_ack(await bot.slack.send_interactive(payload))

    assert await private_reply(bot.slack, payload) == EXPIRED_TEXT
    assert len(bot.replicate.creates) == 1


# --- the app's manifests ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest.yml", "manifest-http.yml"])
def test_both_manifests_enable_interactivity(name: str) -> None:
    lines = (Path(__file__).resolve().parent.parent / "slack" / name).read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip() == "interactivity:")
    settings = {line.split("#")[0].strip() for line in lines[start + 1:start + 3]}
    assert "is_enabled: true" in settings
    if name == "manifest-http.yml":
        assert "request_url: https://YOUR-HOST/slack/events" in settings
