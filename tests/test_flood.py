"""A flood of commands must not stall the bot: a bounded queue refused privately and at once, a release that
wakes one waiter, places that stay exact as waiters leave, `/healthz` telling running from queued, and queued
commands told "restarting" the moment shutdown begins."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.admission import AdmissionClosed, AdmissionQueue
from bot.errors import FailureKind
from bot.replies import Failure, Phase, ReplyEvent, Status
from bot.requests import CommandRequest
from bot.waiting_line import Place, WaitingLine
from config.settings import SettingsError, load_settings
from tests.bot_harness import running_bots
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.harness_common import ASK_MODEL, CHANNEL, WAIT_S
from tests.process_harness import bot_process, discord_contents, slack_replies
from tests.test_core_runner import ASK, ORIGIN, make_core
from tests.test_lifecycle import get_health

TIMEOUT_S = 10.0
HUNG_MODEL = "test/hung"
BUSY = "The bot is busy: 2 commands are waiting. Try again in a minute."
RESTARTING = "The bot is restarting. Try again in a moment."


# --- the waiting line -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["join", "join", "leave", "pop"]), st.integers(0, 10**6)),
                      max_size=400))
def test_every_place_in_the_line_is_exact_through_joins_leaves_from_anywhere_and_renumbering(
    steps: list[tuple[str, int]],
) -> None:
    line = WaitingLine()
    model: list[Place] = []  # the same line as a plain list: a place is its index + 1
    for action, pick in steps:
        if action == "join":
            place = Place()
            line.join(place)
            model.append(place)
        elif action == "leave" and model:
            line.leave(model.pop(pick % len(model)))
        elif action == "pop":
            popped = line.pop_front()
            assert popped is (model.pop(0) if model else None)
        assert len(line) == len(model)
        assert [line.position(place) for place in model] == list(range(1, len(model) + 1))


def test_a_line_with_a_waiter_stuck_at_the_front_stays_small_however_many_come_and_go() -> None:
    line = WaitingLine()
    stuck = Place()
    line.join(stuck)
    for _ in range(10_000):
        passing = Place()
        line.join(passing)
        line.leave(passing)

    assert line.position(stuck) == 1 and len(line) == 1
    assert len(line._places) <= 128  # renumbering drops those who left from the middle


# --- the admission queue ---------------------------------------------------------------------------------


class Waiter:
    """A command in the queue: records each place it is shown with the true place at that moment."""

    def __init__(self, queue: AdmissionQueue, line: list[Waiter], shown: asyncio.Event) -> None:
        self.reports: list[tuple[int, int]] = []  # (place shown, true place)
        self.admitted = asyncio.Event()
        self._queue, self._line, self._shown = queue, line, shown
        line.append(self)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for position in self._queue.wait_turn():
                self.reports.append((position, self._line.index(self) + 1))
                self._shown.set()
        except asyncio.CancelledError:
            self._line.remove(self)  # in the same step as the queue lets it go
            raise
        self.admitted.set()
        try:
            await asyncio.Event().wait()  # holds its slot until cancelled
        finally:
            self._queue.release()


async def until(condition: Callable[[], bool], changed: asyncio.Event, what: str) -> None:
    async def check() -> None:
        while not condition():
            changed.clear()
            await changed.wait()

    try:
        await asyncio.wait_for(check(), TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"no {what} after {TIMEOUT_S}s") from None


async def full_queue(count: int, report_interval_s: float) -> tuple[AdmissionQueue, list[Waiter], asyncio.Event]:
    queue = AdmissionQueue(1, report_interval_s=report_interval_s)
    async for _ in queue.wait_turn():  # the one slot is taken: everyone else waits
        pass
    line: list[Waiter] = []
    shown = asyncio.Event()
    waiters = [Waiter(queue, line, shown) for _ in range(count)]
    await until(lambda: all(waiter.reports for waiter in waiters), shown, "first places")
    return queue, waiters, shown


async def stop(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter.task.cancel()
    await asyncio.gather(*(waiter.task for waiter in waiters), return_exceptions=True)


class ResumeCounter:
    """Counts how often a waiter's `wait_turn` is resumed, with the interpreter's profiler (no timing)."""

    def __init__(self) -> None:
        self.resumed = 0
        self._code = AdmissionQueue.wait_turn.__code__

    def __enter__(self) -> ResumeCounter:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *_: object) -> None:
        sys.setprofile(None)

    def _profile(self, frame: FrameType, event: str, _: Any) -> None:
        if event == "call" and frame.f_code is self._code:
            self.resumed += 1


async def test_a_release_with_a_thousand_waiting_resumes_only_the_waiter_it_admits() -> None:
    queue, waiters, _ = await full_queue(1000, report_interval_s=3600.0)

    with ResumeCounter() as counter:
        queue.release()
        await asyncio.wait_for(waiters[0].admitted.wait(), TIMEOUT_S)
        waiters[0].task.cancel()  # its slot goes to the next one: a second release
        await asyncio.wait_for(waiters[1].admitted.wait(), TIMEOUT_S)

    assert counter.resumed == 2  # one each: the 998 still waiting were not woken at all
    assert queue.queued == 998 and all(len(waiter.reports) == 1 for waiter in waiters[2:])
    await stop(waiters)


async def test_places_stay_exact_when_waiters_in_the_middle_leave() -> None:
    queue, waiters, shown = await full_queue(1000, report_interval_s=0.2)
    line = waiters[0]._line

    leaving = waiters[100:900:2]
    await stop(leaving)
    for _ in range(3):
        front = line.pop(0)  # what the queue admits, taken off the true line in the same step
        queue.release()
        await asyncio.wait_for(front.admitted.wait(), TIMEOUT_S)
    assert queue.queued == len(line) == 1000 - 400 - 3

    # Places below 20 are shown at every change; further back, once they moved a tenth closer.
    near = line[:19]
    await until(lambda: all(w.reports[-1][0] == line.index(w) + 1 for w in near), shown, "exact near places")
    last = line[-1]
    await until(lambda: last.reports[-1][0] <= 600, shown, "the last waiter moved up")
    assert all(place == truth for waiter in waiters for place, truth in waiter.reports)
    await stop(waiters)


async def test_a_place_far_back_is_shown_again_only_when_it_moved_a_tenth_closer() -> None:
    # A report timer of 0 s looks at the place at every turn of the loop: every change could be shown.
    queue, waiters, shown = await full_queue(200, report_interval_s=0.0)
    last = waiters[-1]

    for index in range(60):
        queue.release()
        await asyncio.wait_for(waiters[index].admitted.wait(), TIMEOUT_S)
    await until(lambda: last.reports[-1][0] <= 160, shown, "the last waiter's new place")

    places = [place for place, _ in last.reports]
    assert places[0] == 200 and len(places) <= 5, places  # not 61 reports for 60 releases
    assert all(before - after >= before // 10 for before, after in itertools.pairwise(places)), places
    await stop(waiters)


async def test_closing_the_queue_fails_every_waiter_at_once_and_a_freed_slot_admits_nobody() -> None:
    queue, waiters, _ = await full_queue(50, report_interval_s=3600.0)
    outcomes = [asyncio.ensure_future(asyncio.wait_for(asyncio.shield(waiter.task), TIMEOUT_S)) for waiter in waiters]

    queue.close()
    results = await asyncio.gather(*outcomes, return_exceptions=True)
    queue.release()  # the running command ends during the grace

    assert all(isinstance(result, AdmissionClosed) for result in results)
    assert not any(waiter.admitted.is_set() for waiter in waiters)
    assert (queue.in_use, queue.queued) == (0, 0)
    with pytest.raises(AdmissionClosed):
        async for _ in queue.wait_turn():
            pass


def test_reservations_beyond_the_bound_are_refused_and_a_withdrawn_or_lapsed_one_frees_its_place() -> None:
    now = [0.0]
    queue = AdmissionQueue(1, max_queued=2, reservation_hold_s=10.0, clock=lambda: now[0])

    assert [queue.reserve(f"c{index}") for index in range(5)] == [True, True, True, False, False]
    queue.withdraw("c0")
    assert queue.reserve("c5") and not queue.reserve("c6")
    now[0] += 10.0  # never executed (the adapter failed to answer the platform): the places lapse
    assert queue.reserved == 0 and queue.reserve("c7")


# --- the core ---------------------------------------------------------------------------------------------


@pytest.fixture
async def replicate() -> Any:
    async with FakeReplicate() as fake:
        fake.add_model(ASK, TextModel(tokens=["Thinking"], hang=True))
        yield fake
        assert fake.fake_errors == []


async def first_events(events: Any, count: int) -> list[ReplyEvent]:
    return [await asyncio.wait_for(anext(events), TIMEOUT_S) for _ in range(count)]


async def test_three_hundred_at_once_with_room_for_two_hundred_queue_exactly_two_hundred(
    replicate: FakeReplicate,
) -> None:
    resources = make_core(replicate, max_concurrent_predictions=1, max_queued=200)
    core = resources.core
    try:
        prepared = [await core.prepare("ask", f"question {index}", ORIGIN) for index in range(300)]
        accepted = [request for request in prepared if isinstance(request, CommandRequest)]
        refused = [failure for failure in prepared if isinstance(failure, Failure)]
        streams = [core.execute(request) for request in accepted]
        firsts = await asyncio.gather(*(first_events(stream, 1) for stream in streams))

        assert len(accepted) == 201 and len(refused) == 99
        assert all(f.kind is FailureKind.QUEUE_FULL for f in refused)
        assert "200 commands are waiting" in refused[0].message
        queued = [event for (event,) in firsts if isinstance(event, Status) and event.phase is Phase.QUEUED]
        assert sorted(event.queue_position or 0 for event in queued) == list(range(1, 201))
        assert (core.running, core.queued) == (1, 200)
        await replicate.wait_until(lambda: len(replicate.creates) == 1, what="the one prediction")
        for stream in reversed(streams):  # the queued leave first, so the running one's slot admits nobody
            await stream.aclose()
    finally:
        await core.drain(0)
        await resources.aclose()
    assert len(replicate.creates) == 1


async def test_a_queued_command_that_is_abandoned_gives_its_place_back_at_once(replicate: FakeReplicate) -> None:
    resources = make_core(replicate, max_concurrent_predictions=1, max_queued=1)
    core = resources.core
    try:
        running, queued = [await core.prepare("ask", text, ORIGIN) for text in ("runs", "waits")]
        assert isinstance(running, CommandRequest) and isinstance(queued, CommandRequest)
        assert isinstance(await core.prepare("ask", "no room", ORIGIN), Failure)
        first, second = core.execute(running), core.execute(queued)
        assert [await first_events(stream, 1) for stream in (first, second)] == [
            [Status(Phase.STARTING)], [Status(Phase.QUEUED, queue_position=1)]]

        await second.aclose()  # the user's command went away (say, its thread could not be opened)
        assert isinstance(await core.prepare("ask", "room again", ORIGIN), CommandRequest)
        await first.aclose()
    finally:
        await core.drain(0)
        await resources.aclose()
    assert len(replicate.creates) == 1


async def test_stop_accepting_tells_every_queued_command_it_is_restarting_and_creates_nothing_more(
    replicate: FakeReplicate,
) -> None:
    resources = make_core(replicate, max_concurrent_predictions=1)
    core = resources.core
    try:
        requests = [await core.prepare("ask", f"question {index}", ORIGIN) for index in range(4)]
        streams = [core.execute(request) for request in requests if isinstance(request, CommandRequest)]
        await asyncio.gather(*(first_events(stream, 1) for stream in streams))
        await replicate.wait_until(lambda: len(replicate.running()) == 1, what="the running prediction")

        core.stop_accepting()
        told = [await first_events(stream, 1) for stream in streams[1:]]
        replicate.cancel(replicate.running()[0])  # the running one ends during the grace: its slot is free
        await core.drain(5.0)

        assert all(isinstance(event, Failure) and event.kind is FailureKind.SHUTTING_DOWN
                   and event.message == RESTARTING for (event,) in told)
        assert len(replicate.creates) == 1
        for stream in streams:
            await stream.aclose()
    finally:
        await resources.aclose()


# --- settings ---------------------------------------------------------------------------------------------


def test_max_queued_defaults_to_two_hundred_and_is_read_and_validated(tmp_path: Any) -> None:
    absent = tmp_path / "absent.env"
    assert load_settings({}, absent).max_queued == 200
    assert load_settings({"MAX_QUEUED": "5"}, absent).max_queued == 5
    assert load_settings({"MAX_QUEUED": "0"}, absent).max_queued == 0
    for bad, problem in (("-1", "at least 0"), ("many", "number"), ("2.5", "number")):
        with pytest.raises(SettingsError, match=problem) as caught:
            load_settings({"MAX_QUEUED": bad}, absent)
        assert caught.value.variable == "MAX_QUEUED"


# --- over the wire ----------------------------------------------------------------------------------------


def hung(replicate: FakeReplicate) -> None:
    replicate.add_model(HUNG_MODEL, TextModel(tokens=[], hang=True))


FLOOD: dict[str, Any] = {"arrange": hung, "allowed_models": frozenset({HUNG_MODEL}), "ask_model": HUNG_MODEL,
                         "max_concurrent_predictions": 1, "max_queued": 2}


async def test_slack_commands_beyond_the_queue_are_refused_in_their_ack_and_post_nothing() -> None:
    async with running_bots(discord=False, **FLOOD) as bots:
        slack = bots.slack
        assert slack is not None
        channels = [f"C0FLOOD{index}" for index in range(5)]
        envelopes = await asyncio.gather(*(slack.send_slash_command(command="/ask", text="wait", channel_id=channel)
                                           for channel in channels))
        acks = [await slack.wait_for_ack(envelope, WAIT_S) for envelope in envelopes]
        refused = [channel for channel, ack in zip(channels, acks, strict=True)
                   if (ack.get("payload") or {}).get("text")]
        accepted = [channel for channel in channels if channel not in refused]
        await slack.wait_until(lambda: sum(any("Queued" in m.text for m in bots.slack_replies(c))
                                           for c in accepted) == 2,
                               WAIT_S, what="two queued commands")

        assert len(refused) == 2
        assert all(BUSY == (ack.get("payload") or {}).get("text") for ack in acks if ack.get("payload"))
        assert all(slack.channel_messages(channel) == [] for channel in refused)  # no public parent
        assert all(len(slack.channel_messages(channel)) == 1 for channel in accepted)
        assert len(bots.replicate.creates) == 1 and len(bots.replicate.running()) == 1
        status, health = await get_health(bots)
        assert status == 200 and (health["running"], health["queued"]) == (1, 2)


async def test_discord_commands_beyond_the_queue_are_refused_ephemerally_without_a_public_defer() -> None:
    async with running_bots(slack=False, **FLOOD) as bots:
        discord = bots.discord
        assert discord is not None
        sent = [await discord.send_interaction("ask", {"prompt": "wait"}, channel_id=CHANNEL) for _ in range(5)]
        await discord.wait_until(lambda: len(discord.callbacks) == 5, WAIT_S, what="five answers to Discord")
        await bots.replicate.wait_until(lambda: len(bots.replicate.creates) == 1, WAIT_S, what="one prediction")
        await discord.wait_until(
            lambda: sum("Queued" in (original.content or "") for s in sent
                        if (original := discord.interactions[s.token].original) is not None) == 2,
            WAIT_S, what="two queued")

        by_token = {callback.token: callback for callback in discord.callbacks}
        refusals = [by_token[s.token] for s in sent if by_token[s.token].type == 4]
        assert len(refusals) == 2 and [by_token[s.token].type for s in sent].count(5) == 3
        for refusal in refusals:
            original = discord.interactions[refusal.token].original
            assert original is not None and original.ephemeral and original.content == BUSY
        assert len(bots.replicate.creates) == 1
        _status, health = await get_health(bots)
        assert (health["running"], health["queued"]) == (1, 2)


async def test_healthz_tells_commands_running_from_commands_queued() -> None:
    async with running_bots(discord=False, **{**FLOOD, "max_queued": 200}) as bots:
        slack = bots.slack
        assert slack is not None
        _, idle = await get_health(bots)
        assert (idle["running"], idle["queued"]) == (0, 0) and "in_flight" not in idle
        for index in range(4):
            await slack.send_slash_command(command="/ask", text="wait", channel_id=f"C0H{index}")
        await slack.wait_until(lambda: sum(any("Queued" in m.text for m in bots.slack_replies(f"C0H{i}"))
                                           for i in range(4)) == 3, WAIT_S, what="three queued")

        _, busy = await get_health(bots)
        assert (busy["running"], busy["queued"]) == (1, 3)



def hung_ask_model(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK_MODEL, TextModel(tokens=["Thinking"], hang=True))


# --- SIGTERM, the real process -----------------------------------------------------------------------------


async def test_sigterm_tells_queued_commands_at_once_and_creates_nothing_after_the_signal(tmp_path: Path) -> None:
    # A long grace: what is queued must hear "restarting" now, not when the grace runs out.
    async with bot_process(tmp_path, arrange=hung_ask_model, MAX_CONCURRENT_PREDICTIONS="1",
                           SHUTDOWN_GRACE="60") as running:
        replicate, slack, discord = running.replicate, running.slack, running.discord
        await slack.send_slash_command(command="/ask", text="runs", channel_id="C0RUNS")
        await replicate.wait_until(lambda: len(replicate.running()) == 1, WAIT_S, what="the running prediction")
        for channel in ("C0WAIT1", "C0WAIT2"):
            await slack.send_slash_command(command="/ask", text="waits", channel_id=channel)
        waiting = await discord.send_interaction("ask", {"prompt": "waits"}, channel_id=CHANNEL)
        await slack.wait_until(lambda: all(any("Queued" in text for text in slack_replies(slack, channel))
                                           for channel in ("C0WAIT1", "C0WAIT2")), WAIT_S, what="queued on Slack")
        await discord.wait_until(lambda: any("Queued" in text for text in discord_contents(discord, waiting)),
                                 WAIT_S, what="queued on Discord")

        running.bot.process.send_signal(signal.SIGTERM)
        told_by = asyncio.get_running_loop().time() + 5.0  # "at once": far inside the 60 s grace
        await slack.wait_until(lambda: all(slack_replies(slack, channel) == [f"⚠️ {RESTARTING}"]
                                           for channel in ("C0WAIT1", "C0WAIT2")), 5.0, what="Slack told")
        await discord.wait_until(lambda: f"⚠️ {RESTARTING}" in discord_contents(discord, waiting), 5.0,
                                 what="Discord told")
        assert asyncio.get_running_loop().time() < told_by
        assert len(replicate.running()) == 1  # the running command still has its grace

        replicate.cancel(replicate.running()[0])  # it ends during the grace: its slot is free, nobody takes it
        assert await running.bot.exit_status(WAIT_S) == 0
        assert len(replicate.creates) == 1
        assert "Stopped cleanly" in running.bot.output
