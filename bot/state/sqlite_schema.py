"""The SQLite store's schema, as the migrations that build it: version N is the first N applied in order.

`SqliteStore.open` runs the missing ones inside one `BEGIN IMMEDIATE` transaction, on the store's worker thread,
and records the version in
`PRAGMA user_version` (https://www.sqlite.org/pragma.html#pragma_user_version), so a failed migration leaves
the file as it was. Never edit a released migration: append a new one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def create_tables(db: sqlite3.Connection) -> None:
    """Version 1: counters, ranked boards (a total and an expiry per board, a score per member), settings."""
    for statement in (
        "CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX counters_expiry ON counters (expires_at)",
        "CREATE TABLE boards (board TEXT PRIMARY KEY, total INTEGER NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX boards_expiry ON boards (expires_at)",
        "CREATE TABLE ranks (board TEXT NOT NULL, member TEXT NOT NULL, score INTEGER NOT NULL, "
        "PRIMARY KEY (board, member)) WITHOUT ROWID",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ):
        db.execute(statement)


def create_values_claims_and_lists(db: sqlite3.Connection) -> None:
    """Version 2: values, claims, and lists (a length and an expiry per list, its items numbered from 1).

    `items` keeps its rowid (no WITHOUT ROWID): an item may be ~100 KB, and WITHOUT ROWID tables suit rows
    smaller than about a twentieth of a page (https://www.sqlite.org/withoutrowid.html, section 4).
    """
    for statement in (
        "CREATE TABLE vals (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX vals_expiry ON vals (expires_at)",
        "CREATE TABLE claims (key TEXT PRIMARY KEY, expires_at REAL NOT NULL)",
        "CREATE INDEX claims_expiry ON claims (expires_at)",
        "CREATE TABLE lists (key TEXT PRIMARY KEY, length INTEGER NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX lists_expiry ON lists (expires_at)",
        "CREATE TABLE items (key TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL, PRIMARY KEY (key, seq))",
    ):
        db.execute(statement)


def create_entries(db: sqlite3.Connection) -> None:
    """Version 3: entries, small keyed collections listed whole (the commands in flight); they never expire."""
    db.execute("CREATE TABLE entries (collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
               "PRIMARY KEY (collection, key))")


MIGRATIONS: tuple[Migration, ...] = (create_tables, create_values_claims_and_lists, create_entries)
SCHEMA_VERSION = len(MIGRATIONS)
