"""Predictions in flight survive the process running them: a survivor takes them up and delivers their answers.

Every `beat_interval` (a third of HEARTBEAT_TIMEOUT, so a missed beat or two never looks like death) this process
renews its heartbeat and looks in the journal (`bot.inflight`) for commands whose owner has none. Each one it takes
(one survivor per orphan: a claim in the store) is followed to its end on Replicate and its answer delivered by the
adapter of its platform where the dead process would have put it (`Adapter.resume`); a create the kill cut off
(no prediction id recorded) is looked for among Replicate's newest predictions first, and followed if found. An
orphan whose answer can go nowhere (no adapter for its platform here, no destination recorded, no prediction
found) is cancelled on Replicate instead. Either way it is settled like any command: running slot, spend, turn,
Again payload, log line, and its entry deleted.

With a store one process uses at a time (SQLite), whoever starts takes every entry left at once: the process before
it on that file is gone. So a prediction runs unwatched at most HEARTBEAT_TIMEOUT plus one interval (40 s by
default), or until the restart.

What remains possible: a process that posted an answer's first message and died before the message's id reached
the journal (a write right after the post) leaves it showing what was written so far, and the survivor writes the
answer into a new message beside it. A process that delivered an answer and died before deleting its entry (one
store call later) has it delivered again. On Slack and in a live Discord interaction that is an edit of the same
message to the same text; only an answer that had to go to a channel as a new message could show twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing

from adapters.base import Adapter
from bot.core import CommandCore
from bot.inflight import InFlight, Journal
from bot.replies import ReplyEvent
from bot.state.store import StateStoreError
from bot.tasks import BackgroundTasks

log = logging.getLogger(__name__)

BEATS_PER_TIMEOUT = 3


class Recovery:
    """The heartbeat of this process and the taking up of other processes' orphans, in one loop."""

    def __init__(
        self,
        core: CommandCore,
        journal: Journal,
        adapters: Sequence[Adapter],
        tasks: BackgroundTasks,
        *,
        takes_every_entry_at_start: bool,
    ) -> None:
        self._core = core
        self._journal = journal
        self._adapters = {adapter.name: adapter for adapter in adapters}
        self._tasks = tasks
        self._every_entry = takes_every_entry_at_start

    @property
    def beat_interval_s(self) -> float:
        return self._journal.heartbeat_s / BEATS_PER_TIMEOUT

    async def run(self) -> None:
        """Until cancelled (at shutdown); a failing store is logged and tried again at the next beat."""
        while True:
            try:
                await self._journal.beat()
                await self.scan(every_entry=self._every_entry)
                self._every_entry = False  # from now on, entries left by others are this process's peers'
            except StateStoreError as error:
                log.warning("Could not look for commands left in flight by a stopped process: %s", error)
            await asyncio.sleep(self.beat_interval_s)

    async def scan(self, *, every_entry: bool = False) -> int:
        """Take up the orphans found now; returns how many this process took."""
        taken = 0
        for entry in await self._journal.orphans(every_other=every_entry):
            if await self._journal.take(entry):
                taken += 1
                log.warning("Taking up command %s (prediction %s) from stopped process %s",
                            entry.request.request_id, entry.prediction_id or "never created", entry.owner)
                self._tasks.spawn(self._finish(entry), name=f"recover-{entry.request.request_id}")
        return taken

    async def _finish(self, entry: InFlight) -> None:
        request = entry.request
        adapter = self._adapters.get(request.origin.platform)
        if adapter is not None and entry.destination:
            entry = await self._core.find_prediction(entry)  # a create cut off by the kill may have made one
        if entry.prediction_id is None or adapter is None or not entry.destination:
            why = ("its create was cut off" if entry.prediction_id is None
                   else f"{request.origin.platform} is not served here" if adapter is None
                   else "its answer had no place yet")
            log.warning("Command %s cannot be delivered (%s): cancelling it on Replicate", request.request_id, why)
            await self._core.abandon(entry)
            return
        async with aclosing(self._core.resume(entry)) as events:
            # Its first event starts the follow-up: from then on, an adapter that leaves the rest unread (the answer
            # can go nowhere) closes a running prediction's frame, which cancels it on Replicate.
            first = await anext(events)
            async with aclosing(_after(first, events)) as rest:
                await adapter.resume(request, entry.destination, rest)


async def _after(first: ReplyEvent, rest: AsyncIterator[ReplyEvent]) -> AsyncGenerator[ReplyEvent, None]:
    yield first
    async for event in rest:
        yield event
