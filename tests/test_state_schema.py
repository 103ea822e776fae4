"""Opening a state store: schema versions and migrations, the operator's one-line errors, and SQLite's thread."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import redis.asyncio

from bot.state import Quota, StateStoreError, open_store, sqlite_schema
from bot.state import redis as redis_store
from bot.state.redis import RedisStore
from bot.state.sqlite import SqliteStore


def run_sql(path: Path, *statements: str) -> list[tuple[object, ...]]:
    """Statements on a file of the test's own (sqlite3 directly: a few microseconds, nothing to wait for)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            rows = db.execute(statement).fetchall()
        return rows


def user_version(path: Path) -> int:
    return int(str(run_sql(path, "PRAGMA user_version")[0][0]))


async def test_an_empty_sqlite_file_is_migrated_to_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    run_sql(path, "CREATE TABLE notes (text TEXT)")  # a version-0 file, with something of its own in it

    store = await SqliteStore.open(path)
    try:
        assert await store.schema_version() == sqlite_schema.SCHEMA_VERSION
        assert await store.take([Quota("day", 1, time.time() + 60)]) is None
    finally:
        await store.aclose()
    assert user_version(path) == sqlite_schema.SCHEMA_VERSION
    reopened = await SqliteStore.open(path)  # migrating twice would fail: the tables exist
    await reopened.aclose()


async def test_a_version_one_sqlite_file_is_migrated_to_the_current_one_and_keeps_its_counters(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:  # what a version-1 bot wrote
        sqlite_schema.MIGRATIONS[0](db)
        db.execute("PRAGMA user_version = 1")
    until = time.time() + 3600
    run_sql(path, f"INSERT INTO counters VALUES ('day', 4, {until})", f"INSERT INTO boards VALUES ('b', 7, {until})",
            "INSERT INTO ranks VALUES ('b', 'alice', 7)", "INSERT INTO settings VALUES ('model.ask', 'meta/llama')")

    store = await SqliteStore.open(path)
    try:
        assert await store.schema_version() == sqlite_schema.SCHEMA_VERSION
        assert [await store.count("day"), await store.total("b"), await store.score("b", "alice")] == [4, 7, 7]
        assert await store.get_settings() == {"model.ask": "meta/llama"}
        await store.put_value("link", "x", until)
        assert await store.claim("delivery", until) is True
        assert await store.append_item("turns", "a", until) == 1
        assert (await store.get_value("link"), await store.items("turns")) == ("x", ["a"])
        await store.put_entry("inflight", "r1", "{}")
        assert await store.entries("inflight") == {"r1": "{}"}
    finally:
        await store.aclose()
    assert user_version(path) == sqlite_schema.SCHEMA_VERSION


async def test_a_sqlite_file_from_a_newer_bot_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    newer = sqlite_schema.SCHEMA_VERSION + 1
    run_sql(path, f"PRAGMA user_version = {newer}")

    with pytest.raises(StateStoreError) as refused:
        await (await SqliteStore.open(path)).aclose()  # closed if opened: its thread would outlive the test

    assert f"schema version {newer}, newer than this bot's {sqlite_schema.SCHEMA_VERSION}" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert user_version(path) == newer
    assert run_sql(path, "SELECT name FROM sqlite_master") == []


async def test_an_empty_redis_database_gets_the_schema_version(redis_url: str) -> None:
    store = await RedisStore.open(redis_url)
    try:
        assert await store.schema_version() == redis_store.SCHEMA_VERSION
    finally:
        await store.aclose()


async def test_a_redis_database_from_a_newer_bot_is_refused(redis_url: str) -> None:
    async with redis.asyncio.from_url(redis_url) as client:
        await client.set("schema", redis_store.SCHEMA_VERSION + 1)

    with pytest.raises(StateStoreError, match=r"schema version 2, newer than this bot's 1"):
        await (await RedisStore.open(redis_url)).aclose()

    async with redis.asyncio.from_url(redis_url, decode_responses=True) as client:
        assert await client.keys() == ["schema"]


async def test_open_store_finds_relative_and_absolute_sqlite_paths(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = await open_store("sqlite:///data/bot.db")
    absolute = await open_store(f"sqlite:///{tmp_path}/elsewhere/bot.db")
    await relative.aclose()
    await absolute.aclose()
    assert (tmp_path / "data" / "bot.db").is_file()
    assert (tmp_path / "elsewhere" / "bot.db").is_file()


async def test_an_unusable_sqlite_path_is_one_line_for_the_operator(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "garbage.db").write_bytes(b"not a database, " * 512)

    with pytest.raises(StateStoreError, match=r"^cannot create the SQLite state store .*a-file/bot\.db: File exists: "):
        await (await open_store(f"sqlite:///{tmp_path}/a-file/bot.db")).aclose()
    with pytest.raises(StateStoreError, match=r"^cannot open the SQLite state store .*garbage.db: file is not a da"):
        await (await open_store(f"sqlite:///{tmp_path}/garbage.db")).aclose()
    with pytest.raises(StateStoreError, match="names no file"):
        await (await open_store("sqlite:///")).aclose()


async def test_an_unreachable_redis_is_one_line_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError) as unreachable:
        await (await open_store(f"unix://:s3cret@{tmp_path}/nothing-here.sock?db=0")).aclose()
    with pytest.raises(StateStoreError) as refused:
        await (await open_store("redis://user:s3cret@127.0.0.1:1/0")).aclose()  # port 1: nothing listens

    assert str(unreachable.value).startswith(f"cannot reach the Redis state store at unix://{tmp_path}/nothing-here"
                                             ".sock?db=0: ")
    assert str(refused.value).startswith("cannot reach the Redis state store at redis://127.0.0.1:1/0: ")
    for message in (str(unreachable.value), str(refused.value)):
        assert "s3cret" not in message and "\n" not in message


async def test_an_unknown_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(StateStoreError, match=r"^unknown state store URL scheme 'postgres': use sqlite") as refused:
        await (await open_store("postgres://admin:s3cret@db/bot")).aclose()
    assert "s3cret" not in str(refused.value)


async def test_a_failing_redis_command_is_a_state_store_error(redis_url: str) -> None:
    store = await RedisStore.open(redis_url)
    async with redis.asyncio.from_url(redis_url) as admin:
        await admin.config_set("maxmemory", 1)  # every write now fails with OOM (the default noeviction policy)
        try:
            with pytest.raises(StateStoreError, match=r"^the Redis state store failed: OutOfMemoryError"):
                await store.take([Quota("day", 1, time.time() + 60)])
        finally:
            await admin.config_set("maxmemory", 0)
            await store.aclose()


async def test_sqlite_never_runs_a_statement_on_the_event_loop_thread(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "bot.db")
    threads: set[int] = set()
    await store._call(lambda db: db.set_trace_callback(lambda statement: threads.add(threading.get_ident())))
    try:
        assert await store.take([Quota("day", 1, time.time() + 60)]) is None
        await store.add_ranked("board", "alice", 1, time.time() + 60)
        await store.put_setting("a", "b")
        await asyncio.gather(store.count("day"), store.top("board", 3), store.get_settings(), store.purge_expired())
    finally:
        await store.aclose()
    assert threads and threading.get_ident() not in threads

