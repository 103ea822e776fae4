"""`bot.replicate_client`: small pools handed out by load, and Retry-After parsing."""

from __future__ import annotations

import pytest

from bot.replicate_client import ReplicateClients, parse_retry_after


async def test_enough_small_clients_are_built_for_the_connections_needed() -> None:
    clients = ReplicateClients.build("r8_token", "http://127.0.0.1:1", max_connections=410, per_client=32)
    try:
        assert len(clients) == 13
    finally:
        await clients.aclose()


async def test_each_prediction_leases_the_least_busy_client_and_gives_it_back() -> None:
    clients = ReplicateClients.build("r8_token", "http://127.0.0.1:1", max_connections=96, per_client=32)
    try:
        with clients.lease() as first, clients.lease() as second, clients.lease() as third:
            assert len({id(first), id(second), id(third)}) == 3  # spread, not stacked
            with clients.lease() as fourth:
                assert fourth in (first, second, third)
        with clients.lease() as again:
            assert again is first  # all free again: the first is the least busy
    finally:
        await clients.aclose()


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), (" 1.5 ", 1.5), ("", None), (None, None),
                                                 ("-1", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None)])
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
