"""A global cap on predictions running at once, with a bounded queue that tells each waiter its place.

Why a cap: every running prediction holds connections (its stream or wait, then its downloads) and
Replicate's rate limits and bill; `MAX_CONCURRENT_PREDICTIONS` bounds them, and the Replicate clients'
pools are sized from it (`bot.factory`), so overload becomes a visible queue instead of pool timeouts. Why a bound on
the queue: past it, a command would wait minutes; refusing it at once, privately, is kinder, and
keeps a flood from costing the event loop (and every other command's 3 s acknowledgement) anything.

Cost per event, however long the queue: a release wakes only the waiter it admits; a waiter that
leaves is O(log n) (`WaitingLine`). Waiters learn their place on their own timer, at most every
`report_interval_s`, and only show it when it moved by a meaningful step.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from bot.waiting_line import Place, WaitingLine

REPORT_INTERVAL_S = 2.0  # how often a waiter looks at its place; a chat edit per change would be too many
POSITION_STEP_DIVISOR = 10  # a new place is shown once it moved a tenth closer (every step below 20)
# A place promised by `reserve` and never taken (the adapter failed to acknowledge the command) lapses after
# this long. Slack and Discord both need the command acknowledged within 3 s, well inside it.
RESERVATION_HOLD_S = 10.0


class AdmissionClosed(Exception):
    """The queue was closed (shutdown): nobody waiting is admitted any more."""


class _Waiter(Place):
    __slots__ = ("granted", "wake")

    def __init__(self) -> None:
        super().__init__()
        self.granted = False
        self.wake = asyncio.Event()


class AdmissionQueue:
    """FIFO admission to at most `capacity` concurrent slots, with at most `max_queued` waiting (None: no bound)."""

    def __init__(
        self,
        capacity: int,
        *,
        max_queued: int | None = None,
        report_interval_s: float = REPORT_INTERVAL_S,
        reservation_hold_s: float = RESERVATION_HOLD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if max_queued is not None and max_queued < 0:
            raise ValueError("max_queued must not be negative")
        self.capacity = capacity
        self.max_queued = max_queued
        self._report_interval_s = report_interval_s
        self._hold_s = reservation_hold_s
        self._clock = clock
        self._in_use = 0
        self._line = WaitingLine()
        self._reservations: OrderedDict[str, float] = OrderedDict()  # key -> lapses at; oldest first
        self._closed = False

    @property
    def in_use(self) -> int:
        """Slots held: commands admitted and running."""
        return self._in_use

    @property
    def queued(self) -> int:
        """Commands waiting in line for a slot."""
        return len(self._line)

    @property
    def reserved(self) -> int:
        """Places promised by `reserve` whose command has not reached `wait_turn` yet."""
        self._lapse_reservations()
        return len(self._reservations)

    @property
    def waiting_ahead_of_newcomer(self) -> int:
        """How many would wait ahead of a command arriving now: those in line and those about to join it."""
        return max(self.queued, self._in_use + self.queued + self.reserved - self.capacity)

    def reserve(self, key: str) -> bool:
        """Hold a place (a slot or a spot in line) for the command `key`; False when the queue is full.

        Reserving is synchronous, so a burst of commands cannot all see the same free room. `wait_turn(key)`
        takes the place up; `withdraw(key)` gives it back; untaken, it lapses after `reservation_hold_s`.
        """
        if self._closed:
            return False
        if self.max_queued is not None:
            taken = self._in_use + self.queued + self.reserved
            if taken >= self.capacity + self.max_queued:
                return False
        self._reservations[key] = self._clock() + self._hold_s
        return True

    def withdraw(self, key: str) -> None:
        """Give back the place held for `key`, if it is still held (the command will never run)."""
        self._reservations.pop(key, None)

    def _lapse_reservations(self) -> None:
        now = self._clock()
        while self._reservations:
            key, lapses_at = next(iter(self._reservations.items()))
            if lapses_at > now:
                return
            del self._reservations[key]

    async def wait_turn(self, key: str | None = None) -> AsyncIterator[int]:
        """Yield this caller's queue position (1 = next) when it changes; return once admitted.

        The caller then owns a slot and must `release()` it. Nothing is yielded when a slot is free.
        Raises `AdmissionClosed` once `close()` was called, at once for those waiting.
        """
        if key is not None:
            self._reservations.pop(key, None)  # the place is taken up now, in the same step
        if self._closed:
            raise AdmissionClosed()
        if self._in_use < self.capacity and not self._line:
            self._in_use += 1
            return
        waiter = _Waiter()
        self._line.join(waiter)
        loop = asyncio.get_running_loop()
        try:
            shown = self._line.position(waiter)
            yield shown
            while True:
                # Woken by the release that admits it, by close(), or by its own timer to look at its place.
                timer = loop.call_later(self._report_interval_s, waiter.wake.set)
                try:
                    await waiter.wake.wait()
                finally:
                    timer.cancel()
                waiter.wake.clear()
                if self._closed:
                    raise AdmissionClosed()
                if waiter.granted:
                    return
                position = self._line.position(waiter)
                if shown - position >= max(1, shown // POSITION_STEP_DIVISOR):
                    shown = position
                    yield position
        except BaseException:
            if waiter.granted:
                self.release()
            else:
                self._line.leave(waiter)
            raise

    def release(self) -> None:
        """Hand the slot to the next waiter (waking only that one), or free it."""
        waiter = self._line.pop_front()
        if waiter is None:
            self._in_use -= 1
            return
        assert isinstance(waiter, _Waiter)
        waiter.granted = True
        waiter.wake.set()

    def close(self) -> None:
        """Admit nobody from now on: every waiter ends with `AdmissionClosed` now, and a freed slot stays free."""
        self._closed = True
        self._reservations.clear()
        for waiter in self._line.drain():
            assert isinstance(waiter, _Waiter)
            waiter.wake.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A slot without position reports, for callers that don't show a queue."""
        async for _ in self.wait_turn():
            pass
        try:
            yield
        finally:
            self.release()
