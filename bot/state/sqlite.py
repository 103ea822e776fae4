"""The SQLite state store (the default): one file, one connection, every call on aiosqlite's own thread.

WAL lets readers and the writer proceed together; every write transaction starts with `BEGIN IMMEDIATE`, so
two processes (or two stores) on one file wait for the write lock (up to `BUSY_TIMEOUT_S`) instead of failing
with SQLITE_BUSY when a read turns into a write (https://www.sqlite.org/lang_transaction.html). One host only:
WAL needs shared memory, not a network file system (https://www.sqlite.org/wal.html); several hosts use Redis.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite

from bot.state.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from bot.state.store import Quota, StateStoreError

BUSY_TIMEOUT_S = 5.0  # how long a write waits for another connection's write lock before failing

_P = ParamSpec("_P")
_T = TypeVar("_T")

# A counter row that expired is a fresh counter: its units and expiry restart from this write.
_TAKE_UNIT = """
INSERT INTO counters(key, n, expires_at) VALUES (?1, 1, ?2)
ON CONFLICT(key) DO UPDATE SET
  n = CASE WHEN counters.expires_at > ?3 THEN counters.n + 1 ELSE 1 END,
  expires_at = CASE WHEN counters.expires_at > ?3 THEN max(counters.expires_at, excluded.expires_at)
                    ELSE excluded.expires_at END
"""
_ADD_TO_BOARD = """
INSERT INTO boards(board, total, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT(board) DO UPDATE SET total = total + excluded.total, expires_at = max(expires_at, excluded.expires_at)
"""
_ADD_TO_MEMBER = """
INSERT INTO ranks(board, member, score) VALUES (?1, ?2, ?3)
ON CONFLICT(board, member) DO UPDATE SET score = score + excluded.score
"""
_LIVE_BOARD = "board = ? AND board IN (SELECT board FROM boards WHERE expires_at > ?)"


def _sqlite_errors_as_store_errors(method: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """A failing database (disk full, locked too long, corrupt) reaches callers as one StateStoreError."""

    @wraps(method)
    async def translated(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except sqlite3.Error as error:
            raise StateStoreError(f"the SQLite state store failed: {error}") from error

    return translated


class SqliteStore:
    """The `StateStore` on one SQLite file. Open it with `SqliteStore.open`; close it with `aclose`."""

    def __init__(self, connection: aiosqlite.Connection, clock: Callable[[], float]) -> None:
        self._db = connection
        self._clock = clock
        # One connection carries one transaction at a time: coroutines take turns around each of them.
        self._turn = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> SqliteStore:
        """Open (creating the file and its directory if needed) and migrate to `SCHEMA_VERSION`."""
        path = Path(path)
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except OSError as error:
            raise StateStoreError(
                f"cannot create the SQLite state store {path}: {error.strerror}: {error.filename}") from error
        except sqlite3.Error as error:
            raise StateStoreError(f"cannot open the SQLite state store {path}: {error}") from error
        store = cls(connection, clock)
        try:
            await store._prepare(path)
        except BaseException:
            await connection.close()
            raise
        return store

    async def _prepare(self, path: Path) -> None:
        try:
            await self._db.execute("PRAGMA journal_mode = WAL")
            await self._db.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL
            async with self._write() as db:
                version = await self._user_version()
                if version > SCHEMA_VERSION:
                    raise StateStoreError(
                        f"the SQLite state store {path} has schema version {version}, newer than this bot's "
                        f"{SCHEMA_VERSION}: an older bot must not write to it: run the newer bot, or use another file")
                for number in range(version, SCHEMA_VERSION):
                    await MIGRATIONS[number](db)
                    await db.execute(f"PRAGMA user_version = {number + 1}")
        except sqlite3.Error as error:
            raise StateStoreError(f"cannot open the SQLite state store {path}: {error}") from error

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, committed on success and rolled back on any error or cancellation."""
        async with self._turn:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                # Shielded: a cancelled caller must not leave the connection inside its transaction.
                await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            await self._db.execute("COMMIT")

    async def _user_version(self) -> int:
        rows = list(await self._db.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0])

    async def _read(self, sql: str, parameters: Sequence[object]) -> list[sqlite3.Row]:
        async with self._turn:
            return list(await self._db.execute_fetchall(sql, parameters))

    @_sqlite_errors_as_store_errors
    async def schema_version(self) -> int:
        """The schema version written in the file (`PRAGMA user_version`)."""
        async with self._turn:
            return await self._user_version()

    @_sqlite_errors_as_store_errors
    async def take(self, quotas: Sequence[Quota]) -> Quota | None:
        now = self._clock()
        keys = [quota.key for quota in quotas]
        async with self._write() as db:
            placeholders = ",".join("?" * len(keys))
            rows = await db.execute_fetchall(
                f"SELECT key, n FROM counters WHERE key IN ({placeholders}) AND expires_at > ?", [*keys, now])
            units = {str(key): int(n) for key, n in rows}
            for quota in quotas:
                if units.get(quota.key, 0) >= quota.limit:
                    return quota
            await db.executemany(_TAKE_UNIT, [(quota.key, quota.expires_at, now) for quota in quotas])
        return None

    @_sqlite_errors_as_store_errors
    async def give_back(self, keys: Sequence[str]) -> None:
        now = self._clock()
        async with self._write() as db:
            await db.executemany("UPDATE counters SET n = n - 1 WHERE key = ? AND n > 0 AND expires_at > ?",
                                 [(key, now) for key in keys])

    @_sqlite_errors_as_store_errors
    async def count(self, key: str) -> int:
        rows = await self._read("SELECT n FROM counters WHERE key = ? AND expires_at > ?", [key, self._clock()])
        return int(rows[0][0]) if rows else 0

    @_sqlite_errors_as_store_errors
    async def add_ranked(self, board: str, member: str, amount: int, expires_at: float) -> None:
        now = self._clock()
        async with self._write() as db:
            # An expired board that was not purged yet starts again from nothing.
            await db.execute("DELETE FROM ranks WHERE board = ? AND board IN "
                             "(SELECT board FROM boards WHERE expires_at <= ?)", (board, now))
            await db.execute("DELETE FROM boards WHERE board = ? AND expires_at <= ?", (board, now))
            await db.execute(_ADD_TO_BOARD, (board, amount, expires_at))
            await db.execute(_ADD_TO_MEMBER, (board, member, amount))

    @_sqlite_errors_as_store_errors
    async def top(self, board: str, limit: int) -> list[tuple[str, int]]:
        rows = await self._read(f"SELECT member, score FROM ranks WHERE {_LIVE_BOARD} "
                                "ORDER BY score DESC, member ASC LIMIT ?", [board, self._clock(), max(limit, 0)])
        return [(str(member), int(score)) for member, score in rows]

    @_sqlite_errors_as_store_errors
    async def score(self, board: str, member: str) -> int:
        rows = await self._read(f"SELECT score FROM ranks WHERE member = ? AND {_LIVE_BOARD}",
                                [member, board, self._clock()])
        return int(rows[0][0]) if rows else 0

    @_sqlite_errors_as_store_errors
    async def total(self, board: str) -> int:
        rows = await self._read("SELECT total FROM boards WHERE board = ? AND expires_at > ?", [board, self._clock()])
        return int(rows[0][0]) if rows else 0

    @_sqlite_errors_as_store_errors
    async def get_settings(self, prefix: str = "") -> Mapping[str, str]:
        rows = await self._read("SELECT name, value FROM settings WHERE substr(name, 1, length(?1)) = ?1",
                                [prefix])
        return {str(name): str(value) for name, value in rows}

    @_sqlite_errors_as_store_errors
    async def put_setting(self, name: str, value: str | None) -> None:
        async with self._write() as db:
            if value is None:
                await db.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                await db.execute("INSERT INTO settings(name, value) VALUES (?, ?) "
                                 "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    @_sqlite_errors_as_store_errors
    async def purge_expired(self) -> int:
        """Delete expired counters and boards (a board's members go with it); returns counters + boards."""
        now = self._clock()
        async with self._write() as db:
            counters = await db.execute("DELETE FROM counters WHERE expires_at <= ?", (now,))
            await db.execute("DELETE FROM ranks WHERE board IN (SELECT board FROM boards WHERE expires_at <= ?)",
                             (now,))
            boards = await db.execute("DELETE FROM boards WHERE expires_at <= ?", (now,))
            return counters.rowcount + boards.rowcount

    async def aclose(self) -> None:
        """Close the connection and stop its thread (idempotent)."""
        await self._db.close()
