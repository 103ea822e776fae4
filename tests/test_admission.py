"""`bot.admission.AdmissionQueue`: at most `capacity` predictions at once, FIFO, with live queue positions."""

from __future__ import annotations

import asyncio

import pytest

from bot.admission import AdmissionQueue

TIMEOUT_S = 2.0
REPORT_INTERVAL_S = 0.01  # waiters look at their place on a timer; tests that watch places move keep it short


class Caller:
    """One command waiting for a slot: records the positions it is shown, holds its slot until told to leave."""

    def __init__(self, queue: AdmissionQueue, name: str, admissions: list[str]) -> None:
        self.name = name
        self.positions: list[int] = []
        self.admitted = asyncio.Event()
        self.leave = asyncio.Event()
        self._queue = queue
        self._admissions = admissions
        self._position_shown = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"caller-{name}")

    async def _run(self) -> None:
        async for position in self._queue.wait_turn():
            self.positions.append(position)
            self._position_shown.set()
        self._admissions.append(self.name)
        self.admitted.set()
        try:
            await self.leave.wait()
        finally:
            self._queue.release()

    async def shown(self, position: int) -> None:
        """Wait until the latest position this caller was shown is `position`."""

        async def latest_is_position() -> None:
            while not (self.positions and self.positions[-1] == position):
                self._position_shown.clear()
                await self._position_shown.wait()

        await asyncio.wait_for(latest_is_position(), TIMEOUT_S)

    async def wait_admitted(self) -> None:
        await asyncio.wait_for(self.admitted.wait(), TIMEOUT_S)

    async def finish(self) -> None:
        self.leave.set()
        await asyncio.wait_for(self.task, TIMEOUT_S)


async def take_free_slot(queue: AdmissionQueue) -> list[int]:
    positions = [position async for position in queue.wait_turn()]
    return positions


async def queue_of(queue: AdmissionQueue, names: str, admissions: list[str]) -> list[Caller]:
    """Start callers in order, each one enqueued (shown its position) before the next starts."""
    callers = []
    for name in names:
        expected_position = queue.queued + 1
        caller = Caller(queue, name, admissions)
        await caller.shown(expected_position)
        callers.append(caller)
    return callers


async def test_free_slot_is_taken_without_any_position() -> None:
    queue = AdmissionQueue(2)

    assert await take_free_slot(queue) == []
    assert await take_free_slot(queue) == []
    assert (queue.in_use, queue.queued) == (2, 0)


async def test_caller_beyond_capacity_is_shown_its_position() -> None:
    queue = AdmissionQueue(1)
    await take_free_slot(queue)
    admissions: list[str] = []

    (first,) = await queue_of(queue, "a", admissions)

    assert first.positions == [1]
    assert not first.admitted.is_set()
    assert (queue.in_use, queue.queued) == (1, 1)
    first.task.cancel()
    await asyncio.gather(first.task, return_exceptions=True)


async def test_waiters_are_admitted_in_arrival_order() -> None:
    queue = AdmissionQueue(1)
    await take_free_slot(queue)
    admissions: list[str] = []
    callers = await queue_of(queue, "abc", admissions)

    queue.release()
    for caller in callers:
        await caller.wait_admitted()
        await caller.finish()

    assert admissions == ["a", "b", "c"]
    assert (queue.in_use, queue.queued) == (0, 0)


async def test_positions_count_down_as_earlier_waiters_are_admitted() -> None:
    queue = AdmissionQueue(1, report_interval_s=REPORT_INTERVAL_S)
    await take_free_slot(queue)
    admissions: list[str] = []
    a, b, c = await queue_of(queue, "abc", admissions)
    assert [a.positions, b.positions, c.positions] == [[1], [2], [3]]

    queue.release()
    await a.wait_admitted()
    await b.shown(1)
    await c.shown(2)
    assert (queue.in_use, queue.queued) == (1, 2)

    await a.finish()
    await b.wait_admitted()
    await c.shown(1)

    assert b.positions == [2, 1]
    assert c.positions == [3, 2, 1]
    await b.finish()
    await c.wait_admitted()
    await c.finish()


async def test_waiter_cancelled_in_the_queue_leaves_it_and_later_positions_move_up() -> None:
    queue = AdmissionQueue(1, report_interval_s=REPORT_INTERVAL_S)
    await take_free_slot(queue)
    admissions: list[str] = []
    a, b, c = await queue_of(queue, "abc", admissions)

    b.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b.task
    await c.shown(2)

    assert set(a.positions) == {1}  # waiters ahead of the one who left keep their place
    assert queue.queued == 2
    queue.release()
    await a.wait_admitted()
    await a.finish()
    await c.wait_admitted()
    await c.finish()
    assert admissions == ["a", "c"]
    assert (queue.in_use, queue.queued) == (0, 0)


async def test_waiter_cancelled_just_after_being_granted_hands_its_slot_on() -> None:
    queue = AdmissionQueue(1)
    await take_free_slot(queue)
    admissions: list[str] = []
    a, b = await queue_of(queue, "ab", admissions)

    queue.release()  # grants `a`...
    a.task.cancel()  # ...which is cancelled before it gets to run
    with pytest.raises(asyncio.CancelledError):
        await a.task

    await b.wait_admitted()
    assert admissions == ["b"]
    assert (queue.in_use, queue.queued) == (1, 0)
    await b.finish()
    assert queue.in_use == 0


async def test_granted_then_cancelled_last_waiter_frees_the_slot() -> None:
    queue = AdmissionQueue(1)
    await take_free_slot(queue)
    (a,) = await queue_of(queue, "a", [])

    queue.release()
    a.task.cancel()
    await asyncio.gather(a.task, return_exceptions=True)

    assert (queue.in_use, queue.queued) == (0, 0)
    assert await take_free_slot(queue) == []


async def test_release_without_waiters_frees_a_slot() -> None:
    queue = AdmissionQueue(3)
    for _ in range(3):
        await take_free_slot(queue)

    queue.release()

    assert queue.in_use == 2
    assert await take_free_slot(queue) == []


async def test_new_caller_queues_behind_waiters_even_when_capacity_is_reached_by_handover() -> None:
    queue = AdmissionQueue(2, report_interval_s=REPORT_INTERVAL_S)
    await take_free_slot(queue)
    await take_free_slot(queue)
    admissions: list[str] = []
    a, b = await queue_of(queue, "ab", admissions)

    queue.release()
    await a.wait_admitted()

    assert queue.in_use == 2
    late = Caller(queue, "late", admissions)
    await late.shown(2)
    await b.shown(1)
    for caller in (a, b, late):
        caller.leave.set()
    queue.release()
    await asyncio.wait_for(asyncio.gather(a.task, b.task, late.task), TIMEOUT_S)
    assert admissions == ["a", "b", "late"]
    assert (queue.in_use, queue.queued) == (0, 0)


async def test_slot_context_holds_a_slot_and_releases_it_on_exit() -> None:
    queue = AdmissionQueue(1)

    async with queue.slot():
        assert queue.in_use == 1

    assert queue.in_use == 0


async def test_slot_context_releases_the_slot_when_the_body_raises() -> None:
    queue = AdmissionQueue(1)

    with pytest.raises(RuntimeError):
        async with queue.slot():
            raise RuntimeError("model failed")

    assert queue.in_use == 0


async def test_slot_context_waits_for_a_busy_slot() -> None:
    queue = AdmissionQueue(1)
    entered = asyncio.Event()

    async def second() -> None:
        async with queue.slot():
            entered.set()

    async with queue.slot():
        task = asyncio.create_task(second())
        await asyncio.sleep(0)  # let it reach the queue
        assert queue.queued == 1
        assert not entered.is_set()

    await asyncio.wait_for(entered.wait(), TIMEOUT_S)
    await asyncio.wait_for(task, TIMEOUT_S)
    assert (queue.in_use, queue.queued) == (0, 0)


def test_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AdmissionQueue(0)
