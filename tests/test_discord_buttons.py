"""Again and Stop on Discord, over the wire: the real discord.py against the fake gateway and REST.

Presses arrive as MESSAGE_COMPONENT interactions (type 3) built from the message as the fake holds it; every
assertion reads what the fakes received: the components on each send and edit, the callbacks, the predictions
created and cancelled on Replicate.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

from adapters.discord_buttons import AnswerButtons
from adapters.rendering import CURSOR
from bot.buttons import EXPIRED_TEXT, STOP_EXPIRED_TEXT, STOP_NOT_YOURS_TEXT
from config.governance import UseLimit, Window
from tests.discord_harness import NO_MENTIONS, USER, DiscordBot, discord_bot, fakes, running_bot
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import ImageModel, TextModel
from tests.harness_common import APPLICATION_ID, ASK_MODEL, IMAGINE_MODEL, PNG, WAIT_S

OTHER_USER = 555
MANAGE_GUILD = 1 << 5  # discord.com/developers/docs/topics/permissions#permissions-bitwise-permission-flags
AGAIN_ID = re.compile(r"again:[0-9a-f]{32}")
STOP_ID = re.compile(r"stop:[0-9a-f]{32}")


@pytest.fixture
async def bot(caplog: pytest.LogCaptureFixture) -> AsyncIterator[DiscordBot]:
    async with discord_bot() as running:
        yield running
    assert_no_errors(caplog)


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    records = [r for phase in ("setup", "call", "teardown") for r in caplog.get_records(phase)]
    assert [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR] == []


def buttons(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [button for row in components for button in row.get("components") or []]


def button_ids(message: StoredMessage) -> list[str]:
    return [str(button["custom_id"]) for button in buttons(message.components)]


def shows(message: StoredMessage, pattern: re.Pattern[str]) -> bool:
    return any(pattern.fullmatch(custom_id) for custom_id in button_ids(message))


def sent_components(message: StoredMessage) -> list[list[str]]:
    """The custom ids each create/edit of the message set (an op that left the components alone is skipped)."""
    return [[str(b["custom_id"]) for b in buttons(op.payload["components"])]
            for op in message.history if "components" in op.payload]


def final(message: StoredMessage) -> bool:
    return not message.loading and bool(message.content or message.attachments) \
        and not message.content.startswith("⏳") and not message.content.endswith(CURSOR)


async def press(bot: DiscordBot, message: StoredMessage, pattern: re.Pattern[str], *, user_id: int = USER,
                member_permissions: int = 0) -> SentInteraction:
    [custom_id] = [custom_id for custom_id in button_ids(message) if pattern.fullmatch(custom_id)]
    return bot.discord.press_button(message, custom_id, user_id=user_id, member_permissions=member_permissions)


async def acknowledged(bot: DiscordBot, sent: SentInteraction) -> None:
    await bot.until(lambda: bool(bot.callbacks(sent)), "the press's acknowledgement")
    assert [c.type for c in bot.callbacks(sent)] == [6]  # a deferred update: nothing changes on screen


async def told_privately(bot: DiscordBot, sent: SentInteraction) -> StoredMessage:
    await bot.until(lambda: bool(bot.discord.followups(sent.token)), "the private answer to the press")
    [told] = bot.discord.followups(sent.token)
    assert told.ephemeral and told.allowed_mentions == NO_MENTIONS
    return told


def replies(discord: FakeDiscord, message: StoredMessage) -> list[StoredMessage]:
    return discord.replies_to(message.id)


async def again_answer(bot: DiscordBot, pressed: StoredMessage) -> StoredMessage:
    """Until the reply to the pressed message is final, with its Again; the one reply."""
    await bot.until(lambda: [final(m) and shows(m, AGAIN_ID) for m in replies(bot.discord, pressed)] == [True],
                    "the Again answer")
    [answer] = replies(bot.discord, pressed)
    return answer


async def running_answer(bot: DiscordBot, prompt: str = "go on forever") -> tuple[SentInteraction, StoredMessage]:
    """An /ask whose model streams "Partial" and then runs until cancelled, once its answer shows Stop."""
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Partial"], hang=True))
    sent = await bot.interact("ask", {"prompt": prompt})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and "Partial" in bot.original(sent).content and shows(bot.original(sent), STOP_ID), "Stop")
    return sent, bot.original(sent)


# --- the buttons on answers --------------------------------------------------------------------------------------


async def test_an_answer_shows_stop_from_its_first_edit_and_again_instead_at_the_end(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["One", " two", " three"], token_interval_s=0.3))
    sent = await bot.interact("ask", {"prompt": "count"})
    answer = await bot.answered(sent)
    await bot.until(lambda: shows(bot.original(sent), AGAIN_ID), "Again")

    first_edit, *_, last_edit = sent_components(answer)
    assert len(first_edit) == 1 and STOP_ID.fullmatch(first_edit[0])
    assert len(last_edit) == 1 and AGAIN_ID.fullmatch(last_edit[0])
    assert button_ids(answer) == last_edit
    [again_button] = buttons(answer.components)
    [stop_button] = [b for op in answer.history for b in buttons(op.payload.get("components") or [])
                     if STOP_ID.fullmatch(b["custom_id"])][:1]
    assert (again_button["label"], stop_button["label"], stop_button["style"]) == ("Again", "Stop", 4)  # 4: danger
    assert all(op.payload.get("allowed_mentions") == NO_MENTIONS for op in answer.history if op.kind == "edit")


async def test_a_split_answer_carries_again_on_its_last_message_only(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["a" * 1500, " b" * 600, " c" * 300], token_interval_s=0.3))
    sent = await bot.interact("ask", {"prompt": "a long one"})
    await bot.answered(sent)
    await bot.until(lambda: len(bot.visible(sent)) == 2 and all(final(m) for m in bot.visible(sent))
                    and shows(bot.visible(sent)[-1], AGAIN_ID), "the split answer with Again")

    original, continuation = bot.visible(sent)
    assert button_ids(original) == [] and len(button_ids(continuation)) == 1
    assert any(STOP_ID.fullmatch(i) for ids in sent_components(original) for i in ids)  # it had Stop meanwhile


async def test_imagine_shows_stop_while_running_and_again_on_the_images(bot: DiscordBot) -> None:
    bot.replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")], run_s=1.5))
    sent = await bot.interact("imagine", {"prompt": "a red fox"})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and shows(bot.original(sent), STOP_ID), "Stop while the picture is made")
    await bot.until(lambda: bool(bot.original(sent).attachments) and shows(bot.original(sent), AGAIN_ID), "Again")

    assert len(button_ids(bot.original(sent))) == 1


async def test_a_conversation_turn_shows_stop_while_running_and_again_at_the_end(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["One", " two", " three"], token_interval_s=0.3))
    message = bot.discord.send_message(f"<@{APPLICATION_ID}> count")
    await bot.until(lambda: [final(m) and shows(m, AGAIN_ID) for m in bot.discord.replies_to(int(message["id"]))]
                    == [True], "the answer with Again")

    [answer] = bot.discord.replies_to(int(message["id"]))
    first_send, *_, last_edit = sent_components(answer)
    assert len(first_send) == 1 and STOP_ID.fullmatch(first_send[0])
    assert button_ids(answer) == last_edit and len(last_edit) == 1


# --- Stop ---------------------------------------------------------------------------------------------------


async def test_stop_by_the_asker_cancels_on_replicate_and_keeps_the_text_so_far(bot: DiscordBot) -> None:
    sent, answer = await running_answer(bot)

    pressed = await press(bot, answer, STOP_ID)
    await acknowledged(bot, pressed)
    await bot.until(lambda: bool(bot.replicate.cancels), "the cancel on Replicate")
    await bot.until(lambda: bot.original(sent).content.endswith("Stopped."), "the stopped answer")

    stopped = bot.original(sent)
    assert bot.replicate.cancels == [bot.replicate.creates[0].id]
    assert stopped.content.startswith("Partial") and CURSOR not in stopped.content
    assert button_ids(stopped) == []  # the final edit took Stop away (and a stopped answer has no Again)
    assert bot.discord.followups(sent.token) == [] and bot.discord.followups(pressed.token) == []


async def test_stop_on_a_conversation_answer_keeps_its_text_and_says_it_stopped(bot: DiscordBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Partial"], hang=True))
    message = bot.discord.send_message(f"<@{APPLICATION_ID}> go on forever")

    def answers() -> list[StoredMessage]:
        return bot.discord.replies_to(int(message["id"]))

    await bot.until(lambda: len(answers()) == 1 and "Partial" in answers()[0].content and shows(answers()[0], STOP_ID),
                    "Stop on the answer")

    await press(bot, answers()[0], STOP_ID)
    await bot.until(lambda: answers()[0].content.endswith("Stopped."), "the stopped answer")

    [stopped] = answers()
    assert bot.replicate.cancels == [bot.replicate.creates[0].id] and button_ids(stopped) == []
    assert stopped.content.startswith("Partial") and "⚠️" not in stopped.content and "incomplete" not in stopped.content


async def test_stop_by_another_member_is_refused_privately(bot: DiscordBot) -> None:
    sent, answer = await running_answer(bot)

    pressed = await press(bot, answer, STOP_ID, user_id=OTHER_USER)
    await acknowledged(bot, pressed)
    told = await told_privately(bot, pressed)

    assert told.content == STOP_NOT_YOURS_TEXT
    assert bot.replicate.cancels == [] and shows(bot.original(sent), STOP_ID)
    await press(bot, bot.original(sent), STOP_ID)  # the asker may: the test ends with nothing running
    await bot.until(lambda: bot.original(sent).content.endswith("Stopped."), "the stopped answer")


async def test_a_member_who_manages_the_server_may_stop_anyone_s_answer(bot: DiscordBot) -> None:
    sent, answer = await running_answer(bot)

    pressed = await press(bot, answer, STOP_ID, user_id=OTHER_USER, member_permissions=MANAGE_GUILD)
    await bot.until(lambda: bot.original(sent).content.endswith("Stopped."), "the stopped answer")

    assert bot.replicate.cancels == [bot.replicate.creates[0].id]
    assert bot.discord.followups(pressed.token) == []


# --- Again --------------------------------------------------------------------------------------------------


async def test_again_answers_anew_in_a_reply_to_the_pressed_answer(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "say hello"})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and final(bot.original(sent)) and shows(bot.original(sent), AGAIN_ID), "the first answer")
    first = bot.original(sent)
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Second", " answer"], token_interval_s=0.3))

    pressed = await press(bot, first, AGAIN_ID, user_id=OTHER_USER)
    await acknowledged(bot, pressed)
    answer = await again_answer(bot, first)

    assert [p.input["prompt"] for p in bot.replicate.creates][-1] == bot.replicate.creates[0].input["prompt"]
    assert len(bot.replicate.creates) == 2
    assert answer.content == "Second answer"
    assert answer.message_reference is not None and str(answer.message_reference["message_id"]) == str(first.id)
    assert not answer.pings, [op.payload.get("allowed_mentions") for op in answer.history]
    assert all(op.payload["allowed_mentions"]["parse"] == [] for op in answer.history)
    assert any(STOP_ID.fullmatch(i) for ids in sent_components(answer) for i in ids[:1])  # Stop while it ran
    assert button_ids(answer) != button_ids(first)  # its own Again: the new request's
    conversation = await bot.service.core.find_conversation(f"discord:msg:{first.id}")
    async with asyncio.timeout(WAIT_S):  # linked right after the final edit; the store tells no one
        while await bot.service.core.find_conversation(f"discord:msg:{answer.id}") is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    assert conversation is not None
    assert await bot.service.core.find_conversation(f"discord:msg:{answer.id}") == conversation


async def test_again_on_imagine_makes_a_new_picture_with_a_new_seed(bot: DiscordBot) -> None:
    sent = await bot.interact("imagine", {"prompt": "a red fox", "seed": 42})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and shows(bot.original(sent), AGAIN_ID), "the picture with Again")

    await press(bot, bot.original(sent), AGAIN_ID)
    answer = await again_answer(bot, bot.original(sent))

    first_run, second_run = bot.replicate.creates
    assert (first_run.input["prompt"], first_run.input["seed"]) == ("a red fox", 42)
    assert second_run.input["prompt"] == "a red fox" and second_run.input["seed"] != 42
    assert [a.data for a in answer.attachments] == [PNG]
    assert f"**seed:** {second_run.input['seed']}" in answer.content


async def test_a_double_press_runs_once(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "say hello"})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and shows(bot.original(sent), AGAIN_ID), "the first answer")
    first = bot.original(sent)

    presses = [await press(bot, first, AGAIN_ID), await press(bot, first, AGAIN_ID)]
    for pressed in presses:
        await acknowledged(bot, pressed)
    await again_answer(bot, first)

    assert len(bot.replicate.creates) == 2
    assert all(bot.discord.followups(pressed.token) == [] for pressed in presses)  # dropped silently


async def test_a_redelivered_press_is_taken_once(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "say hello"})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and shows(bot.original(sent), AGAIN_ID), "the first answer")
    first = bot.original(sent)

    pressed = await press(bot, first, AGAIN_ID)
    bot.discord.dispatch("INTERACTION_CREATE", pressed.payload)  # the same interaction (same id) again
    await again_answer(bot, first)
    later = await bot.interact("ask", {"prompt": "a later command"})  # handled after the repeat
    await bot.answered(later)

    assert len([r for r in bot.discord.requests if r.path.startswith(f"/interactions/{pressed.id}/")]) == 1
    assert len(bot.replicate.creates) == 3


async def test_again_counts_against_the_limits_of_whoever_presses_it(caplog: pytest.LogCaptureFixture) -> None:
    async with discord_bot(limits={"ask": UseLimit(1, Window.DAY)}) as bot:
        sent = await bot.interact("ask", {"prompt": "say hello"})  # the asker's one /ask today
        await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                        and shows(bot.original(sent), AGAIN_ID), "the first answer")
        first = bot.original(sent)

        await press(bot, first, AGAIN_ID, user_id=OTHER_USER)  # the presser's first: it runs
        second = await again_answer(bot, first)
        refused = await press(bot, second, AGAIN_ID, user_id=OTHER_USER)  # the presser's second: over the limit
        told = await told_privately(bot, refused)

        assert len(bot.replicate.creates) == 2
        assert "used your 1 /ask" in told.content and replies(bot.discord, second) == []
    assert_no_errors(caplog)


# --- after a restart ---------------------------------------------------------------------------------------


async def test_buttons_pressed_after_a_restart_again_runs_and_stop_says_it_is_over(
    caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    state_url = f"sqlite:///{tmp_path}/bot.db"
    async with fakes() as (discord_fake, replicate):
        async with running_bot(discord_fake, replicate, state_url=state_url):
            done = await discord_fake.send_interaction("ask", {"prompt": "say hello"})
            await discord_fake.wait_until(lambda: (m := discord_fake.original_message(done.token)) is not None
                                          and shows(m, AGAIN_ID), WAIT_S, what="the first answer")
            replicate.add_model(ASK_MODEL, TextModel(tokens=["Partial"], hang=True))
            running = await discord_fake.send_interaction("ask", {"prompt": "go on forever"})
            await discord_fake.wait_until(lambda: (m := discord_fake.original_message(running.token)) is not None
                                          and shows(m, STOP_ID), WAIT_S, what="Stop")
            # What a user's client may still show when the bot goes away mid-answer.
            with_stop = copy.deepcopy(discord_fake.original_message(running.token))
            assert with_stop is not None
            # Stopped before the restart: the harness shuts a bot down with nothing in flight.
            discord_fake.press_button(with_stop, next(i for i in button_ids(with_stop) if STOP_ID.fullmatch(i)))
            await discord_fake.wait_until(
                lambda: replicate.cancels != [] and discord_fake.original_message(running.token) is not None
                and str(getattr(discord_fake.original_message(running.token), "content", "")).endswith("Stopped."),
                WAIT_S, what="the stopped answer")
        replicate.add_model(ASK_MODEL, TextModel(tokens=["After", " the", " restart"]))

        async with running_bot(discord_fake, replicate, state_url=state_url) as service:
            bot = DiscordBot(discord_fake, replicate, service, service._settings)
            first = discord_fake.original_message(done.token)
            assert first is not None
            await press(bot, first, AGAIN_ID)
            answer = await again_answer(bot, first)
            stop = await press(bot, with_stop, STOP_ID)
            told = await told_privately(bot, stop)

        assert answer.content == "After the restart"
        assert [p.input["prompt"] for p in replicate.creates][-1] == "say hello"
        assert told.content == STOP_EXPIRED_TEXT
    assert_no_errors(caplog)


async def test_an_again_whose_command_the_bot_no_longer_knows_says_it_expired(bot: DiscordBot) -> None:
    sent = await bot.interact("ask", {"prompt": "say hello"})
    await bot.until(lambda: bot.discord.original_message(sent.token) is not None
                    and shows(bot.original(sent), AGAIN_ID), "the first answer")
    stale = copy.deepcopy(bot.original(sent))
    stale.components = [{"type": 1, "components": [
        {"type": 2, "style": 2, "label": "Again", "custom_id": "again:" + "0" * 32}]}]

    told = await told_privately(bot, await press(bot, stale, AGAIN_ID))

    assert told.content == EXPIRED_TEXT and len(bot.replicate.creates) == 1


# --- the fallback edit ---------------------------------------------------------------------------------------


async def test_a_message_the_final_text_left_unedited_gets_its_buttons_in_one_edit_of_its_own() -> None:
    """Rare over the wire (the final text's last chunk already shown as it is): `settle` puts things right."""
    request_id = "a" * 32
    answer_buttons = AnswerButtons(request_id, max_chars=2000)
    answer_buttons.shown("first", answer_buttons.view_for("⏳ Starting…"))  # shows Stop
    answer_buttons.shown("last", None)
    answer_buttons.shown("right", None)
    answer_buttons.end("the end", again_id="b" * 32)
    edits: list[tuple[str, list[str]]] = []

    async def set_view(message_id: str, view: discord.ui.View | None) -> None:
        edits.append((message_id, [str(getattr(item, "custom_id", "")) for item in view.children] if view else []))

    await answer_buttons.settle(["first", "right", "last"], set_view)
    await answer_buttons.settle(["first", "right", "last"], set_view)  # nothing left to put right

    assert edits == [("first", []), ("last", ["again:" + "b" * 32])]
