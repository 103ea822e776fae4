"""Small measuring tools shared by the harness and the instrumented bot: percentiles, loop lag, RSS, edit rates.

Why here and not in `bot/`: nothing in the product needs them; they only make the benchmark's numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Sequence

LAG_PROBE_INTERVAL_S = 0.010  # the probe sleeps this long and records how late it wakes up


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (`fraction` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def max_events_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """The most events inside any half-open window [t, t + window_s): "edits per second" of one message."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def close_edits(edits: Sequence[tuple[float, bool]], window_s: float = 1.0) -> tuple[int, int]:
    """Of one message's edits `(time, is_final)`: how many came less than `window_s` after the previous
    one, and how many of those were the final edit (which the renderer sends without waiting)."""
    ordered = sorted(edits)
    close = [later for earlier, later in itertools.pairwise(ordered) if later[0] - earlier[0] < window_s]
    return len(close), sum(1 for _, is_final in close if is_final)


def min_gap(times: Sequence[float]) -> float | None:
    """The shortest interval between consecutive events (None for fewer than two)."""
    ordered = sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    return min(gaps) if gaps else None


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of a process (VmRSS), in MiB; None if it is gone."""
    return _status_kb(pid, "VmRSS")


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """Peak resident memory so far (VmHWM), in MiB."""
    return _status_kb(pid, "VmHWM")


def cpu_seconds(pid: int | str = "self") -> float | None:
    """User + system CPU time a process has used so far (/proc/<pid>/stat), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int | str, field: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class LoopLagProbe:
    """Sleeps `LAG_PROBE_INTERVAL_S` over and over and records how late each wake-up is (seconds).

    A late wake-up means something held the event loop: every ack, edit and token waiting meanwhile
    was delayed by as much.
    """

    def __init__(self, interval_s: float = LAG_PROBE_INTERVAL_S) -> None:
        self._interval_s = interval_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def reset(self) -> None:
        self.samples = []

    def summary(self) -> dict[str, float | int | None]:
        """Lag percentiles in milliseconds."""
        return {
            "samples": len(self.samples),
            "p50_ms": _ms(percentile(self.samples, 0.50)),
            "p99_ms": _ms(percentile(self.samples, 0.99)),
            "max_ms": _ms(max(self.samples) if self.samples else None),
        }

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self._interval_s)
            self.samples.append(max(0.0, time.perf_counter() - before - self._interval_s))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)
