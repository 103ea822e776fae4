"""`bot.dedupe`: a redelivered key is refused while remembered (`RecentKeys`, memory bounded by age and count), and
in every process on one state store (`DeliveryClaims`, on SQLite and on a real redis-server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from bot.dedupe import CLAIM_PREFIX, DEFAULT_TTL_S, DeliveryClaims, RecentKeys
from bot.state import StateStore, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_claimed_once_and_refused_when_it_comes_again() -> None:
    keys = RecentKeys(ttl_s=60, clock=Clock())

    assert keys.claim("Ev01") is True
    assert keys.claim("Ev02") is True
    assert keys.claim("Ev01") is False


def test_a_key_is_remembered_for_the_ttl_and_forgotten_after_it() -> None:
    clock = Clock()
    keys = RecentKeys(ttl_s=60, clock=clock)
    keys.claim("Ev01")

    clock.now += 60
    assert keys.claim("Ev01") is False
    clock.now += 61  # past the TTL, whether or not the refused repeat refreshed the key
    assert keys.claim("Ev01") is True


def test_the_oldest_keys_are_forgotten_beyond_max_keys() -> None:
    keys = RecentKeys(ttl_s=60, max_keys=2, clock=Clock())
    for key in ("Ev01", "Ev02", "Ev03"):
        keys.claim(key)

    assert keys.claim("Ev01") is True  # pushed out by Ev03: memory stays bounded under a flood of deliveries


# --- `bot.dedupe.DeliveryClaims`: this process's memory first, then the state store every process shares -------


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One store's data, which each `open_store(state_url)` opens anew, as each bot process does."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'bot.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def stores(state_url: str) -> AsyncIterator[Callable[[], Awaitable[StateStore]]]:
    opened: list[StateStore] = []

    async def open_one() -> StateStore:
        opened.append(await open_store(state_url))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.aclose()


class CountingStore:
    """A real store, counting the claims that reach it."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.claims = 0

    async def claim(self, key: str, expires_at: float) -> bool:
        self.claims += 1
        return await self.store.claim(key, expires_at)


async def test_a_delivery_taken_by_one_process_is_refused_to_another(
    stores: Callable[[], Awaitable[StateStore]],
) -> None:
    first, second = DeliveryClaims(), DeliveryClaims()  # two processes: each its own memory
    first.use_store(await stores())
    second.use_store(await stores())

    assert await first.claim("slack:T0TEAM:trigger-1") is True
    assert await second.claim("slack:T0TEAM:trigger-1") is False
    assert await second.claim("slack:T0TEAM:trigger-2") is True
    assert await first.claim("slack:T0TEAM:trigger-2") is False


async def test_racing_processes_take_a_delivery_exactly_once(stores: Callable[[], Awaitable[StateStore]]) -> None:
    processes = [DeliveryClaims() for _ in range(4)]
    for claims in processes:
        claims.use_store(await stores())

    taken = await asyncio.gather(*(claims.claim("discord:1234") for claims in processes))

    assert sorted(taken) == [False, False, False, True]


async def test_a_redelivery_after_a_restart_is_refused(state_url: str) -> None:
    before = DeliveryClaims()
    store = await open_store(state_url)
    before.use_store(store)
    assert await before.claim("slack:T0TEAM:Ev01") is True
    await store.aclose()  # the process stops; its memory goes with it

    after = DeliveryClaims()
    store = await open_store(state_url)
    after.use_store(store)
    try:
        assert await after.claim("slack:T0TEAM:Ev01") is False
    finally:
        await store.aclose()


async def test_a_repeat_seen_in_this_process_is_dropped_without_asking_the_store(
    stores: Callable[[], Awaitable[StateStore]],
) -> None:
    counting = CountingStore(await stores())
    claims = DeliveryClaims()
    claims.use_store(cast(StateStore, counting))

    assert await claims.claim("discord:1") is True
    assert await claims.claim("discord:1") is False
    assert counting.claims == 1


async def test_a_claim_is_kept_in_the_store_for_the_ttl(stores: Callable[[], Awaitable[StateStore]]) -> None:
    clock = Clock()
    claims = DeliveryClaims(ttl_s=DEFAULT_TTL_S, clock=clock)
    store = await stores()
    claims.use_store(store)
    clock.now = time.time()

    assert await claims.claim("slack:T0TEAM:Ev02") is True
    assert await store.claim(CLAIM_PREFIX + "slack:T0TEAM:Ev02", clock.now + DEFAULT_TTL_S) is False


async def test_a_failing_store_leaves_the_decision_to_this_process(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    claims = DeliveryClaims()
    claims.use_store(store)
    await store.aclose()  # every call now raises StateStoreError

    assert await claims.claim("slack:T0TEAM:Ev03") is True  # answered rather than dropped
    assert await claims.claim("slack:T0TEAM:Ev03") is False  # and still once in this process


async def test_without_a_store_this_process_alone_decides() -> None:
    claims = DeliveryClaims()

    assert await claims.claim("console:1") is True
    assert await claims.claim("console:1") is False
