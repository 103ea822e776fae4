"""The measuring steps every platform's run shares: warm up, read idle memory, load, watch, read the bot's lag.

Why shared: the Slack and Discord runs (and the baseline) must be measured the same way for their
numbers to be comparable; only "send a command" and "is command i answered" differ per platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.bot_process import BotProcess
from bench.stats import LoopLagProbe, cpu_seconds

WATCH_INTERVAL_S = 0.02  # how often the harness checks for answers (measurements use the fakes' timestamps)


@dataclass
class LoadReading:
    """What the harness saw of one load: when each command went out, and the bot process's own numbers."""

    sent_at: dict[int, float] = field(default_factory=dict)  # command index → time.monotonic()
    started_at: float = 0.0
    finished_at: float = 0.0
    complete: bool = False
    idle_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    bot_lag: dict[str, Any] | None = None  # LoopLagProbe.summary() of the bot (None for the baseline)
    harness_lag: dict[str, Any] = field(default_factory=dict)
    bot_cpu_s: float | None = None  # CPU the bot process used from the first command to the last answer


async def run_load(
    bot: BotProcess,
    n: int,
    send: Callable[[int], Awaitable[None]],
    answered: Callable[[], int],
    timeout_s: float,
    *,
    instrumented: bool,
) -> LoadReading:
    """Send commands 0..n-1 at once, then wait until `answered()` reaches n (or `timeout_s` passes)."""
    reading = LoadReading()
    reading.idle_rss_mb = bot.rss_mb()
    cpu_before = cpu_seconds(bot.pid)
    harness_probe = LoopLagProbe()
    harness_probe.start()
    if instrumented:
        await bot.request("reset")
    try:
        reading.started_at = time.monotonic()

        async def send_one(index: int) -> None:
            reading.sent_at[index] = time.monotonic()
            await send(index)

        await asyncio.gather(*(send_one(index) for index in range(n)))
        deadline = reading.started_at + timeout_s
        # `answered` counts what the fake servers recorded; they have no event to await, so the harness polls
        # (the measurements themselves use the fakes' timestamps, not the time of this poll).
        while answered() < n and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(WATCH_INTERVAL_S)
        reading.finished_at = time.monotonic()
        cpu_after = cpu_seconds(bot.pid)
        if cpu_before is not None and cpu_after is not None:
            reading.bot_cpu_s = cpu_after - cpu_before
        reading.complete = answered() >= n
    finally:
        await harness_probe.stop()
    reading.harness_lag = harness_probe.summary()
    reading.peak_rss_mb = bot.peak_rss_mb()  # VmHWM: the kernel's exact peak, N in flight included
    if instrumented:
        stats = await bot.request("stats")
        reading.bot_lag = stats.get("lag")
    return reading


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` (cheap) until true; the fakes' own waiters are per-change and would cost O(N) each."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f}s")
        await asyncio.sleep(WATCH_INTERVAL_S)
