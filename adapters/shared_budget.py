"""Slack's `chat.update` budget for a workspace, shared by every process of the bot through the state store.

`chat.update` is Tier 3: about 50 calls a minute per workspace for the whole app
(https://docs.slack.dev/apis/web-api/rate-limits), so two processes with a bucket each would spend it twice.
Here the tokens are counted in the store, per workspace and `WINDOW_S` window (a `Quota` of `EDITS_PER_WINDOW`):
any 60 s overlaps at most `WINDOWS_PER_MINUTE + 1` windows, so all processes together stay within
`CHAT_UPDATE_PER_MINUTE` in any sliding minute. A process leases a few tokens at a time in the background and
spends them without a round trip (`try_take` runs per edit, synchronously); a leased token is good only in its
own window. A 429 seen by one process pauses every process's edits: the pause is a store value with its TTL,
read with each lease.

With SQLite (one process) the in-process `EditBudget` does the same job without any store traffic.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from adapters import slack_format as fmt
from adapters.rendering import EditBudget
from bot.state.sqlite import SqliteStore
from bot.state.store import Quota, StateStore, StateStoreError
from bot.tasks import BackgroundTasks

log = logging.getLogger(__name__)

WINDOW_S = 15.0  # the store counts a workspace's edits per window of this many seconds
WINDOWS_PER_MINUTE = round(60 / WINDOW_S)
EDITS_PER_WINDOW = fmt.CHAT_UPDATE_PER_MINUTE // (WINDOWS_PER_MINUTE + 1)  # 10: at most 50 in any sliding minute
LEASE_SIZE = 3  # tokens a process holds at once: few round trips, and few left unused when it goes quiet
LEASE_WHEN_BELOW = 2  # fewer tokens than this left: lease again at once
LEASE_AHEAD_S = 1.0  # in a window's last second, tokens of the next window are leased too (no gap at the turn)
POLL_S = 0.5  # while edits are wanted: how often the lease is topped up and the shared pause read
LEASE_WAIT_S = 0.25  # an idle process's first placeholder waits this long at most for a lease round
KEEP_LEASING_S = 30.0  # the background lease stops this long after the last edit was asked for
KEEP_COUNTER_S = 60.0  # a window's counter outlives its window by this much (then the store forgets it)


class SharedEditBudget(EditBudget):
    """An `EditBudget` (the renderer's interface) whose tokens are leased from the state store, shared by every
    process on it; its bucket is the store's, so none of `EditBudget`'s own state is used."""

    def __init__(
        self, store: StateStore, workspace_id: str, tasks: BackgroundTasks, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._workspace = workspace_id
        self._tasks = tasks
        self._clock = clock
        self._leased: dict[int, int] = {}  # window number -> tokens leased and not spent yet
        self._full: set[int] = set()  # windows the store has no token left in
        self._debt = 0  # spent without a leased token: paid from the next lease
        self._paused_until = 0.0  # Unix time; this process's 429s and every other process's
        self._wanted_at = -math.inf
        self._wake = asyncio.Event()
        self._leasing: asyncio.Task[None] | None = None
        self._one_round = asyncio.Lock()  # rounds never overlap: each sees what the last one leased
        self._first_lease: asyncio.Task[None] | None = None  # the round an idle process's answers wait for
        self._pause_writes: set[asyncio.Task[None]] = set()

    # --- EditBudget's interface: synchronous, no store round trip ------------------------------------------

    def try_take(self) -> bool:
        self._want()
        return not self.paused and self._take_leased()

    async def take_soon(self) -> bool:
        """`try_take`; with no token leased yet (this process was idle), after one lease round (shared by every
        answer asking meanwhile, `LEASE_WAIT_S` at most): the first answers after a quiet spell still get their
        placeholder."""
        if self.try_take():
            return True
        if self.paused or self._window() in self._full:
            return False
        if self._first_lease is None or self._first_lease.done():
            self._first_lease = self._tasks.spawn(self.refill(), name=f"slack-edit-lease-{self._workspace}")
        try:
            async with asyncio.timeout(LEASE_WAIT_S):
                await asyncio.shield(self._first_lease)
        except TimeoutError:
            return False  # the round goes on; later answers find its tokens
        except StateStoreError as error:
            log.warning("Slack: no edit lease for %s (%s); answering without a placeholder", self._workspace, error)
            return False
        return self.try_take()

    def spend(self) -> None:
        """A final edit: counted always (the renderer asks only while `exhausted` is False)."""
        self._want()
        if not self._take_leased():
            self._debt += 1

    def pause(self, seconds: float) -> None:
        """Slack answered 429: no process edits in this workspace for `seconds` (written to the store)."""
        until = self._clock() + seconds
        if until <= self._paused_until:
            return
        self._paused_until = until
        write = self._tasks.spawn(self._share_pause(until), name=f"slack-edit-pause-{self._workspace}")
        self._pause_writes.add(write)
        write.add_done_callback(self._pause_writes.discard)

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    @property
    def exhausted(self) -> bool:
        """No leased token left in this window (or paused): a finished answer is posted anew, not edited."""
        self._want()
        return self.paused or self._leased.get(self._window(), 0) < 1

    @property
    def left(self) -> float:
        """Edits this process may make now without asking the store (read by the metrics): this window's leased
        tokens, less what final edits spent without one."""
        return float(self._leased.get(self._window(), 0) - self._debt)

    # --- leasing ------------------------------------------------------------------------------------------

    async def refill(self) -> None:
        """One lease round: top up this window's tokens (and the next one's, near its start) and read the pause."""
        async with self._one_round:
            await self._lease_round()

    async def _lease_round(self) -> None:
        now = self._clock()
        window = self._window(now)
        self._leased = {w: n for w, n in self._leased.items() if w >= window}
        self._full = {w for w in self._full if w >= window}
        targets = [window] + ([window + 1] if (window + 1) * WINDOW_S - now < LEASE_AHEAD_S else [])
        wanted = [(w, LEASE_SIZE - self._leased.get(w, 0) + (self._debt if w == window else 0))
                  for w in targets if w not in self._full and self._leased.get(w, 0) < LEASE_WHEN_BELOW]
        takes = [self._take_one(w) for w, count in wanted for _ in range(count)]
        # One round trip's worth: the takes and the pause read go out together.
        paused, *taken = await asyncio.gather(self._store.get_value(self._pause_key()), *takes)
        for w, got in zip([w for w, count in wanted for _ in range(count)], taken, strict=True):
            if not got:
                self._full.add(w)
            elif w == window and self._debt:
                self._debt -= 1
            else:
                self._leased[w] = self._leased.get(w, 0) + 1
        if paused is not None:
            self._paused_until = max(self._paused_until, float(paused))

    async def aclose(self) -> None:
        """Stop leasing; a pause being shared still reaches the store (one write, before the store closes)."""
        if self._leasing is not None:
            self._leasing.cancel()
            await asyncio.gather(self._leasing, return_exceptions=True)
        if self._pause_writes:
            await asyncio.wait(set(self._pause_writes))

    def _take_leased(self) -> bool:
        window = self._window()
        left = self._leased.get(window, 0)
        if left < LEASE_WHEN_BELOW:
            self._wake.set()
        if left < 1:
            return False
        self._leased[window] = left - 1
        return True

    def _want(self) -> None:
        """An edit was asked for: keep the lease topped up for a while (starting it if it had stopped)."""
        self._wanted_at = self._clock()
        if self._leasing is None:
            self._wake.set()
            self._leasing = self._tasks.spawn(self._keep_leased(), name=f"slack-edit-lease-{self._workspace}")

    async def _keep_leased(self) -> None:
        try:
            while self._clock() - self._wanted_at < KEEP_LEASING_S:
                self._wake.clear()
                try:
                    await self.refill()
                except StateStoreError as error:  # edits wait (finished answers are posted anew) until it answers
                    log.warning("Slack: could not lease edits for workspace %s (%s)", self._workspace, error)
                try:
                    async with asyncio.timeout(POLL_S):  # (wait_for may swallow a cancel in Python 3.11)
                        await self._wake.wait()
                except TimeoutError:
                    pass  # the poll: the pause may have been set by another process
        finally:
            self._leasing = None

    async def _take_one(self, window: int) -> bool:
        key = f"slack-edits:{self._workspace}:{window}"
        expires_at = (window + 1) * WINDOW_S + KEEP_COUNTER_S
        return await self._store.take([Quota(key, EDITS_PER_WINDOW, expires_at)]) is None

    async def _share_pause(self, until: float) -> None:
        try:
            await self._store.put_value(self._pause_key(), repr(until), until)
        except StateStoreError as error:
            log.warning("Slack: could not share an edit pause for workspace %s (%s)", self._workspace, error)

    def _pause_key(self) -> str:
        return f"slack-edits-paused:{self._workspace}"

    def _window(self, now: float | None = None) -> int:
        return int((self._clock() if now is None else now) // WINDOW_S)


class SlackEditBudgets:
    """One edit budget per workspace: shared through the state store when several processes may run (Redis),
    else this process's own `EditBudget`."""

    def __init__(self, shared_state: Callable[[], StateStore | None]) -> None:
        self._shared_state = shared_state
        self._budgets: dict[str, EditBudget] = {}
        self._tasks = BackgroundTasks("slack edit budget")

    def of(self, workspace_id: str) -> EditBudget:
        budget = self._budgets.get(workspace_id)
        if budget is None:
            store = self._shared_state()
            if store is None or isinstance(store, SqliteStore):
                budget = EditBudget(fmt.INTERIM_EDITS_PER_MINUTE, fmt.INTERIM_EDIT_BURST)
            else:
                budget = SharedEditBudget(store, workspace_id, self._tasks)
            self._budgets[workspace_id] = budget
        return budget

    def left(self) -> dict[str, float]:
        """Interim edits each workspace may still make now (as this process sees it)."""
        return {workspace_id: budget.left for workspace_id, budget in self._budgets.items()}

    async def aclose(self) -> None:
        """Stop leasing (before the store closes)."""
        for budget in self._budgets.values():
            if isinstance(budget, SharedEditBudget):
                await budget.aclose()
        await self._tasks.cancel_all()
