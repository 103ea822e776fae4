"""Forgetting on time: expired counters and day boards are deleted at start-up and every hour after.

Each entry carries its own expiry (a window's end, a day plus `RETENTION_DAYS`), and reads already ignore what
has expired; this only gives the space back. Redis expires keys itself, so there it deletes nothing.
"""

from __future__ import annotations

import asyncio
import logging

from bot.state.store import StateStore, StateStoreError

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0


async def purge_expired(store: StateStore) -> None:
    """One purge; a failing store is logged, never raised (the bot goes on; the next purge tries again)."""
    try:
        deleted = await store.purge_expired()
    except StateStoreError as error:
        log.warning("Could not delete expired state: %s", error)
        return
    if deleted:
        log.info("Deleted %d expired entries from the state store", deleted)


async def purge_every(store: StateStore, interval_s: float = PURGE_INTERVAL_S) -> None:
    """Until cancelled (at shutdown)."""
    while True:
        await asyncio.sleep(interval_s)
        await purge_expired(store)
