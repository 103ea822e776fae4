"""What the bot keeps between commands and across restarts, behind one small async interface.

Two implementations (`bot.state.sqlite`, the default, nothing to install; `bot.state.redis`, for several
processes) pass the same contract tests. Every method is atomic on its own; none blocks the event loop.
Keys are plain strings chosen by the caller (`bot.governance`, `bot.inflight` name them); times are Unix seconds.

Retention is the caller's policy, expressed in `expires_at`: a day's counters, for instance, are given an
`expires_at` RETENTION_DAYS past the end of that day. Expired entries are invisible at once; SQLite deletes
them in `purge_expired()`, Redis by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class StateStoreError(Exception):
    """The store cannot be opened or used: unreachable, unwritable, or written by a newer bot.

    Its str() is one line for the operator (no credentials); the cause is kept as `__cause__`.
    """


@dataclass(frozen=True)
class Quota:
    """A counter that may hold at most `limit` units; it is forgotten at `expires_at` (the end of its window)."""

    key: str
    limit: int
    expires_at: float


class StateStore(Protocol):
    async def take(self, quotas: Sequence[Quota]) -> Quota | None:
        """Add one unit to every quota if each is below its limit, all or nothing, and return None; else change
        nothing and return the first quota that is full. A quota already stored keeps the later of its own and
        the given `expires_at`."""

    async def give_back(self, keys: Sequence[str]) -> None:
        """Remove one unit from each counter (never below zero): a command that never reached Replicate."""

    async def count(self, key: str) -> int:
        """A counter's units now (0 when it is missing or expired)."""

    async def add_ranked(self, board: str, member: str, amount: int, expires_at: float) -> None:
        """Add `amount` to `member`'s score on `board` (and to the board's total); the board is forgotten at
        `expires_at` (the later of the stored and the given)."""

    async def top(self, board: str, limit: int) -> list[tuple[str, int]]:
        """The `limit` highest scores on `board`, highest first (ties in member order)."""

    async def score(self, board: str, member: str) -> int:
        """One member's score on `board` (0 when absent)."""

    async def total(self, board: str) -> int:
        """The sum of every score on `board` (0 when absent)."""

    async def get_settings(self, prefix: str = "") -> Mapping[str, str]:
        """Every setting whose name starts with `prefix`."""

    async def put_setting(self, name: str, value: str | None) -> None:
        """Set a setting; `None` deletes it. Settings never expire."""

    # Values, claims and lists (conversations, their links to platform threads and messages, delivery keys).

    async def put_value(self, key: str, value: str, expires_at: float) -> None:
        """Set `key` to `value`, forgotten at `expires_at` (this write's, not the later of two)."""

    async def get_value(self, key: str) -> str | None:
        """The value of `key` (None when missing or expired)."""

    async def claim(self, key: str, expires_at: float) -> bool:
        """True for the first caller only (across processes), until `expires_at`: a delivery taken once."""

    async def append_item(self, key: str, item: str, expires_at: float) -> int:
        """Append `item` to the list at `key` (created if missing) and return its new length; the list is
        forgotten at `expires_at` (the later of the stored and the given)."""

    async def items(self, key: str) -> list[str]:
        """Every item of the list at `key`, oldest first (empty when missing or expired)."""

    # Entries: small keyed collections listed whole (the commands in flight, `bot.inflight`). They never expire: each
    # is deleted by whoever finished with it.

    async def put_entry(self, collection: str, key: str, value: str) -> None:
        """Set entry `key` of `collection` to `value` (created or replaced)."""

    async def get_entry(self, collection: str, key: str) -> str | None:
        """Entry `key` of `collection` (None when missing)."""

    async def delete_entry(self, collection: str, key: str) -> bool:
        """Delete entry `key` of `collection`; True if it was there (of racing deleters, one sees True)."""

    async def entries(self, collection: str) -> Mapping[str, str]:
        """Every entry of `collection`, by key (empty when none)."""

    async def purge_expired(self) -> int:
        """Delete what has expired; returns how many entries went (Redis expires keys itself: 0)."""

    async def aclose(self) -> None:
        """Release the connection (and the SQLite worker thread)."""

