"""The SQLite state store (the default): one file, one connection, every call on its own worker thread.

Calls that arrive together share one transaction (`bot.state.sqlite_worker`: group commit), each atomic on its
own. WAL lets readers and the writer proceed together; every transaction starts with `BEGIN IMMEDIATE`, so two
processes (or two stores) on one file wait for the write lock (up to `BUSY_TIMEOUT_S`) instead of failing with
SQLITE_BUSY when a read turns into a write (https://www.sqlite.org/lang_transaction.html). One host only: WAL
needs shared memory, not a network file system (https://www.sqlite.org/wal.html); several hosts use Redis.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from bot.state.sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from bot.state.sqlite_worker import SqliteWorker
from bot.state.store import Quota, StateStoreError

BUSY_TIMEOUT_S = 5.0  # how long a write waits for another connection's write lock before failing

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
_PUT_VALUE = """
INSERT INTO vals(key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""
# A claim that expired is free again: the upsert changes a row (rowcount 1) only when the key is new or expired.
_CLAIM = """
INSERT INTO claims(key, expires_at) VALUES (?1, ?2)
ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at WHERE claims.expires_at <= ?3
"""
_GROW_LIST = """
INSERT INTO lists(key, length, expires_at) VALUES (?, 1, ?)
ON CONFLICT(key) DO UPDATE SET length = length + 1, expires_at = max(expires_at, excluded.expires_at)
RETURNING length
"""


class SqliteStore:
    """The `StateStore` on one SQLite file. Open it with `SqliteStore.open`; close it with `aclose`."""

    def __init__(self, worker: SqliteWorker, clock: Callable[[], float]) -> None:
        self._worker = worker
        self._clock = clock

    @classmethod
    async def open(cls, path: str | Path, *, clock: Callable[[], float] = time.time) -> SqliteStore:
        """Open (creating the file and its directory if needed) and migrate to `SCHEMA_VERSION`."""
        path = Path(path)
        worker = SqliteWorker()
        try:
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            await worker.connect(path, busy_timeout_s=BUSY_TIMEOUT_S, setup=_setup)
            await worker.call(lambda db: _migrate(db, path))
        except OSError as error:
            await worker.close()
            raise StateStoreError(
                f"cannot create the SQLite state store {path}: {error.strerror}: {error.filename}") from error
        except sqlite3.Error as error:
            await worker.close()
            raise StateStoreError(f"cannot open the SQLite state store {path}: {error}") from error
        except BaseException:
            await worker.close()
            raise
        return cls(worker, clock)

    async def _call(self, function: Callable[[sqlite3.Connection], _T]) -> _T:
        """A failing database (disk full, locked too long, corrupt) reaches callers as one StateStoreError."""
        try:
            return await self._worker.call(function)
        except sqlite3.Error as error:
            raise StateStoreError(f"the SQLite state store failed: {error}") from error

    async def schema_version(self) -> int:
        """The schema version written in the file (`PRAGMA user_version`)."""
        return await self._call(_user_version)

    async def take(self, quotas: Sequence[Quota]) -> Quota | None:
        now = self._clock()

        def take(db: sqlite3.Connection) -> Quota | None:
            keys = [quota.key for quota in quotas]
            placeholders = ",".join("?" * len(keys))
            rows = db.execute(f"SELECT key, n FROM counters WHERE key IN ({placeholders}) AND expires_at > ?",
                              [*keys, now]).fetchall()
            units = {str(key): int(n) for key, n in rows}
            for quota in quotas:
                if units.get(quota.key, 0) >= quota.limit:
                    return quota
            db.executemany(_TAKE_UNIT, [(quota.key, quota.expires_at, now) for quota in quotas])
            return None

        return await self._call(take)

    async def give_back(self, keys: Sequence[str]) -> None:
        now = self._clock()
        await self._call(lambda db: db.executemany(
            "UPDATE counters SET n = n - 1 WHERE key = ? AND n > 0 AND expires_at > ?", [(key, now) for key in keys]))

    async def count(self, key: str) -> int:
        rows = await self._rows("SELECT n FROM counters WHERE key = ? AND expires_at > ?", (key, self._clock()))
        return _whole(rows[0][0]) if rows else 0

    async def add_ranked(self, board: str, member: str, amount: int, expires_at: float) -> None:
        now = self._clock()

        def add(db: sqlite3.Connection) -> None:
            # An expired board that was not purged yet starts again from nothing.
            db.execute("DELETE FROM ranks WHERE board = ? AND board IN "
                       "(SELECT board FROM boards WHERE expires_at <= ?)", (board, now))
            db.execute("DELETE FROM boards WHERE board = ? AND expires_at <= ?", (board, now))
            db.execute(_ADD_TO_BOARD, (board, amount, expires_at))
            db.execute(_ADD_TO_MEMBER, (board, member, amount))

        await self._call(add)

    async def top(self, board: str, limit: int) -> list[tuple[str, int]]:
        rows = await self._rows(f"SELECT member, score FROM ranks WHERE {_LIVE_BOARD} "
                                "ORDER BY score DESC, member ASC LIMIT ?", (board, self._clock(), max(limit, 0)))
        return [(str(member), _whole(score)) for member, score in rows]

    async def score(self, board: str, member: str) -> int:
        rows = await self._rows(f"SELECT score FROM ranks WHERE member = ? AND {_LIVE_BOARD}",
                                (member, board, self._clock()))
        return _whole(rows[0][0]) if rows else 0

    async def total(self, board: str) -> int:
        rows = await self._rows("SELECT total FROM boards WHERE board = ? AND expires_at > ?", (board, self._clock()))
        return _whole(rows[0][0]) if rows else 0

    async def get_settings(self, prefix: str = "") -> Mapping[str, str]:
        rows = await self._rows("SELECT name, value FROM settings WHERE substr(name, 1, length(?1)) = ?1", (prefix,))
        return {str(name): str(value) for name, value in rows}

    async def put_setting(self, name: str, value: str | None) -> None:
        if value is None:
            await self._rows("DELETE FROM settings WHERE name = ?", (name,))
        else:
            await self._rows("INSERT INTO settings(name, value) VALUES (?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    async def put_value(self, key: str, value: str, expires_at: float) -> None:
        await self._rows(_PUT_VALUE, (key, value, expires_at))

    async def get_value(self, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM vals WHERE key = ? AND expires_at > ?", (key, self._clock()))
        return str(rows[0][0]) if rows else None

    async def claim(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        # One statement inside the worker's BEGIN IMMEDIATE: another store on the file waits for the write lock.
        return await self._call(lambda db: db.execute(_CLAIM, (key, expires_at, now)).rowcount == 1)

    async def append_item(self, key: str, item: str, expires_at: float) -> int:
        now = self._clock()

        def append(db: sqlite3.Connection) -> int:
            _forget_expired_list(db, key, now)  # an expired list that was not purged yet starts again from nothing
            length = _whole(db.execute(_GROW_LIST, (key, expires_at)).fetchone()[0])
            db.execute("INSERT INTO items(key, seq, item) VALUES (?, ?, ?)", (key, length, item))
            return length

        return await self._call(append)

    async def items(self, key: str) -> list[str]:
        rows = await self._rows("SELECT item FROM items WHERE key = ?1 AND key IN "
                                "(SELECT key FROM lists WHERE key = ?1 AND expires_at > ?2) ORDER BY seq",
                                (key, self._clock()))
        return [str(item) for (item,) in rows]

    async def put_entry(self, collection: str, key: str, value: str) -> None:
        await self._rows("INSERT INTO entries(collection, key, value) VALUES (?, ?, ?) "
                         "ON CONFLICT(collection, key) DO UPDATE SET value = excluded.value", (collection, key, value))

    async def get_entry(self, collection: str, key: str) -> str | None:
        rows = await self._rows("SELECT value FROM entries WHERE collection = ? AND key = ?", (collection, key))
        return str(rows[0][0]) if rows else None

    async def delete_entry(self, collection: str, key: str) -> bool:
        return await self._call(lambda db: db.execute(
            "DELETE FROM entries WHERE collection = ? AND key = ?", (collection, key)).rowcount == 1)

    async def entries(self, collection: str) -> Mapping[str, str]:
        rows = await self._rows("SELECT key, value FROM entries WHERE collection = ?", (collection,))
        return {str(key): str(value) for key, value in rows}

    async def purge_expired(self) -> int:
        """Delete expired counters, boards (a board's members go with it), values, claims and lists (with their
        items); returns how many of those went (members and items not counted)."""
        now = self._clock()

        def purge(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM ranks WHERE board IN (SELECT board FROM boards WHERE expires_at <= ?)", (now,))
            db.execute("DELETE FROM items WHERE key IN (SELECT key FROM lists WHERE expires_at <= ?)", (now,))
            return sum(db.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,)).rowcount
                       for table in ("counters", "boards", "vals", "claims", "lists"))

        return await self._call(purge)

    async def aclose(self) -> None:
        """Finish queued calls, close the connection and stop its thread (idempotent)."""
        await self._worker.close()

    async def _rows(self, sql: str, parameters: Sequence[object]) -> list[tuple[object, ...]]:
        return await self._call(lambda db: db.execute(sql, parameters).fetchall())


def _whole(value: object) -> int:
    """An INTEGER column's value (sqlite3 types rows as `Any`-ish objects)."""
    assert isinstance(value, int), value
    return value


def _forget_expired_list(db: sqlite3.Connection, key: str, now: float) -> None:
    db.execute("DELETE FROM items WHERE key = ?1 AND key IN "
               "(SELECT key FROM lists WHERE key = ?1 AND expires_at <= ?2)", (key, now))
    db.execute("DELETE FROM lists WHERE key = ? AND expires_at <= ?", (key, now))


def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL


def _user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Inside the opening transaction: a failed migration leaves the file as it was."""
    version = _user_version(db)
    if version > SCHEMA_VERSION:
        raise StateStoreError(
            f"the SQLite state store {path} has schema version {version}, newer than this bot's "
            f"{SCHEMA_VERSION}: an older bot must not write to it: run the newer bot, or use another file")
    for number in range(version, SCHEMA_VERSION):
        MIGRATIONS[number](db)
        db.execute(f"PRAGMA user_version = {number + 1}")
