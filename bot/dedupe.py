"""Remembers recently seen delivery keys, so a redelivered command never runs (or bills) twice.

Slack retries deliveries and Discord may redeliver a dispatch after a resume; both carry the same
id (Slack `event_id` / `trigger_id`, Discord interaction id). Keys expire after `ttl_s`.

Several processes sharing one state store are one bot: Slack sends each Socket Mode envelope to one of the
app's connections and an HTTP retry to whichever process the load balancer picks, so a redelivery may reach
another process than the first delivery did. `DeliveryClaims` asks this process's memory first (a repeat it
saw itself costs no round trip), then the store, whose `claim` only one caller wins.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from bot.state.store import StateStore, StateStoreError

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 15 * 60.0  # longer than any platform's redelivery window
DEFAULT_MAX_KEYS = 100_000
CLAIM_PREFIX = "delivery:"  # the store's claim keys for deliveries (button double presses use `press:`)


class RecentKeys:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen within the TTL; False for a repeat."""
        now = self._clock()
        while self._seen:
            _, seen_at = next(iter(self._seen.items()))
            if now - seen_at <= self._ttl_s and len(self._seen) < self._max_keys:
                break
            self._seen.popitem(last=False)
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


class DeliveryClaims:
    """A delivery is taken once across every process on the store: this process's memory first, then the store.

    Until `use_store` (no state store yet, or none at all) only this process's memory decides.
    """

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        *,
        local: RecentKeys | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ttl_s = ttl_s
        self._local = local if local is not None else RecentKeys(ttl_s)
        self._clock = clock
        self._store: StateStore | None = None

    def use_store(self, store: StateStore) -> None:
        self._store = store

    async def claim(self, key: str) -> bool:
        """True for the first delivery of `key` in any process on the store; False for a repeat: drop it.

        One store round trip for a key this process has not seen. If the store fails, this process's memory
        decides (logged): a command answered is better than a command dropped, and the next store call (its
        limits) will fail the same way and be answered as such.
        """
        if not self._local.claim(key):
            return False
        if self._store is None:
            return True
        try:
            return await self._store.claim(CLAIM_PREFIX + key, self._clock() + self._ttl_s)
        except StateStoreError as error:
            log.warning("Could not claim delivery %s in the state store (%s); taking it in this process only",
                        key, error)
            return True
