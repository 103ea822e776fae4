"""Discord's gateway in shards: how many, which ones this process runs, where they connect, and whose turn it is
to IDENTIFY.

Discord sends a guild's events to shard `(guild_id >> 22) % shard_count` and DMs to shard 0 only; several processes
split the shards between them (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS), by default one process runs every shard
`GET /gateway/bot` recommends (https://discord.com/developers/docs/events/gateway#sharding).

IDENTIFYs are rate limited: `max_concurrency` per 5 s, one per key `shard_id % max_concurrency`; one over the limit
is answered with op 9 and has to be sent again, and 1,000 a day is the most Discord takes
(https://discord.com/developers/docs/events/gateway#session-start-limit-object). discord.py only spaces out the
IDENTIFYs of one process (`Client.before_identify_hook` sleeps 5 s); `IdentifyTurns` spaces those of every process
through the shared state store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import discord
import yarl

from bot.state.store import StateStore, StateStoreError
from config.settings import DEFAULT_DISCORD_API_URL, DiscordSettings

log = logging.getLogger(__name__)

IDENTIFY_WINDOW_S = 5.0  # one IDENTIFY per rate-limit key per 5 s (session_start_limit.max_concurrency per 5 s)
IDENTIFY_RETRY_S = 0.25  # how often a process waiting for its turn asks the store again
IDENTIFY_KEY = "discord:identify:{application}:{key}"


@dataclass(frozen=True)
class GatewayPlan:
    """What `GET /gateway/bot` said, with the settings applied: the shards this process runs, out of how many."""

    shard_count: int
    shard_ids: tuple[int, ...]
    max_concurrency: int


async def plan_gateway(client: discord.AutoShardedClient, config: DiscordSettings) -> GatewayPlan:
    """Ask Discord once for the recommended shard count, the IDENTIFY concurrency and (with only DISCORD_API_URL set:
    a proxy, a test server) the gateway's URL; then point `client` at exactly the shards this process runs.

    discord.py asks `GET /gateway/bot` itself when it has no shard count, but then connects to the URL it was given
    there, ignoring DISCORD_GATEWAY_URL: setting the count here keeps the configured gateway.
    """
    recommended, url, limits = await client.http.get_bot_gateway()
    if not config.gateway_url and config.api_url.rstrip("/") != DEFAULT_DISCORD_API_URL:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    shard_count: int | None = client.shard_count  # None until set: discord.py's annotation says int
    if shard_count is None:
        shard_count = client.shard_count = recommended
    shard_ids = config.shard_ids or tuple(range(shard_count))
    max_concurrency = max(int(limits.get("max_concurrency", 1)), 1)
    log.info("Discord: running shard(s) %s of %d (Discord recommends %d; %d IDENTIFY(s) at once, %s left today)",
             ",".join(map(str, shard_ids)), shard_count, recommended, max_concurrency, limits.get("remaining", "?"))
    return GatewayPlan(shard_count, shard_ids, max_concurrency)


def sharded_client(config: DiscordSettings, **options: Any) -> discord.AutoShardedClient:
    """The client for the shards of DISCORD_SHARD_COUNT/IDS; without a count, `plan_gateway` sets Discord's."""
    if config.shard_ids:
        return discord.AutoShardedClient(shard_count=config.shard_count, shard_ids=list(config.shard_ids), **options)
    return discord.AutoShardedClient(shard_count=config.shard_count, **options)


class IdentifyTurns:
    """`before_identify_hook` for every process of one bot: a shard IDENTIFYs only once it holds its rate-limit key
    for 5 s in the state store, so processes starting (or reconnecting) together are never answered op 9."""

    def __init__(
        self,
        store: Callable[[], StateStore | None],
        application_id: int,
        max_concurrency: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._application_id = application_id
        self._max_concurrency = max_concurrency
        self._clock = clock

    async def wait_turn(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Return when shard `shard_id` may IDENTIFY (discord.py awaits this before each one)."""
        store = self._store()
        if store is None:  # no store to share turns through: discord.py's own spacing, within this process
            await _pause_unless_initial(initial)
            return
        key = IDENTIFY_KEY.format(application=self._application_id, key=(shard_id or 0) % self._max_concurrency)
        try:
            while True:
                if await store.claim(key, self._clock() + IDENTIFY_WINDOW_S):
                    return
                await asyncio.sleep(IDENTIFY_RETRY_S)  # another process's turn: it ends with its claim, within 5 s
        except StateStoreError as error:  # the gateway must not wait on a broken store: discord.py's spacing
            log.warning("Discord: shard %s could not take its IDENTIFY turn in the state store (%s); "
                        "waiting %.0f s instead", shard_id, error, IDENTIFY_WINDOW_S)
            await _pause_unless_initial(initial)


async def _pause_unless_initial(initial: bool) -> None:
    """What discord.py's default `before_identify_hook` does."""
    if not initial:
        await asyncio.sleep(IDENTIFY_WINDOW_S)


def shard_states(client: discord.AutoShardedClient, shard_ids: tuple[int, ...]) -> dict[int, bool]:
    """Whether each shard this process runs has its gateway socket open (False until it first connects, and while
    it reconnects: discord.py keeps the old, closed socket until the new one is up)."""
    shards = client.shards
    return {shard_id: shard_id in shards and not shards[shard_id].is_closed() for shard_id in shard_ids}
