"""Remembers recently seen delivery keys, so a redelivered command never runs (or bills) twice.

Slack retries deliveries and Discord may redeliver a dispatch after a resume; both carry the same
id (Slack `event_id` / `trigger_id`, Discord interaction id). Keys expire after `ttl_s`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_TTL_S = 15 * 60.0  # longer than any platform's redelivery window
DEFAULT_MAX_KEYS = 100_000


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
