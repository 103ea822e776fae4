"""`adapters.shared_budget`: Slack's per-workspace edit budget, leased from the state store by every process (two
budget objects on two connections to one store stand for two processes), on SQLite and on a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from adapters import slack_format as fmt
from adapters.rendering import EditBudget
from adapters.shared_budget import EDITS_PER_WINDOW, LEASE_SIZE, WINDOW_S, SharedEditBudget, SlackEditBudgets
from bot.state import StateStore, open_store
from bot.tasks import BackgroundTasks

WORKSPACE = "T0TEAM"


class Clock:
    """Both processes' wall clock, a few seconds into a window of the real time (Redis expires by the real one)."""

    def __init__(self) -> None:
        self.now = (time.time() // WINDOW_S) * WINDOW_S + 2.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def budgets(state_url: str) -> AsyncIterator[Callable[[Clock], Awaitable[SharedEditBudget]]]:
    """Makes one process's budget: its own connection to the store, its own tasks."""
    opened: list[StateStore] = []
    tasks = BackgroundTasks("test budgets")

    async def make(clock: Clock) -> SharedEditBudget:
        opened.append(await open_store(state_url))
        return SharedEditBudget(opened[-1], WORKSPACE, tasks, clock=clock)

    yield make
    await tasks.cancel_all()
    for store in opened:
        await store.aclose()


async def take_all(budget: SharedEditBudget) -> int:
    """Every token this process can lease now, spent: the lease topped up until the store has none left (or far
    more than a window holds were taken: a budget without a shared limit)."""
    taken = 0
    while taken < EDITS_PER_WINDOW * 10:
        while budget.try_take():
            taken += 1
        await budget.refill()
        if not budget.try_take():
            return taken
        taken += 1
    return taken


async def test_two_processes_together_get_one_windows_edits_and_no_more(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    first, second = await budgets(clock), await budgets(clock)

    await first.refill()
    await second.refill()
    assert first.try_take() and second.try_take()  # each holds a lease of its own
    taken = 2 + await take_all(first) + await take_all(second)

    assert taken == EDITS_PER_WINDOW
    assert first.exhausted and second.exhausted


async def test_any_sliding_minute_stays_within_slacks_tier(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    first, second = await budgets(clock), await budgets(clock)
    per_window = []
    for _ in range(5):  # 5 windows: the most that any 60 s overlaps
        per_window.append(await take_all(first) + await take_all(second))
        clock.now += WINDOW_S

    assert per_window == [EDITS_PER_WINDOW] * 5
    assert sum(per_window) <= fmt.CHAT_UPDATE_PER_MINUTE


async def test_a_token_leased_in_one_window_is_not_spent_in_the_next(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    budget = await budgets(clock)
    await budget.refill()
    assert budget.try_take()

    clock.now += WINDOW_S  # its other leased tokens were counted in the window that ended

    assert not budget.try_take()
    await budget.refill()
    assert budget.try_take()


async def test_near_a_windows_end_the_next_windows_tokens_are_leased_ahead(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    budget = await budgets(clock)
    clock.now += WINDOW_S - 2.0 - 0.5  # half a second before the turn
    await budget.refill()

    clock.now += 1.0
    assert budget.try_take()  # no gap at the turn of the window


async def test_a_429_seen_by_one_process_pauses_the_others(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    first, second = await budgets(clock), await budgets(clock)
    await second.refill()
    assert second.try_take()

    first.pause(30)
    await first.aclose()  # its pause is in the store once this returns
    await second.refill()  # a lease round reads the shared pause
    assert first.paused and second.paused
    assert not second.try_take() and second.exhausted

    clock.now += 31
    await second.refill()
    assert (second.paused, second.try_take()) == (False, True)


async def test_a_final_edit_spent_without_a_token_is_paid_from_the_next_lease(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]],
) -> None:
    clock = Clock()
    first, second = await budgets(clock), await budgets(clock)

    first.spend()  # nothing leased yet: owed to the store
    await first.refill()
    taken = sum(1 for _ in range(LEASE_SIZE + 1) if first.try_take())

    assert taken == LEASE_SIZE
    assert 1 + taken + await take_all(first) + await take_all(second) == EDITS_PER_WINDOW


async def test_with_redis_the_budget_is_shared_and_with_sqlite_it_is_the_processs_own(state_url: str) -> None:
    store = await open_store(state_url)
    workspace_budgets = SlackEditBudgets(lambda: store)
    try:
        budget = workspace_budgets.of(WORKSPACE)
        assert workspace_budgets.of(WORKSPACE) is budget
        shared = state_url.startswith("unix://")
        assert isinstance(budget, SharedEditBudget) is shared
        assert isinstance(SlackEditBudgets(lambda: None).of(WORKSPACE), EditBudget)
    finally:
        await workspace_budgets.aclose()
        await store.aclose()


async def test_what_is_left_counts_the_leased_tokens_of_this_window_less_the_debt(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]]
) -> None:
    clock = Clock()
    budget = await budgets(clock)
    assert budget.left == 0  # nothing leased yet (what `GET /metrics` shows for an idle workspace)
    await budget.refill()
    assert budget.left == LEASE_SIZE
    assert budget.try_take()
    budget.spend()
    budget.spend()
    budget.spend()  # one more final edit than there were tokens: owed to the next lease
    assert budget.left == -1


async def test_an_idle_processs_first_answers_share_one_lease_round_for_their_placeholders(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]]
) -> None:
    budget = await budgets(Clock())
    assert not budget.try_take()  # nothing leased yet: the process was idle

    placeholders = await asyncio.gather(*(budget.take_soon() for _ in range(LEASE_SIZE + 4)))

    # One round leased LEASE_SIZE tokens for all of them (a round each would have leased the whole window).
    assert sum(placeholders) == LEASE_SIZE


async def test_with_the_windows_edits_spent_elsewhere_an_answer_gets_no_placeholder(
    budgets: Callable[[Clock], Awaitable[SharedEditBudget]]
) -> None:
    clock = Clock()
    other, budget = await budgets(clock), await budgets(clock)
    assert await take_all(other) == EDITS_PER_WINDOW
    assert not await budget.take_soon()  # the round finds the window full
    assert not await budget.take_soon()  # and so does the next
