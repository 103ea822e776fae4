"""The governance decision, on a real SQLite store: limits, concurrency, budget, access, admin settings.

Time is a clock the test moves (the store's expiry and the calendar windows read the same one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.errors import FailureKind
from bot.governance import Governor, Pass, Refusal
from bot.requests import CommandName, Origin
from bot.state import open_store
from bot.state.store import StateStore
from config.governance import GovernanceSettings, UseLimit, Window

ASK, IMAGINE = CommandName.ASK, CommandName.IMAGINE
ALICE = Origin(platform="slack", user_id="UALICE", channel_id="C1")
BOB = Origin(platform="slack", user_id="UBOB", channel_id="C1")


class Clock:
    def __init__(self, at: str) -> None:
        self.now = datetime.fromisoformat(at).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock("2026-12-06T22:45:00")


@pytest.fixture
async def store(tmp_path: Path, clock: Clock) -> AsyncIterator[StateStore]:
    opened = await open_store(f"sqlite:///{tmp_path}/bot.db", clock=clock)
    yield opened
    await opened.aclose()


def governor(store: StateStore, clock: Clock, **settings: object) -> Governor:
    governance = GovernanceSettings(**settings)  # type: ignore[arg-type]
    return Governor(store, governance, running_slot_s=300, clock=clock)


async def admitted(decision: Pass | Refusal) -> Pass:
    assert isinstance(decision, Pass), decision
    return decision


async def refused(decision: Pass | Refusal, reason: FailureKind) -> str:
    assert isinstance(decision, Refusal) and decision.reason is reason, decision
    return decision.message


async def test_a_daily_limit_refuses_the_next_command_and_says_when_it_is_possible(
    store: StateStore, clock: Clock
) -> None:
    gov = governor(store, clock, limits={"ask": UseLimit(2, Window.DAY)})
    for _ in range(2):
        await gov.release(await admitted(await gov.admit(ALICE, ASK)), reached_replicate=True)
    message = await refused(await gov.admit(ALICE, ASK), FailureKind.LIMIT_REACHED)
    assert message == (
        "You've used your 2 /ask commands for today. The next one is possible at 00:00 UTC (in 1 h 15 min)."
    )
    await admitted(await gov.admit(BOB, ASK))  # per user
    await admitted(await gov.admit(ALICE, IMAGINE))  # per command
    clock.advance(75 * 60)  # midnight UTC
    await admitted(await gov.admit(ALICE, ASK))


async def test_an_hourly_limit_resets_at_the_top_of_the_hour(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, limits={"imagine": UseLimit(1, Window.HOUR)})
    await gov.release(await admitted(await gov.admit(ALICE, IMAGINE)), reached_replicate=True)
    message = await refused(await gov.admit(ALICE, IMAGINE), FailureKind.LIMIT_REACHED)
    assert "1 /imagine command for this hour" in message and "at 23:00 UTC (in 15 min)" in message
    clock.advance(15 * 60)
    await admitted(await gov.admit(ALICE, IMAGINE))


async def test_a_command_that_never_reached_replicate_gives_its_use_back(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, limits={"ask": UseLimit(1, Window.DAY)})
    await gov.release(await admitted(await gov.admit(ALICE, ASK)), reached_replicate=False)
    await gov.release(await admitted(await gov.admit(ALICE, ASK)), reached_replicate=True)
    await refused(await gov.admit(ALICE, ASK), FailureKind.LIMIT_REACHED)


async def test_running_and_waiting_commands_are_capped_per_user(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, max_concurrent_per_user=2)
    first = await admitted(await gov.admit(ALICE, ASK))
    await admitted(await gov.admit(ALICE, IMAGINE))
    message = await refused(await gov.admit(ALICE, ASK), FailureKind.TOO_MANY_RUNNING)
    assert "2 commands running or waiting" in message and "when one of them has finished" in message
    await admitted(await gov.admit(BOB, ASK))
    await gov.release(first, reached_replicate=True)
    await admitted(await gov.admit(ALICE, ASK))


async def test_fifty_commands_at_once_against_a_limit_of_ten_take_exactly_ten(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, limits={"ask": UseLimit(10, Window.DAY)}, max_concurrent_per_user=100)
    decisions = await asyncio.gather(*(gov.admit(ALICE, ASK) for _ in range(50)))
    assert sum(isinstance(decision, Pass) for decision in decisions) == 10
    assert {d.reason for d in decisions if isinstance(d, Refusal)} == {FailureKind.LIMIT_REACHED}


async def test_the_budget_refuses_new_commands_once_spent_and_tells_the_operator_once(
    store: StateStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    gov = governor(store, clock, daily_budget_usd=0.01)
    ticket = await admitted(await gov.admit(ALICE, IMAGINE))
    await gov.release(ticket, reached_replicate=True)
    await gov.record_spend(ticket, 10_000)
    with caplog.at_level(logging.WARNING, logger="bot.governance"):
        message = await refused(await gov.admit(BOB, ASK), FailureKind.BUDGET_REACHED)
        await refused(await gov.admit(ALICE, ASK), FailureKind.BUDGET_REACHED)
    assert "today's budget" in message and "at 00:00 UTC (in 1 h 15 min)" in message
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "DAILY_BUDGET_USD reached: $0.01 spent" in warnings[0]
    clock.advance(75 * 60)
    await admitted(await gov.admit(BOB, ASK))


async def test_another_processes_spend_counts_within_a_second(store: StateStore, clock: Clock) -> None:
    ours, theirs = governor(store, clock, daily_budget_usd=0.01), governor(store, clock, daily_budget_usd=0.01)
    await admitted(await ours.admit(ALICE, ASK))  # reads today's spend: nothing yet
    await theirs.record_spend(await admitted(await theirs.admit(BOB, ASK)), 20_000)
    clock.advance(1.5)
    await refused(await ours.admit(ALICE, ASK), FailureKind.BUDGET_REACHED)


async def test_allowed_channels_take_bare_or_platform_qualified_ids(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, allowed_channels=frozenset({"C1", "discord:42"}))
    await admitted(await gov.admit(ALICE, ASK))
    await admitted(await gov.admit(Origin(platform="discord", user_id="7", channel_id="42"), ASK))
    message = await refused(await gov.admit(Origin(platform="slack", user_id="U", channel_id="C2"), ASK),
                            FailureKind.CHANNEL_NOT_ALLOWED)
    assert "doesn't answer in this channel" in message


async def test_pause_and_block_refuse_politely_and_outlast_a_restart(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path}/restart.db"
    before = await open_store(url, clock=clock)
    try:
        gov = governor(before, clock)
        await gov.set_blocked("slack:UBOB", True)
        await refused(await gov.admit(BOB, ASK), FailureKind.BLOCKED)
        await gov.set_paused(True)
        assert "paused" in await refused(await gov.admit(ALICE, ASK), FailureKind.PAUSED)
    finally:
        await before.aclose()
    after_restart = await open_store(url, clock=clock)
    try:
        gov = governor(after_restart, clock)
        await refused(await gov.admit(ALICE, ASK), FailureKind.PAUSED)
        await gov.set_paused(False)
        await refused(await gov.admit(BOB, ASK), FailureKind.BLOCKED)
        await gov.set_blocked("slack:UBOB", False)
        await admitted(await gov.admit(BOB, ASK))
    finally:
        await after_restart.aclose()


async def test_admin_limits_win_over_the_environment_until_reset(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, limits={"ask": UseLimit(5, Window.DAY)}, max_concurrent_per_user=100)
    await gov.set_limit("slack:UALICE", ASK, UseLimit(1, Window.DAY))
    await admitted(await gov.admit(ALICE, ASK))
    await refused(await gov.admit(ALICE, ASK), FailureKind.LIMIT_REACHED)
    assert await gov.limit_of("slack:UALICE", ASK) == UseLimit(1, Window.DAY)
    await gov.set_limit(None, ASK, None)  # everyone's default: no limit; Alice's own still holds
    await refused(await gov.admit(ALICE, ASK), FailureKind.LIMIT_REACHED)
    for _ in range(6):
        await admitted(await gov.admit(BOB, ASK))
    await gov.reset_limit("slack:UALICE", ASK)
    await admitted(await gov.admit(ALICE, ASK))  # now under the stored default: none
    await gov.reset_limit(None, ASK)
    assert await gov.limit_of(None, ASK) == UseLimit(5, Window.DAY)
    await refused(await gov.admit(BOB, ASK), FailureKind.LIMIT_REACHED)


async def test_usage_shows_each_users_use_spend_and_the_top_users(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, limits={"imagine": UseLimit(3, Window.DAY)}, daily_budget_usd=5.0)
    for origin, command, cost in ((ALICE, IMAGINE, 3_000), (ALICE, ASK, 100), (BOB, ASK, 50)):
        ticket = await admitted(await gov.admit(origin, command))
        await gov.release(ticket, reached_replicate=True)
        await gov.record_spend(ticket, cost)
    usage = await gov.usage_of("slack:UALICE")
    by_command = {use.command: use for use in usage.commands}
    assert (by_command[IMAGINE].today, by_command[IMAGINE].limit, by_command[ASK].limit) == (
        1, UseLimit(3, Window.DAY), None)
    assert (usage.running, usage.spent_micro_usd) == (0, 3_100)
    day = await gov.today()
    assert day.spent_micro_usd == 3_150 and day.budget_usd == 5.0
    assert day.top == (("slack:UALICE", 3_100, 2), ("slack:UBOB", 50, 1))


def test_admins_are_listed_granted_by_their_platform_or_on_the_console(store: StateStore, clock: Clock) -> None:
    gov = governor(store, clock, admin_users=frozenset({"slack:UALICE"}))
    assert gov.is_admin(ALICE) and not gov.is_admin(BOB)
    assert gov.is_admin(Origin(platform="discord", user_id="9", channel_id="1", platform_admin=True))
    assert gov.is_admin(Origin(platform="console", user_id="you", channel_id="terminal"))
    assert not gov.is_admin(Origin(platform="discord", user_id="UALICE", channel_id="1"))
