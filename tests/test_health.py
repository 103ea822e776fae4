"""`adapters.health.HealthMonitor`: unhealthy only after a connection stays down past the window, counted afresh
after every reconnect; the report says whether the core still accepts commands.

The HTTP side (`GET /healthz` on the running service, real Slack and Discord connections) is tested in
tests/test_lifecycle.py; these tests drive the monitor's window with a connection the test turns on and off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.core import CommandCore
from bot.factory import create_core
from service.health import HealthMonitor
from tests.bot_harness import started_fakes
from tests.harness_common import bot_settings

WINDOW_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Connection:
    """A connection probe the test switches, as an adapter's `is_connected` would answer."""

    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> bool:
        return self.up


@pytest.fixture
async def core() -> AsyncIterator[CommandCore]:
    async with started_fakes(slack=False, discord=False) as (replicate, _, _):
        resources = create_core(bot_settings(replicate, None, None))
        try:
            yield resources.core
        finally:
            await resources.aclose()


async def test_a_reconnect_starts_the_window_afresh(core: CommandCore) -> None:
    clock, slack = Clock(), Connection()
    monitor = HealthMonitor(core, {"slack": slack}, reconnect_window_s=WINDOW_S, clock=clock)

    slack.up = False
    await monitor.report()  # first seen down at 1000
    clock.now += 20
    slack.up = True
    assert (await monitor.report())[1]["adapters"]["slack"] == {"connected": True}
    clock.now += 20
    slack.up = False  # down again 40 s after the first drop, but only just now
    healthy, body = await monitor.report()

    assert healthy and body["adapters"]["slack"] == {"connected": False, "down_for_s": 0.0}
    clock.now += 20
    assert (await monitor.report())[0]


async def test_down_for_exactly_the_window_is_still_healthy_and_a_moment_longer_is_not(core: CommandCore) -> None:
    clock, discord = Clock(), Connection()
    monitor = HealthMonitor(core, {"discord": discord}, reconnect_window_s=WINDOW_S, clock=clock)
    discord.up = False
    await monitor.report()

    clock.now += WINDOW_S
    assert (await monitor.report())[0]
    clock.now += 0.1
    healthy, body = await monitor.report()

    assert not healthy and body["status"] == "unhealthy"


async def test_the_report_says_when_the_core_no_longer_accepts_commands(core: CommandCore) -> None:
    monitor = HealthMonitor(core, {"slack": Connection()}, clock=Clock())
    assert (await monitor.report())[1]["accepting"] is True

    core.stop_accepting()  # shutting down: new commands get "restarting"
    healthy, body = await monitor.report()

    assert body["accepting"] is False
    assert healthy  # draining is not a reason to be restarted
