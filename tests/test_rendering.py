"""`adapters.rendering`: post once, then coalesced edits on a timer; the final text always lands."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.rendering import CURSOR, EditBudget, RateLimited, RenderLimits, StreamingReply
from bot.text import split_message

FIRST = "first"
FAST = RenderLimits(max_chars=500, edit_interval_s=0.05)
TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Call:
    kind: str  # "post" | "edit"
    message_id: str
    text: str
    at: float
    failed: bool = False


class RecordingTarget:
    """An in-memory chat: remembers what every message says and every call made, and can be told to fail."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {FIRST: ""}
        self.calls: list[Call] = []
        self._edit_failures: deque[BaseException] = deque()
        self._delete_failures: deque[BaseException] = deque()
        # when set to an Event, a post is created but answered only once it is set
        self.post_gate: asyncio.Event | None = None
        self._changed = asyncio.Event()

    def fail_next_edits(self, error: BaseException, times: int = 1) -> None:
        self._edit_failures.extend([error] * times)

    def fail_next_deletes(self, error: BaseException, times: int = 1) -> None:
        self._delete_failures.extend([error] * times)

    async def post(self, text: str) -> str:
        message_id = f"m{len(self.calls)}"
        self.messages[message_id] = text
        self._record(Call("post", message_id, text, time.monotonic()))
        if self.post_gate is not None:
            await self.post_gate.wait()  # the platform has created the message; its answer is still on the way
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        assert message_id in self.messages, f"edit of unknown message {message_id}"
        if self._edit_failures:
            self._record(Call("edit", message_id, text, time.monotonic(), failed=True))
            raise self._edit_failures.popleft()
        self.messages[message_id] = text
        self._record(Call("edit", message_id, text, time.monotonic()))

    async def delete(self, message_id: str) -> None:
        assert message_id in self.messages, f"delete of unknown message {message_id}"
        if self._delete_failures:
            self._record(Call("delete", message_id, "", time.monotonic(), failed=True))
            raise self._delete_failures.popleft()
        del self.messages[message_id]
        self._record(Call("delete", message_id, "", time.monotonic()))

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        self._changed.set()

    @property
    def edits(self) -> list[Call]:
        return [call for call in self.calls if call.kind == "edit" and not call.failed]

    @property
    def posts(self) -> list[Call]:
        return [call for call in self.calls if call.kind == "post"]

    def texts(self, message_ids: list[str]) -> list[str]:
        return [self.messages[message_id] for message_id in message_ids]

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        async def until_true() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until_true(), TIMEOUT_S)

    async def wait_for_first(self, text: str) -> None:
        await self.wait_until(lambda: self.messages[FIRST] == text)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def exhausted(budget: EditBudget) -> bool:
    """`budget.exhausted`, read afresh: mypy keeps an asserted property narrowed across `clock.advance()`."""
    return budget.exhausted


class WatchedBudget(EditBudget):
    """An `EditBudget` that says when it was asked for an interim edit, and when it turned one down."""

    def __init__(self, per_minute: float, burst: float, clock: Callable[[], float]) -> None:
        super().__init__(per_minute, burst, clock)
        self.asked = asyncio.Event()
        self.refused = asyncio.Event()

    def try_take(self) -> bool:
        self.asked.set()
        taken = super().try_take()
        if not taken:
            self.refused.set()
        return taken


@pytest.fixture
def target() -> RecordingTarget:
    return RecordingTarget()


@pytest.fixture
async def make_reply(target: RecordingTarget) -> AsyncIterator[Callable[..., StreamingReply]]:
    made: list[StreamingReply] = []

    def make(limits: RenderLimits = FAST, **kwargs: Any) -> StreamingReply:
        reply = StreamingReply(target, FIRST, limits, **kwargs)
        made.append(reply)
        return reply

    yield make
    for reply in made:
        await reply.aclose()


def fence_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if re.match(r"^\s*(```|~~~)", line))


# --- streaming ----------------------------------------------------------------------------------------


async def test_many_appends_within_one_interval_coalesce_into_few_edits(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=4000, edit_interval_s=0.05))
    deltas = [f"w{index} " for index in range(200)]

    for delta in deltas:
        reply.append(delta)
        await asyncio.sleep(0)  # a model's stream yields between tokens
    await target.wait_for_first("".join(deltas) + CURSOR)

    assert 1 <= len(target.edits) <= 10
    assert reply.edits == len(target.edits)


async def test_edits_are_spaced_by_the_edit_interval(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()

    def shows(word: str) -> Callable[[], bool]:
        return lambda: target.messages[FIRST].endswith(word + CURSOR)

    for word in ("one", " two", " three"):
        reply.append(word)
        await target.wait_until(shows(word))

    times = [call.at for call in target.edits]
    assert len(times) == 3
    assert all(later - earlier >= FAST.edit_interval_s * 0.9 for earlier, later in itertools.pairwise(times))


async def test_status_is_shown_before_any_text_then_replaced_by_the_text(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()

    reply.set_status("Queued: you're #2")
    await target.wait_for_first("Queued: you're #2")
    reply.append("Hello")
    await target.wait_for_first("Hello" + CURSOR)

    assert [call.text for call in target.edits] == ["Queued: you're #2", "Hello" + CURSOR]


async def test_unchanged_text_is_not_edited_again(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()

    reply.append("hello")
    await target.wait_for_first("hello" + CURSOR)
    reply.set_status("Running")  # marks the reply dirty, but the text shown would not change
    reply.append("")
    reply.append("!")
    await target.wait_for_first("hello!" + CURSOR)

    assert [call.text for call in target.edits] == ["hello" + CURSOR, "hello!" + CURSOR]


async def test_a_change_that_leaves_the_shown_text_as_it_is_costs_no_edit_budget(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = WatchedBudget(per_minute=60, burst=10, clock=FakeClock())
    reply = make_reply(budget=budget)
    reply.append("hello")
    await target.wait_for_first("hello" + CURSOR)
    budget.asked.clear()

    reply.set_status("Running")  # marks the reply dirty, but the text shown would not change
    reply.append("")

    with pytest.raises(TimeoutError):  # the timer would ask within one interval; it gets ten
        await asyncio.wait_for(budget.asked.wait(), 10 * FAST.edit_interval_s)
    assert len(target.edits) == 1


async def test_while_streaming_only_the_message_whose_text_changed_is_edited(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=60, edit_interval_s=0.05))
    reply.append("a" * 40 + "\n\n" + "b" * 30)
    await target.wait_until(lambda: len(target.posts) == 1)  # "aaa…" in the first message, "bbb… ▍" in a second

    reply.append(" more")
    await target.wait_until(lambda: any(call.text.endswith("more" + CURSOR) for call in target.edits))

    assert [call.message_id for call in target.edits].count(FIRST) == 1
async def test_prepare_text_is_applied_to_the_streamed_text(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(prepare_text=str.upper)

    reply.append("shout")

    await target.wait_for_first("SHOUT" + CURSOR)


async def test_streamed_text_longer_than_one_message_continues_in_new_messages(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=60, edit_interval_s=0.05))
    text = "\n\n".join(f"paragraph {index} " + "word " * 6 for index in range(4))

    reply.append(text)
    await target.wait_until(lambda: len(target.posts) >= 2)

    shown = target.texts(reply.message_ids)
    assert all(len(chunk) <= 60 for chunk in shown)
    assert shown[-1].endswith(CURSOR)
    assert re.sub(r"\s+", "", "".join(shown)) == re.sub(r"\s+", "", text + CURSOR)


# --- finishing ----------------------------------------------------------------------------------------


async def test_finish_shows_exactly_the_final_text(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("The answer is")
    await target.wait_for_first("The answer is" + CURSOR)

    await reply.finish("The answer is 42.")

    assert target.messages == {FIRST: "The answer is 42."}
    assert target.calls[-1] == Call("edit", FIRST, "The answer is 42.", target.calls[-1].at)


async def test_finish_does_not_edit_when_the_final_text_is_already_shown(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(shown_text="Done.")

    await reply.finish("Done.")

    assert target.calls == []


async def test_finish_of_a_long_answer_posts_continuations_with_code_fences_intact(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=100, edit_interval_s=0.05))
    code = "```python\n" + "\n".join(f"print({index})" for index in range(25)) + "\n```"
    final = "Here is the program:\n\n" + code + "\n\nRun it with python."

    reply.append(final[:40])
    await target.wait_until(lambda: bool(target.edits))
    await reply.finish(final)

    shown = target.texts(reply.message_ids)
    assert reply.message_ids[0] == FIRST
    assert shown == split_message(final, 100)
    assert len(shown) > 2
    assert all(len(text) <= 100 and fence_count(text) % 2 == 0 for text in shown)
    assert all(CURSOR not in text for text in shown)


async def test_finish_leaves_no_stale_streaming_message_behind(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=40, edit_interval_s=0.05))
    final = "a" * 20 + "\n\n" + "b" * 17  # 39 characters: fits one message, but not with the cursor

    reply.append(final)
    await target.wait_until(lambda: len(target.posts) == 1)
    await reply.finish(final)

    assert set(target.messages) == set(reply.message_ids)  # the chat holds no message the reply forgot
    shown = target.texts(reply.message_ids)
    assert all(CURSOR not in text for text in shown), shown
    assert re.sub(r"\s+", "", "".join(shown)) == re.sub(r"\s+", "", final)


async def test_a_leftover_message_that_cannot_be_deleted_is_logged_and_the_final_text_still_lands(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply], caplog: pytest.LogCaptureFixture
) -> None:
    reply = make_reply(RenderLimits(max_chars=40, edit_interval_s=0.05))
    reply.append("a" * 20 + "\n\n" + "b" * 17)
    await target.wait_until(lambda: len(target.posts) == 1)
    target.fail_next_deletes(ConnectionError("reset"))

    await reply.finish("short")

    assert target.messages[FIRST] == "short" and reply.message_ids == [FIRST]
    assert "Could not delete a leftover message" in caplog.text


async def test_finish_lets_a_post_already_on_the_wire_land_and_accounts_for_it(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=40, edit_interval_s=0.05))
    target.post_gate = asyncio.Event()
    reply.append("a" * 20 + "\n\n" + "b" * 17)  # needs a second message while streaming
    await target.wait_until(lambda: len(target.posts) == 1)  # created on the platform, answer not yet back

    finishing = asyncio.create_task(reply.finish("short"))
    await asyncio.sleep(0)  # finish() starts while the post is on the wire
    target.post_gate.set()
    await asyncio.wait_for(finishing, TIMEOUT_S)

    assert target.messages == {FIRST: "short"}  # the continuation was learnt about, then removed


async def test_replace_shows_the_error_text_in_the_first_message(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("partial answer")
    await target.wait_for_first("partial answer" + CURSOR)

    await reply.replace("The model failed while running. Try again.")

    assert target.messages[FIRST] == "The model failed while running. Try again."


async def test_an_interim_edit_pending_at_finish_never_overwrites_the_final_text(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("draft")
    await target.wait_for_first("draft" + CURSOR)  # the first edit went out: the next one waits an interval
    reply.append(" more")  # so this one is pending when the answer ends
    await reply.finish("final")
    after_finish = len(target.calls)

    with pytest.raises(TimeoutError):  # a pending edit would land within one interval; it gets ten
        await asyncio.wait_for(
            target.wait_until(lambda: len(target.calls) > after_finish), 10 * FAST.edit_interval_s
        )
    assert target.messages[FIRST] == "final"
    reply.append(" late")
    reply.set_status("late status")
    await reply.aclose()
    assert len(target.calls) == after_finish and target.messages[FIRST] == "final"


async def test_an_interim_edit_pending_at_replace_never_overwrites_the_replacement(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("draft")
    await target.wait_for_first("draft" + CURSOR)  # the first edit went out: the next one waits an interval
    reply.append(" more")  # so this one is pending when the answer fails
    await reply.replace("The model failed while running. Try again.")
    after_replace = len(target.calls)

    with pytest.raises(TimeoutError):  # a pending edit would land within one interval; it gets ten
        await asyncio.wait_for(
            target.wait_until(lambda: len(target.calls) > after_replace), 10 * FAST.edit_interval_s
        )
    assert target.messages[FIRST] == "The model failed while running. Try again."


# --- rate limits and failures ------------------------------------------------------------------------


async def test_rate_limited_interim_edit_delays_the_next_edit_but_the_text_lands(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    target.fail_next_edits(RateLimited(0.3))

    reply.append("hello")
    await target.wait_for_first("hello" + CURSOR)

    refused, accepted = target.calls
    assert refused.failed and not accepted.failed
    assert accepted.at - refused.at >= 0.29
    await reply.finish("hello world")
    assert target.messages[FIRST] == "hello world"


async def test_rate_limited_interim_edit_does_not_stop_appends(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    target.fail_next_edits(RateLimited(0.2))

    reply.append("one")
    await target.wait_until(lambda: bool(target.calls))
    reply.append(" two")
    reply.append(" three")
    await target.wait_for_first("one two three" + CURSOR)

    assert [call.text for call in target.edits] == ["one two three" + CURSOR]


async def test_interim_edit_failing_otherwise_is_logged_and_streaming_goes_on(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply], caplog: pytest.LogCaptureFixture
) -> None:
    reply = make_reply()
    target.fail_next_edits(ConnectionError("reset"))

    reply.append("one")
    await target.wait_until(lambda: bool(target.calls))
    reply.append(" two")
    await target.wait_for_first("one two" + CURSOR)

    assert "Interim edit failed" in caplog.text
    await reply.finish("one two three")
    assert target.messages[FIRST] == "one two three"


async def test_rate_limited_final_edit_posts_the_text_at_once_and_removes_the_draft(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("draft")
    await target.wait_for_first("draft" + CURSOR)
    target.fail_next_edits(RateLimited(30))

    await asyncio.wait_for(reply.finish("final answer"), TIMEOUT_S)  # no waiting out the 30 s

    assert [call.text for call in target.posts] == ["final answer"]
    assert target.messages == {reply.message_ids[0]: "final answer"}  # the draft is gone
    assert [call.kind for call in target.calls[-2:]] == ["post", "delete"]  # never a moment with neither shown


async def test_rate_limited_final_edit_pauses_the_budget_for_its_retry_after(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=600, burst=10, clock=clock)
    reply = make_reply(budget=budget)
    target.fail_next_edits(RateLimited(5))

    await reply.finish("final answer")

    assert exhausted(budget) and not budget.try_take()
    clock.advance(5)
    assert not exhausted(budget) and budget.try_take()


async def test_rate_limited_interim_edit_pauses_every_reply_sharing_the_budget(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = EditBudget(per_minute=600, burst=10)
    reply = make_reply(budget=budget)
    target.fail_next_edits(RateLimited(30))

    reply.append("one")
    await target.wait_until(lambda: bool(target.calls))

    assert budget.paused and exhausted(budget)


async def test_long_final_answer_reposted_after_a_rate_limit_keeps_its_order(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=20, edit_interval_s=0.05))
    reply.append("aaaa aaaa aaaa\nbbbb bbbb")
    await target.wait_until(lambda: len(target.posts) == 1)  # the draft spans two messages
    target.fail_next_edits(RateLimited(30))

    final = "aaaa aaaa aaaa\nbbbb bbbb bbbb\ncccc dddd eeee"
    await reply.finish(final)

    assert target.texts(reply.message_ids) == split_message(final, 20)
    assert len(reply.message_ids) == 3 and reply.message_ids[0] == FIRST  # only the changed part was reposted
    assert set(target.messages) == set(reply.message_ids)  # both drafts removed


async def test_final_edit_failing_otherwise_posts_the_text_as_a_new_message(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply()
    reply.append("draft")
    await target.wait_for_first("draft" + CURSOR)
    target.fail_next_edits(RuntimeError("message was deleted"))

    await reply.finish("final answer")

    assert len([call for call in target.calls if call.failed]) == 1
    assert [call.text for call in target.posts] == ["final answer"]
    assert reply.message_ids == [target.posts[0].message_id]  # the new message takes the old one's place


# --- the shared edit budget ---------------------------------------------------------------------------


def test_budget_allows_a_burst_then_refills_at_the_per_minute_rate() -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=3, clock=clock)

    assert [budget.try_take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert not budget.try_take()
    clock.advance(0.5)
    assert budget.try_take()
    assert not budget.try_take()


def test_budget_refill_is_capped_at_the_burst() -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=2, clock=clock)
    budget.try_take()
    budget.try_take()

    clock.advance(3600)

    assert [budget.try_take() for _ in range(3)] == [True, True, False]


def test_budget_spend_overdraws_and_is_exhausted_until_repaid() -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=1, clock=clock)

    budget.spend()
    assert not exhausted(budget)
    budget.spend()
    assert exhausted(budget)
    assert not budget.try_take()

    clock.advance(1)
    assert not exhausted(budget)
    assert not budget.try_take()
    clock.advance(1)
    assert budget.try_take()


async def test_final_edit_is_counted_against_the_budget(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = EditBudget(per_minute=60, burst=2, clock=FakeClock())
    reply = make_reply(budget=budget)

    await reply.finish("final answer")

    assert target.messages[FIRST] == "final answer"
    assert budget.try_take()
    assert not budget.try_take()


async def test_interim_edit_without_budget_is_skipped_but_the_final_text_lands(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = WatchedBudget(per_minute=60, burst=1, clock=FakeClock())
    reply = make_reply(budget=budget)

    reply.append("one")
    await target.wait_for_first("one" + CURSOR)
    reply.append(" two")
    await asyncio.wait_for(budget.refused.wait(), TIMEOUT_S)
    assert target.messages[FIRST] == "one" + CURSOR

    await reply.finish("one two")

    assert [call.text for call in target.edits] == ["one" + CURSOR, "one two"]
    assert target.posts == []


async def test_interim_edit_refused_by_the_budget_is_retried_once_it_refills_without_a_new_delta(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    clock = FakeClock()
    budget = WatchedBudget(per_minute=60, burst=1, clock=clock)
    reply = make_reply(budget=budget)
    reply.append("one")
    await target.wait_for_first("one" + CURSOR)
    reply.append(" two")  # the last delta for now: the model is thinking
    await asyncio.wait_for(budget.refused.wait(), TIMEOUT_S)

    clock.advance(1)  # one edit's worth refills

    await target.wait_for_first("one two" + CURSOR)


async def test_exhausted_budget_makes_finish_post_a_new_message_instead_of_editing(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = EditBudget(per_minute=60, burst=1, clock=FakeClock())
    budget.spend()
    budget.spend()
    reply = make_reply(budget=budget)

    await reply.finish("final answer")

    assert target.edits == []
    assert [call.text for call in target.posts] == ["final answer"]
    assert reply.message_ids == [target.posts[0].message_id]  # the new message takes the old one's place
    assert FIRST not in target.messages


def test_paused_budget_is_exhausted_and_refuses_edits_until_the_pause_ends() -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=5, clock=clock)

    budget.pause(2)

    assert exhausted(budget) and not budget.try_take()
    clock.advance(2)
    assert not exhausted(budget) and budget.try_take()


def test_a_shorter_pause_does_not_cut_a_longer_one_short() -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=5, clock=clock)

    budget.pause(5)
    budget.pause(1)
    clock.advance(2)

    assert budget.paused and not budget.try_take()


def test_rate_limited_carries_its_retry_after() -> None:
    error = RateLimited(2.5)

    assert error.retry_after_s == 2.5
    assert "2.5" in str(error)



async def test_final_edit_keeps_the_edit_interval_after_the_last_progress_edit(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    reply = make_reply(RenderLimits(max_chars=500, edit_interval_s=0.3))
    reply.append("draft")
    await target.wait_for_first("draft" + CURSOR)

    await reply.finish("final answer")

    interim, final = target.edits
    assert final.text == "final answer" and final.at - interim.at >= 0.29


async def test_an_interim_edit_the_budget_refused_does_not_hold_the_final_edit_back(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = WatchedBudget(per_minute=60, burst=1, clock=FakeClock())
    assert budget.try_take()  # the placeholder's final edit, paid when it was posted; nothing left for progress
    reply = make_reply(RenderLimits(max_chars=500, edit_interval_s=TIMEOUT_S * 2), budget=budget,
                       final_edit_prepaid=True)
    reply.append("draft")
    await asyncio.wait_for(budget.refused.wait(), TIMEOUT_S)  # no edit went out: nothing to keep an interval from

    await asyncio.wait_for(reply.finish("final answer"), TIMEOUT_S)

    assert [call.text for call in target.edits] == ["final answer"]


async def test_reply_without_a_placeholder_posts_its_first_message_when_there_is_something_to_show(
    target: RecordingTarget,
) -> None:
    reply = StreamingReply(target, None, FAST)
    try:
        reply.append("hello")
        await target.wait_until(lambda: len(target.posts) == 1)
        await reply.finish("hello world")
    finally:
        await reply.aclose()

    assert target.posts[0].text == "hello" + CURSOR
    assert target.texts(reply.message_ids) == ["hello world"]


async def test_prepaid_final_edit_goes_through_an_overdrawn_budget_without_being_charged_again(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    clock = FakeClock()
    budget = EditBudget(per_minute=60, burst=1, clock=clock)
    assert budget.try_take()  # the placeholder's final edit, paid when it was posted
    budget.spend()  # another answer's final edit overdraws the scope
    assert exhausted(budget)
    reply = make_reply(budget=budget, final_edit_prepaid=True)

    await reply.finish("final answer")

    assert [call.text for call in target.edits] == ["final answer"] and target.posts == []
    clock.advance(1)  # repays exactly the other answer's overdraft
    assert not exhausted(budget)


async def test_prepaid_final_edit_is_posted_instead_while_the_platform_says_slow_down(
    target: RecordingTarget, make_reply: Callable[..., StreamingReply]
) -> None:
    budget = EditBudget(per_minute=60, burst=1, clock=FakeClock())
    assert budget.try_take()
    budget.pause(30)  # a 429 elsewhere in the scope: an edit now would only queue
    reply = make_reply(budget=budget, final_edit_prepaid=True)

    await reply.finish("final answer")

    assert target.edits == [] and [call.text for call in target.posts] == ["final answer"]
    assert reply.message_ids == [target.posts[0].message_id]
