"""The state store: counters, rankings, settings, values, claims and lists that outlast a restart (SQLite or
Redis, one interface)."""

from __future__ import annotations

import time
from collections.abc import Callable

from bot.state.store import Quota, StateStore, StateStoreError

__all__ = ["Quota", "StateStore", "StateStoreError", "open_store"]

_SQLITE = "sqlite:///"
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


async def open_store(url: str, *, clock: Callable[[], float] = time.time) -> StateStore:
    """The store a URL names, opened and migrated: `sqlite:///data/bot.db` (relative to the working directory),
    `sqlite:////abs/bot.db`, `redis://host:port/db`, `rediss://…` or `unix:///path/redis.sock?db=N`.

    `clock` is SQLite's notion of now for expiry (Redis keeps its own). Raises StateStoreError, one line for the
    operator, when the store cannot be opened or was written by a newer bot.
    """
    if url.startswith(_SQLITE):
        from bot.state.sqlite import SqliteStore

        path = url.removeprefix(_SQLITE)
        if not path:
            raise StateStoreError("the SQLite state store URL names no file: sqlite:///data/bot.db, for example")
        return await SqliteStore.open(path, clock=clock)
    if url.startswith(_REDIS_SCHEMES):
        from bot.state.redis import RedisStore

        return await RedisStore.open(url)
    scheme = url.split("://", 1)[0] if "://" in url else "(none)"  # never the rest: it may hold a password
    raise StateStoreError(f"unknown state store URL scheme {scheme!r}: use sqlite:///path/to/bot.db or "
                          "redis://host:port/db")
