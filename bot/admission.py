"""A global cap on predictions in flight, with a queue that knows each waiter's position.

Why: the replicate client's pool holds 100 connections and fails the 101st with `PoolTimeout`
after 5 s (NOTES). Capping below that turns overload into a visible queue instead of errors.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Waiter:
    __slots__ = ("granted", "changed")

    def __init__(self) -> None:
        self.granted = False
        self.changed = asyncio.Event()


class AdmissionQueue:
    """FIFO admission to at most `capacity` concurrent slots."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def wait_turn(self) -> AsyncIterator[int]:
        """Yield this caller's queue position (1 = next) each time it changes; return once admitted.

        The caller then owns a slot and must `release()` it. Nothing is yielded when a slot is free.
        """
        if self._in_use < self.capacity and not self._waiters:
            self._in_use += 1
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            while True:
                yield self._waiters.index(waiter) + 1
                # `changed` stays set if it fired while the caller handled the position above.
                await waiter.changed.wait()
                waiter.changed.clear()
                if waiter.granted:
                    return
        except BaseException:
            if waiter.granted:
                self.release()
            else:
                self._waiters.remove(waiter)
                self._notify_positions()
            raise

    def release(self) -> None:
        """Hand the slot to the next waiter, or free it."""
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.changed.set()
            self._notify_positions()
        else:
            self._in_use -= 1

    def _notify_positions(self) -> None:
        for waiter in self._waiters:
            waiter.changed.set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """A slot without position reports, for callers that don't show a queue."""
        async for _ in self.wait_turn():
            pass
        try:
            yield
        finally:
            self.release()
