"""The state store's contract (bot/state/store.py), run alike on SQLite (a file in tmp_path, a movable clock)
and on a real redis-server (tests/redis_server.py), which keeps time itself: there the tests check the expiry
Redis recorded (PEXPIRETIME) instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio

from bot.state import Quota, StateStore, open_store
from bot.state.redis import RedisStore
from bot.state.sqlite import SqliteStore

EXPIRY_TIMEOUT_S = 5.0  # how long a test waits for Redis to drop a key that expires within a second


class Clock:
    """SQLite's notion of now, moved by the tests."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    name: str
    url: str  # what `open_store` takes
    open: Callable[[], Awaitable[StateStore]]  # another store object on the same data
    clock: Clock
    inspector: redis.asyncio.Redis | None = None  # Redis only: a separate client to read what the store wrote
    opened: list[StateStore] = field(default_factory=list)

    def now(self) -> float:
        return self.clock.now if self.inspector is None else time.time()

    async def store(self) -> StateStore:
        store = await self.open()
        self.opened.append(store)
        return store

    async def assert_expires_at(self, store: StateStore, raw_keys: list[str], read: Callable[[], Awaitable[int]],
                                expires_at: float) -> None:
        """The entry is alive until `expires_at` and gone from then on (SQLite), or Redis records that time."""
        if self.inspector is not None:
            for key in raw_keys:
                assert await self.inspector.pexpiretime(key) == int(expires_at * 1000), key
            return
        saved = self.clock.now
        self.clock.now = expires_at - 0.001
        assert await read() > 0
        self.clock.now = expires_at
        assert await read() == 0
        self.clock.now = saved

    async def pass_beyond(self, expires_at: float, read: Callable[[], Awaitable[int]]) -> None:
        """Move past `expires_at`: the SQLite clock jumps; for Redis, poll until the entry reads 0."""
        if self.inspector is None:
            self.clock.now = expires_at
            return
        deadline = time.monotonic() + EXPIRY_TIMEOUT_S
        while await read() != 0:
            assert time.monotonic() < deadline, "Redis never expired the key"
            await asyncio.sleep(0.02)


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = Clock()
    if request.param == "sqlite":
        path = tmp_path / "state" / "bot.db"
        chosen = Backend("sqlite", f"sqlite:///{path}", lambda: SqliteStore.open(path, clock=clock), clock)
    else:
        url: str = request.getfixturevalue("redis_url")
        chosen = Backend("redis", url, lambda: RedisStore.open(url), clock, redis.asyncio.from_url(url))
    yield chosen
    for store in chosen.opened:
        await store.aclose()
    if chosen.inspector is not None:
        await chosen.inspector.aclose()


def window(backend: Backend, seconds: float = 3600.0) -> float:
    return backend.now() + seconds


async def test_take_succeeds_up_to_the_limit_then_reports_the_full_quota(backend: Backend) -> None:
    store = await backend.store()
    quota = Quota("user:U1:day", 3, window(backend))

    assert [await store.take([quota]) for _ in range(3)] == [None, None, None]
    assert await store.take([quota]) == quota
    assert await store.count("user:U1:day") == 3
    assert await store.count("never-taken") == 0


async def test_take_is_all_or_nothing_and_reports_the_first_full_quota(backend: Backend) -> None:
    store = await backend.store()
    user = Quota("user", 5, window(backend))
    channel = Quota("channel", 1, window(backend))
    team = Quota("team", 1, window(backend))
    assert await store.take([channel]) is None
    assert await store.take([team]) is None

    assert await store.take([user, channel, team]) == channel
    assert await store.take([user, team, channel]) == team
    assert [await store.count(key) for key in ("user", "channel", "team")] == [0, 1, 1]


async def test_an_expired_counter_reads_zero_and_starts_again(backend: Backend) -> None:
    store = await backend.store()
    soon = backend.now() + 0.3
    assert await store.take([Quota("minute", 1, soon)]) is None
    assert await store.take([Quota("minute", 1, soon)]) is not None

    await backend.pass_beyond(soon, lambda: store.count("minute"))

    assert await store.count("minute") == 0
    later = window(backend)
    assert await store.take([Quota("minute", 1, later)]) is None
    assert await store.count("minute") == 1
    await backend.assert_expires_at(store, ["counter:minute"], lambda: store.count("minute"), later)


async def test_a_counter_keeps_the_later_of_its_expiries(backend: Backend) -> None:
    store = await backend.store()
    first, earlier, latest = window(backend, 100), window(backend, 50), window(backend, 200)
    read = lambda: store.count("day")  # noqa: E731

    assert await store.take([Quota("day", 10, first)]) is None
    assert await store.take([Quota("day", 10, earlier)]) is None
    await backend.assert_expires_at(store, ["counter:day"], read, first)

    assert await store.take([Quota("day", 10, latest)]) is None
    await backend.assert_expires_at(store, ["counter:day"], read, latest)
    assert await store.count("day") == 3


async def test_give_back_removes_one_unit_and_never_goes_below_zero(backend: Backend) -> None:
    store = await backend.store()
    quota = Quota("day", 2, window(backend))
    assert await store.take([quota]) is None
    assert await store.take([quota]) is None
    assert await store.take([quota]) == quota

    await store.give_back(["day"])
    assert await store.count("day") == 1
    assert await store.take([quota]) is None  # the unit given back can be taken again

    await store.give_back(["day", "never-taken"])
    await store.give_back(["day"])
    await store.give_back(["day"])
    assert await store.count("day") == 0
    assert await store.count("never-taken") == 0
    assert [await store.take([quota]) for _ in range(3)] == [None, None, quota]


async def test_a_ranked_board_orders_by_score_then_member_and_keeps_a_total(backend: Backend) -> None:
    store = await backend.store()
    until = window(backend)
    for member, amount in [("carol", 5), ("bob", 3), ("alice", 2), ("dave", 1), ("alice", 3)]:
        await store.add_ranked("spend:day", member, amount, until)

    assert await store.top("spend:day", 3) == [("alice", 5), ("carol", 5), ("bob", 3)]
    assert await store.top("spend:day", 1) == [("alice", 5)]  # a tie at the edge: member order decides
    assert await store.top("spend:day", 10) == [("alice", 5), ("carol", 5), ("bob", 3), ("dave", 1)]
    assert await store.top("spend:day", 0) == []
    assert await store.top("no-board", 3) == []
    assert await store.total("spend:day") == 14
    assert await store.total("no-board") == 0
    assert await store.score("spend:day", "alice") == 5
    assert await store.score("spend:day", "nobody") == 0


async def test_a_ranked_board_keeps_the_later_expiry_and_is_forgotten_after_it(backend: Backend) -> None:
    store = await backend.store()
    first, earlier = window(backend, 100), window(backend, 50)
    await store.add_ranked("board", "alice", 2, first)
    await store.add_ranked("board", "bob", 1, earlier)
    await backend.assert_expires_at(store, ["board:board", "board-total:board"], lambda: store.total("board"), first)

    soon = backend.now() + 0.3
    await store.add_ranked("short", "alice", 4, soon)
    await backend.pass_beyond(soon, lambda: store.total("short"))
    assert (await store.top("short", 5), await store.score("short", "alice")) == ([], 0)

    await store.add_ranked("short", "bob", 1, window(backend))  # an expired board starts again from nothing
    assert (await store.top("short", 5), await store.total("short")) == ([("bob", 1)], 1)


async def test_settings_are_read_by_prefix_deleted_by_none_and_outlive_a_reopen(backend: Backend) -> None:
    store = await backend.store()
    await store.put_setting("model.ask", "meta/llama")
    await store.put_setting("model.imagine", "black-forest-labs/flux")
    await store.put_setting("modelling", "x")
    await store.put_setting("admin.U1", "1")
    await store.put_setting("model.ask", "openai/gpt")

    assert await store.get_settings("model.") == {"model.ask": "openai/gpt", "model.imagine": "black-forest-labs/flux"}
    await store.put_setting("model.imagine", None)
    await store.put_setting("never-set", None)
    await store.aclose()

    reopened = await backend.store()
    assert await reopened.get_settings() == {"model.ask": "openai/gpt", "modelling": "x", "admin.U1": "1"}
    assert await reopened.get_settings("model.") == {"model.ask": "openai/gpt"}
    assert await reopened.get_settings("%") == {}


async def test_counters_and_boards_outlive_closing_and_reopening(backend: Backend) -> None:
    store = await backend.store()
    until = window(backend)
    assert await store.take([Quota("day", 5, until), Quota("team", 9, until)]) is None
    await store.add_ranked("board", "alice", 7, until)
    await store.aclose()

    reopened = await backend.store()
    assert [await reopened.count("day"), await reopened.count("team")] == [1, 1]
    assert (await reopened.top("board", 1), await reopened.total("board")) == ([("alice", 7)], 7)


@pytest.mark.parametrize("stores", [1, 2], ids=["one store", "two stores"])
async def test_fifty_concurrent_takes_of_a_limit_of_ten_let_exactly_ten_through(backend: Backend, stores: int) -> None:
    """Two store objects are two connections (two SQLite threads on one file; two Redis connection pools)."""
    opened = [await backend.store() for _ in range(stores)]
    quota = Quota("burst", 10, window(backend))
    other = Quota("other", 100, window(backend))

    outcomes = await asyncio.gather(*(opened[n % stores].take([other, quota]) for n in range(50)))

    assert outcomes.count(None) == 10
    assert outcomes.count(quota) == 40
    assert [await opened[0].count("burst"), await opened[-1].count("other")] == [10, 10]


async def test_purge_expired_deletes_what_expired_and_only_that(backend: Backend) -> None:
    store = await backend.store()
    soon, later = backend.now() + 0.3, window(backend)
    assert await store.take([Quota("gone", 5, soon), Quota("kept", 5, later)]) is None
    await store.add_ranked("gone-board", "alice", 1, soon)
    await store.add_ranked("kept-board", "alice", 1, later)
    await backend.pass_beyond(soon, lambda: store.count("gone"))
    await backend.pass_beyond(soon, lambda: store.total("gone-board"))

    assert await store.purge_expired() == (2 if backend.name == "sqlite" else 0)  # Redis expires keys itself
    assert await store.purge_expired() == 0
    assert [await store.count("kept"), await store.total("kept-board"), await store.count("gone")] == [1, 1, 0]


async def test_open_store_picks_the_store_by_url(backend: Backend) -> None:
    store = await open_store(backend.url, clock=backend.clock)
    backend.opened.append(store)
    assert isinstance(store, SqliteStore if backend.name == "sqlite" else RedisStore)
    assert await store.take([Quota("day", 1, window(backend))]) is None
    assert await (await backend.store()).count("day") == 1


# Values, claims and lists. Items and values are caller-written JSON: quotes, newlines, emoji, up to ~100 KB.
AWKWARD_TEXT = '{"text": "say \\"hi\\"\\n", "raw": "line one\nline two", "emoji": "🦜👩🏽‍💻", \'single\': "ok"}'
LARGE_TEXT = "".join(f"{n:06d}é✓" for n in range(100_000 // 8))  # ~100 KB of mixed one- to three-byte UTF-8


def present(read: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[int]]:
    """`read` as the 1-or-0 that `assert_expires_at` and `pass_beyond` expect: 1 while the entry exists."""

    async def exists() -> int:
        return int(await read() not in (None, []))

    return exists


async def test_a_value_is_read_back_overwritten_and_missing_when_never_put(backend: Backend) -> None:
    store = await backend.store()
    await store.put_value("conversation:C1", AWKWARD_TEXT, window(backend))
    await store.put_value("large", LARGE_TEXT, window(backend))

    assert await store.get_value("conversation:C1") == AWKWARD_TEXT
    assert await store.get_value("large") == LARGE_TEXT
    assert await store.get_value("never-put") is None

    await store.put_value("conversation:C1", "[]", window(backend))
    assert await store.get_value("conversation:C1") == "[]"


async def test_a_value_expires_at_its_latest_write_even_an_earlier_one(backend: Backend) -> None:
    store = await backend.store()
    first, earlier = window(backend, 100), window(backend, 50)
    read = present(lambda: store.get_value("link"))
    await store.put_value("link", "a", first)
    await backend.assert_expires_at(store, ["value:link"], read, first)

    await store.put_value("link", "b", earlier)  # this write's expiry, not the later of two
    await backend.assert_expires_at(store, ["value:link"], read, earlier)
    assert await store.get_value("link") == "b"


async def test_an_expired_value_reads_missing_and_a_new_write_starts_fresh(backend: Backend) -> None:
    store = await backend.store()
    soon = backend.now() + 0.3
    await store.put_value("link", "old", soon)
    await backend.pass_beyond(soon, present(lambda: store.get_value("link")))

    assert await store.get_value("link") is None
    later = window(backend)
    await store.put_value("link", "new", later)
    assert await store.get_value("link") == "new"
    await backend.assert_expires_at(store, ["value:link"], present(lambda: store.get_value("link")), later)


async def test_a_claim_is_won_once_until_it_expires_then_once_again(backend: Backend) -> None:
    store = await backend.store()
    soon = backend.now() + 0.3
    assert await store.claim("delivery:E1", soon) is True
    assert await store.claim("delivery:E1", window(backend)) is False
    assert await store.claim("delivery:E2", soon) is True  # another key is another claim
    if backend.inspector is not None:
        assert await backend.inspector.pexpiretime("claim:delivery:E1") == int(soon * 1000)
    else:
        backend.clock.now = soon - 0.001
        assert await store.claim("delivery:E1", window(backend)) is False

    await backend.pass_beyond(soon, lambda: raw_exists(backend, "claim:delivery:E1"))
    later = window(backend)
    assert await store.claim("delivery:E1", later) is True
    assert await store.claim("delivery:E1", later) is False


async def raw_exists(backend: Backend, raw_key: str) -> int:
    """Redis: whether the key is still there (a claim cannot be read without taking it); SQLite never asks."""
    assert backend.inspector is not None
    return int(await backend.inspector.exists(raw_key))


@pytest.mark.parametrize("stores", [1, 2], ids=["one store", "two stores"])
async def test_fifty_concurrent_claims_of_one_key_let_exactly_one_through(backend: Backend, stores: int) -> None:
    opened = [await backend.store() for _ in range(stores)]
    until = window(backend)

    outcomes = await asyncio.gather(*(opened[n % stores].claim("delivery:E1", until) for n in range(50)))

    assert outcomes.count(True) == 1
    assert outcomes.count(False) == 49


async def test_a_burst_of_three_hundred_calls_at_once_all_complete(backend: Backend) -> None:
    """As many calls at once as commands arrive together (a client's connection pool must queue them, not fail)."""
    store = await backend.store()
    until = window(backend)

    outcomes = await asyncio.gather(*(store.claim(f"delivery:B{n}", until) for n in range(300)))

    assert outcomes == [True] * 300


async def test_items_come_back_in_order_and_append_returns_the_new_length(backend: Backend) -> None:
    store = await backend.store()
    until = window(backend)
    lengths = [await store.append_item("turns:C1", item, until) for item in ("first", AWKWARD_TEXT, LARGE_TEXT, "")]
    assert await store.append_item("turns:C2", "other", until) == 1

    assert lengths == [1, 2, 3, 4]
    assert await store.items("turns:C1") == ["first", AWKWARD_TEXT, LARGE_TEXT, ""]
    assert await store.items("turns:C2") == ["other"]
    assert await store.items("never-appended") == []


async def test_a_list_keeps_the_later_expiry_and_starts_fresh_after_it(backend: Backend) -> None:
    store = await backend.store()
    first, earlier, latest = window(backend, 100), window(backend, 50), window(backend, 200)
    read = present(lambda: store.items("turns"))
    await store.append_item("turns", "a", first)
    await store.append_item("turns", "b", earlier)
    await backend.assert_expires_at(store, ["list:turns"], read, first)
    await store.append_item("turns", "c", latest)
    await backend.assert_expires_at(store, ["list:turns"], read, latest)
    assert await store.items("turns") == ["a", "b", "c"]

    soon = backend.now() + 0.3
    await store.append_item("short", "old", soon)
    await store.append_item("short", "older", soon)
    await backend.pass_beyond(soon, present(lambda: store.items("short")))
    assert await store.items("short") == []

    assert await store.append_item("short", "new", window(backend)) == 1  # not purged, yet forgotten
    assert await store.items("short") == ["new"]


async def test_a_hundred_concurrent_appends_from_two_stores_lose_nothing(backend: Backend) -> None:
    opened = [await backend.store() for _ in range(2)]
    until = window(backend)
    sent = [f"item {n}" for n in range(100)]

    lengths = await asyncio.gather(*(opened[n % 2].append_item("turns", item, until) for n, item in enumerate(sent)))

    assert sorted(lengths) == list(range(1, 101))
    stored = await opened[0].items("turns")
    assert sorted(stored) == sorted(sent)
    assert [stored[length - 1] for length in lengths] == sent  # each item sits where its append said


async def test_purge_expired_deletes_expired_values_claims_and_lists(backend: Backend) -> None:
    store = await backend.store()
    soon, later = backend.now() + 0.3, window(backend)
    await store.put_value("gone", "x", soon)
    await store.put_value("kept", "y", later)
    assert await store.claim("gone-claim", soon) is True
    assert await store.claim("kept-claim", later) is True
    for item in ("a", "b"):
        await store.append_item("gone-list", item, soon)
        await store.append_item("kept-list", item, later)
    await backend.pass_beyond(soon, present(lambda: store.get_value("gone")))
    await backend.pass_beyond(soon, present(lambda: store.items("gone-list")))
    await backend.pass_beyond(soon, lambda: raw_exists(backend, "claim:gone-claim"))

    assert await store.purge_expired() == (3 if backend.name == "sqlite" else 0)  # Redis expires keys itself
    assert await store.purge_expired() == 0
    assert [await store.get_value("kept"), await store.items("kept-list")] == ["y", ["a", "b"]]
    assert await store.claim("kept-claim", later) is False
    if isinstance(store, SqliteStore):  # what the file still holds: the kept entries and nothing of the others
        assert await store._call(lambda db: db.execute(
            "SELECT (SELECT group_concat(key) FROM vals), (SELECT group_concat(key) FROM claims), "
            "(SELECT group_concat(key) FROM lists), (SELECT group_concat(DISTINCT key) FROM items)").fetchone()) \
            == ("kept", "kept-claim", "kept-list", "kept-list")


async def test_values_claims_and_lists_outlive_closing_and_reopening(backend: Backend) -> None:
    store = await backend.store()
    until = window(backend)
    await store.put_value("link", AWKWARD_TEXT, until)
    assert await store.claim("delivery:E1", until) is True
    await store.append_item("turns", "a", until)
    await store.append_item("turns", LARGE_TEXT, until)
    await store.aclose()

    reopened = await backend.store()
    assert await reopened.get_value("link") == AWKWARD_TEXT
    assert await reopened.claim("delivery:E1", until) is False
    assert await reopened.items("turns") == ["a", LARGE_TEXT]
    assert await reopened.append_item("turns", "b", until) == 3


async def test_entries_are_put_replaced_listed_by_collection_and_deleted_once(backend: Backend) -> None:
    store = await backend.store()
    await store.put_entry("inflight", "r1", AWKWARD_TEXT)
    await store.put_entry("inflight", "r2", "two")
    await store.put_entry("other", "r1", "elsewhere")
    await store.put_entry("inflight", "r2", "two, replaced")

    assert await store.entries("inflight") == {"r1": AWKWARD_TEXT, "r2": "two, replaced"}
    assert await store.get_entry("inflight", "r2") == "two, replaced"
    assert await store.get_entry("inflight", "never") is None
    assert await store.entries("empty") == {}

    deletions = await asyncio.gather(*(store.delete_entry("inflight", "r1") for _ in range(5)))
    assert deletions.count(True) == 1
    assert await store.entries("inflight") == {"r2": "two, replaced"}
    assert await store.get_entry("other", "r1") == "elsewhere"


async def test_entries_never_expire_and_outlive_closing_and_reopening(backend: Backend) -> None:
    store = await backend.store()
    await store.put_entry("inflight", "r1", LARGE_TEXT)
    await store.aclose()
    if backend.inspector is None:
        backend.clock.now += 10 * 365 * 86_400

    reopened = await backend.store()
    assert await reopened.purge_expired() == 0
    assert await reopened.entries("inflight") == {"r1": LARGE_TEXT}
