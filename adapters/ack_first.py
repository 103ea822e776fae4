"""Acknowledgements before answers: under a burst, no command's answer delays another's acknowledgement.

The platforms give 3 s for the acknowledgement and nothing after it is as urgent. An answer's first steps (state
store writes, the create, the thread's first post) share the event loop with the commands still arriving, so
each started answer pushes back the acks of those behind it: with 100 commands arriving together, the last acks
waited 115–170 ms behind the first answers instead of about 30 ms (`bin/bench`, two instances).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

MAX_ANSWER_WAIT_S = 0.25  # a flood that never pauses still has its answers started this soon


class AcksFirst:
    """Counts the deliveries still owed an acknowledgement; answers start once there are none."""

    def __init__(self, max_wait_s: float = MAX_ANSWER_WAIT_S) -> None:
        self._max_wait_s = max_wait_s
        self._owed = 0
        self._none_owed = asyncio.Event()
        self._none_owed.set()

    @contextlib.contextmanager
    def owed(self) -> Iterator[None]:
        """Around a delivery's handling, until it is acknowledged (or refused, or dropped)."""
        self._owed += 1
        self._none_owed.clear()
        try:
            yield
        finally:
            self._owed -= 1
            if not self._owed:
                self._none_owed.set()

    async def answer(self, start: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """`start()` run once no acknowledgement is owed, or after `max_wait_s` at most."""
        if not self._none_owed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._max_wait_s):
                    await self._none_owed.wait()
        await start()
