"""Fault matrix: each row breaks one thing (Replicate, Slack or Discord) while real commands run through the
whole bot, and checks the same promises every time (README: Deploying; the error replies of `bot/errors.py`):

- every accepted command gets exactly one final reply: the answer, or one clear error;
- no prediction is created twice for one command;
- nothing is left running on Replicate at the end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from bot.runner import RunPolicy
from tests.bot_harness import Bots, running_bots
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate, ImageModel, RecordedRequest, TextModel
from tests.fakes.slack_server import FakeSlack
from tests.harness_common import ANSWER, ASK_MODEL, CHANNEL, FAST_POLICY, IMAGINE_MODEL

SLOW_TOKENS = ["one ", "two ", "three ", "four"]  # streams for ~1.2 s: long enough to break something mid-answer
SLOW_ANSWER = "".join(SLOW_TOKENS)
TIMEOUT_S = 1.5
SLACK_CHANNEL = "C0FAULT"
WARNING = "⚠️"

# What users are told (bot/errors.py RUN_FAILURE_TEXT), by the words that make each one clear.
BUSY_OR_DOWN = "Replicate isn't answering"
TIMED_OUT = "took longer than 1.5 seconds, so I cancelled it"
MODEL_FAILED = "failed while running"
EMPTY = "returned nothing"
BUSY = "Replicate is busy right now"
IMAGE_CAPTION = "🖼"  # an /imagine answer: the caption beside the uploaded picture starts with it


def replicate_answered(bots: Bots, status: int) -> int:
    return sum(1 for request in bots.replicate.requests if request.status == status)


def slack_answered(bots: Bots, method: str, status: int) -> int:
    assert bots.slack is not None
    return sum(1 for call in bots.slack.requests_to(method) if call.status == status)


def showed_starting(bots: Bots) -> bool:
    """Some reply showed the model booting before the answer replaced it."""
    shown = [text for reply in bots.slack_replies(SLACK_CHANNEL) for text in reply.history] if bots.slack else []
    return any("Starting the model" in text for text in shown)


def _prefer_wait_s(request: RecordedRequest) -> float:
    """Seconds a create asked Replicate to hold it (`Prefer: wait=N`); 0 when it did not ask."""
    _, _, value = (request.headers.get("Prefer") or "").partition("wait=")
    return float(value) if value else 0.0


def nothing(_: FakeReplicate) -> None:
    pass


async def no_action(_: Bots) -> None:
    pass


def on_slack(act: Callable[[FakeSlack], None]) -> Callable[[Bots], None]:
    """A `chat` step on the fake Slack (the fault's platforms include Slack)."""
    def chat(bots: Bots) -> None:
        assert bots.slack is not None
        act(bots.slack)
    return chat


def on_discord(act: Callable[[FakeDiscord], None]) -> Callable[[Bots], None]:
    """A `chat` step on the fake Discord (the fault's platforms include Discord)."""
    def chat(bots: Bots) -> None:
        assert bots.discord is not None
        act(bots.discord)
    return chat


@dataclass(frozen=True)
class Fault:
    """One row: how to break things, which platforms carry a command, and what each user must end up with."""

    arrange: Callable[[FakeReplicate], None] = nothing  # before the bot starts (models, create faults)
    chat: Callable[[Bots], None] = lambda _: None  # chat-side faults, once the bot is connected
    mid_answer: Callable[[Bots], Awaitable[None]] = no_action  # once every prediction exists
    platforms: tuple[str, ...] = ("slack", "discord")
    command: str = "ask"
    expect: str | None = None  # None: the answer; else words of the one error
    answer: str = ANSWER
    creates_per_command: int = 1
    cancelled: bool = False  # the bot had to cancel the prediction itself
    policy: RunPolicy = field(default=FAST_POLICY)
    happened: Callable[[Bots], bool] = lambda _: True  # the fault really was met (a test that can fail)


def slow_model(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK_MODEL, TextModel(tokens=SLOW_TOKENS, token_interval_s=0.3))


def slow_model_failing_create(replicate: FakeReplicate) -> None:
    """The slow model; the create makes its prediction, then answers 500, twice."""
    slow_model(replicate)
    replicate.fail("create", 500, times=2, created=True)


def hung_image_model_held_create(replicate: FakeReplicate) -> None:
    """An image model that never finishes; the create makes its prediction but is never answered, twice."""
    replicate.add_model(IMAGINE_MODEL, ImageModel(hang=True))
    replicate.hold("create", 2)


async def drop_slack_socket(bots: Bots) -> None:
    assert bots.slack is not None
    bots.slack.drop_socket()
    await bots.slack.wait_for_socket(2, timeout=20)


async def slack_disconnect_message(bots: Bots) -> None:
    assert bots.slack is not None
    await bots.slack.send_disconnect(reason="refresh_requested")
    await bots.slack.wait_for_socket(2, timeout=10)


async def discord_gateway_drop(bots: Bots) -> None:
    assert bots.discord is not None
    ready = bots.discord.ready_count
    await bots.discord.drop_gateway(4000)
    await bots.discord.wait_for_ready(ready + 1, timeout=10)  # RESUMED


FAULTS = {
    "replicate-429-on-create-then-success": Fault(
        arrange=lambda r: r.rate_limit("create", times=2, retry_after=1),
        happened=lambda b: replicate_answered(b, 429) == 2,
    ),
    "replicate-500-on-create-nothing-created": Fault(
        arrange=lambda r: r.fail("create", 500, times=2),
        expect=BUSY_OR_DOWN,
        creates_per_command=0,
        happened=lambda b: replicate_answered(b, 500) == 2,
    ),
    "replicate-500-on-create-after-creating": Fault(
        # Not retried (a second create could pay twice): the prediction the create made is found and followed.
        arrange=lambda r: r.fail("create", 500, times=2, created=True),
        happened=lambda b: (replicate_answered(b, 500) == 2
                            and len(b.replicate.requests_to("GET", "/v1/predictions")) >= 2),
    ),
    "replicate-slow-model-500-on-create-after-creating": Fault(
        arrange=slow_model_failing_create,
        answer=SLOW_ANSWER,
        happened=lambda b: replicate_answered(b, 500) == 2,
    ),
    "slow-cold-boot": Fault(
        arrange=lambda r: r.add_model(ASK_MODEL, TextModel(tokens=["Ready."], boot_s=1.0)),
        answer="Ready.",
        happened=lambda b: showed_starting(b),
        policy=RunPolicy(timeout_s=5.0, poll_interval_s=0.05, cancel_timeout_s=2.0),
    ),
    "hung-prediction-past-the-timeout": Fault(
        arrange=lambda r: r.add_model(ASK_MODEL, TextModel(tokens=[], hang=True)),
        expect=TIMED_OUT,
        cancelled=True,
        policy=RunPolicy(timeout_s=TIMEOUT_S, poll_interval_s=0.05, cancel_timeout_s=2.0),
    ),
    "failed-prediction": Fault(
        arrange=lambda r: r.add_model(ASK_MODEL, TextModel(tokens=[], fail_with="CUDA out of memory")),
        expect=MODEL_FAILED,
    ),
    "empty-output": Fault(
        arrange=lambda r: r.add_model(ASK_MODEL, TextModel(tokens=["", "  "])),
        expect=EMPTY,
    ),
    "replicate-429-asking-longer-than-we-wait": Fault(
        arrange=lambda r: r.rate_limit("create", times=2, retry_after=60),
        expect=BUSY,
        creates_per_command=0,
        happened=lambda b: replicate_answered(b, 429) == 2,  # one try each: no retry storm, no hour-long wait
    ),
    "image-hung-past-the-timeout": Fault(
        arrange=lambda r: r.add_model(IMAGINE_MODEL, ImageModel(hang=True)),
        command="imagine",
        expect=TIMED_OUT,
        cancelled=True,
        policy=RunPolicy(timeout_s=TIMEOUT_S, poll_interval_s=0.05, create_wait_s=1, cancel_timeout_s=2.0),
    ),
    "image-create-held-past-the-timeout": Fault(
        # `Prefer: wait` would hold the create longer than the time left: the wait is cut to fit, and the
        # prediction is cancelled at the deadline like any other.
        arrange=lambda r: r.add_model(IMAGINE_MODEL, ImageModel(hang=True)),
        command="imagine",
        expect=TIMED_OUT,
        cancelled=True,
        policy=RunPolicy(timeout_s=TIMEOUT_S, poll_interval_s=0.05, create_wait_s=5, cancel_timeout_s=2.0),
        happened=lambda b: all(_prefer_wait_s(r) <= TIMEOUT_S for r in b.replicate.requests_to("POST", "/v1/models/")),
    ),
    "image-create-never-answered": Fault(
        # The create reached Replicate, which made the prediction but never answered: at the deadline the bot
        # finds the prediction among its newest and cancels it, and the user hears it timed out.
        arrange=hung_image_model_held_create,
        command="imagine",
        expect=TIMED_OUT,
        cancelled=True,
        policy=RunPolicy(timeout_s=TIMEOUT_S, poll_interval_s=0.05, create_wait_s=1, cancel_timeout_s=2.0),
        happened=lambda b: len(b.replicate.requests_to("GET", "/v1/predictions")) >= 2,
    ),
    "image-500-on-create-after-creating": Fault(
        arrange=lambda r: r.fail("create", 500, times=2, created=True),
        command="imagine",
        answer=IMAGE_CAPTION,
        happened=lambda b: replicate_answered(b, 500) == 2,
    ),
    "image-empty-output": Fault(
        arrange=lambda r: r.add_model(IMAGINE_MODEL, ImageModel(output_override=[])),
        command="imagine",
        expect=EMPTY,
    ),
    "slack-429-on-post-message": Fault(
        chat=on_slack(lambda slack: slack.rate_limit("chat.postMessage", times=1, retry_after=1)),
        platforms=("slack",),
        happened=lambda b: slack_answered(b, "chat.postMessage", 429) == 1,
    ),
    "slack-429-on-every-update": Fault(
        arrange=slow_model,
        chat=on_slack(lambda slack: slack.rate_limit("chat.update", times=20, retry_after=1)),
        platforms=("slack",),
        answer=SLOW_ANSWER,
        happened=lambda b: slack_answered(b, "chat.update", 429) >= 1,
    ),
    "slack-socket-drop-mid-answer": Fault(
        arrange=slow_model, mid_answer=drop_slack_socket, platforms=("slack",), answer=SLOW_ANSWER,
        happened=lambda b: b.slack is not None and b.slack.socket.connections[0].closed_by_server,
    ),
    "slack-disconnect-message-mid-answer": Fault(
        arrange=slow_model, mid_answer=slack_disconnect_message, platforms=("slack",), answer=SLOW_ANSWER,
        happened=lambda b: b.slack is not None and b.slack.socket.connections[0].disconnect_reason is not None,
    ),
    "discord-429-on-edit": Fault(
        arrange=slow_model,
        chat=on_discord(lambda discord: discord.rate_limit("PATCH", r"/webhooks/\d+/[^/]+/messages/", times=2)),
        platforms=("discord",),
        answer=SLOW_ANSWER,
        happened=lambda b: b.discord is not None and any(r.status == 429 for r in b.discord.requests),
    ),
    "discord-gateway-reconnect-mid-answer": Fault(
        arrange=slow_model, mid_answer=discord_gateway_drop, platforms=("discord",), answer=SLOW_ANSWER,
        happened=lambda b: b.discord is not None and b.discord.resume_count >= 1,
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
async def test_every_command_gets_one_final_reply_one_prediction_and_nothing_left_running(fault: Fault) -> None:
    async with running_bots(
        slack="slack" in fault.platforms, discord="discord" in fault.platforms, policy=fault.policy,
        arrange=fault.arrange, prediction_timeout_s=fault.policy.timeout_s,
    ) as bots:
        fault.chat(bots)
        commands = len(fault.platforms)
        sent: SentInteraction | None = None
        if "slack" in fault.platforms:
            assert bots.slack is not None
            envelope = await bots.slack.send_slash_command(command=f"/{fault.command}", text="hello",
                                                          channel_id=SLACK_CHANNEL)
            ack = await bots.slack.wait_for_ack(envelope)
            assert ack.get("payload") in (None, {})  # accepted: a plain ack, the answer comes in the thread
        if "discord" in fault.platforms:
            assert bots.discord is not None
            sent = await bots.discord.send_interaction(fault.command, {"prompt": "hello"}, channel_id=CHANNEL)
        if fault.creates_per_command:
            await bots.replicate.wait_until(lambda: len(bots.replicate.creates) >= commands, what="the predictions")
        await fault.mid_answer(bots)

        finals: list[list[str]] = []
        if "slack" in fault.platforms:
            finals.append(await bots.slack_final(SLACK_CHANNEL))
            assert len(bots.slack_parents(SLACK_CHANNEL)) == 1
        if sent is not None:
            finals.append(await bots.discord_final(sent))

        for replies in finals:
            if fault.expect is None and fault.answer == IMAGE_CAPTION:
                captions = [reply for reply in replies if reply.startswith(IMAGE_CAPTION)]
                assert len(captions) == 1 and WARNING not in "\n".join(replies), replies
            elif fault.expect is None:
                assert replies == [fault.answer]
            else:
                shown = "\n".join(replies)
                assert shown.count(WARNING) == 1 and fault.expect in shown, replies
        assert len(bots.replicate.creates) == commands * fault.creates_per_command
        await bots.nothing_running()
        assert fault.happened(bots)
        if fault.cancelled:
            assert sorted(bots.replicate.cancels) == sorted(p.id for p in bots.replicate.creates)
