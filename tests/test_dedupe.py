"""`bot.dedupe.RecentKeys`: a redelivered key is refused while remembered; memory is bounded by age and count."""

from __future__ import annotations

from bot.dedupe import RecentKeys


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
