"""Who may start a prediction, and what it may cost: one decision before anything is created or posted.

A command is checked in this order: the bot paused, the user blocked, the channel not allowed, today's budget
spent, then, in one atomic step of the state store, the user's running-and-queued commands and their per-user
limits (`StateStore.take`: all counters or none, so 50 commands in the same instant against a limit of 10 take
exactly 10 units). The units are reserved before the prediction exists: a command that never reached Replicate
gives its use back (`release`), and the running slot always goes back when the command ends.

Admin settings (`limit`, `block`, `pause`) live in the store and win over the environment; they are read through
a short cache, which this process's own changes clear at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from bot.errors import FailureKind
from bot.pricing import MICRO_USD_PER_USD, format_usd
from bot.requests import CommandName, Origin
from bot.state.store import Quota, StateStore
from config.governance import GovernanceSettings, UseLimit, Window

log = logging.getLogger(__name__)
_Value = TypeVar("_Value")

SETTINGS_CACHE_S = 1.0  # another process's admin change is seen within this long
BUDGET_CACHE_S = 1.0  # likewise another process's spend
# A running slot outlives a crash by at most this long past the prediction timeout (no one is locked out for good).
RUNNING_SLOT_MARGIN_S = 120.0
COUNTER_KEEP_S = 86_400.0  # a window's counter is kept a day past its end (`usage` shows yesterday's hour too)
UNLIMITED = "none"
NO_LIMIT = 10**12  # the cap of a counter kept only for `usage`
PAUSED_SETTING = "paused"


@dataclass(frozen=True)
class Refusal:
    reason: FailureKind  # a stable name the log line (and metrics) key on
    message: str


@dataclass(frozen=True)
class Pass:
    """What an admitted command holds: its running slot, and the use counters it took a unit of."""

    user: str  # "platform:user_id"
    command: CommandName
    running_key: str
    use_keys: tuple[str, ...]


@dataclass(frozen=True)
class CommandUse:
    command: CommandName
    today: int
    limit: UseLimit | None
    in_window: int  # uses in the limit's current window (today's, for a daily limit)
    resets_at: datetime | None


@dataclass(frozen=True)
class UserUsage:
    user: str
    commands: tuple[CommandUse, ...]
    running: int
    max_running: int
    spent_micro_usd: int
    blocked: bool


@dataclass(frozen=True)
class DayUsage:
    spent_micro_usd: int
    budget_usd: float | None
    paused: bool
    top: tuple[tuple[str, int, int], ...]  # (user, micro-dollars, commands), highest spend first


class _Cached(Generic[_Value]):
    """A value read from the store, kept for `ttl_s`; one read at a time (a burst of commands shares it)."""

    def __init__(self, read: Callable[[], Awaitable[_Value]], ttl_s: float, clock: Callable[[], float]) -> None:
        self._read, self._ttl_s, self._clock = read, ttl_s, clock
        self._value: _Value | None = None
        self._read_at = -math.inf
        self._reading: asyncio.Future[_Value] | None = None

    async def get(self) -> _Value:
        if self._value is not None and self._clock() - self._read_at <= self._ttl_s:
            return self._value
        if self._reading is None:
            # Owned here and awaited by every caller; shielded, so one caller that goes away stops nobody's read.
            self._reading = asyncio.get_running_loop().create_task(self._refresh(), name="governance-read")
            self._reading.add_done_callback(_retrieve)
        return await asyncio.shield(self._reading)

    def forget(self) -> None:
        self._read_at = -math.inf

    def adjust(self, change: Callable[[_Value], _Value]) -> None:
        """Apply this process's own change to the kept value (no read needed to see it)."""
        if self._value is not None:
            self._value = change(self._value)

    @property
    def last(self) -> _Value | None:
        return self._value

    async def _refresh(self) -> _Value:
        try:
            value = await self._read()
            self._value, self._read_at = value, self._clock()
            return value
        finally:
            self._reading = None


class Governor:
    def __init__(
        self,
        store: StateStore,
        settings: GovernanceSettings,
        *,
        running_slot_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._running_slot_s = running_slot_s + RUNNING_SLOT_MARGIN_S
        self._clock = clock
        self._admin_settings = _Cached(self._store.get_settings, SETTINGS_CACHE_S, clock)
        self._spend = _Cached(self._read_spend_today, BUDGET_CACHE_S, clock)
        self._budget_warned_day: str | None = None

    def is_admin(self, origin: Origin) -> bool:
        """Admins: `ADMIN_USERS`, whoever the platform says administers the place, and the console's user."""
        return origin.platform == "console" or origin.platform_admin or user_key(origin) in self._settings.admin_users

    async def admit(self, origin: Origin, command: CommandName) -> Pass | Refusal:
        """Take the command's units, or say privately why not and when it will be possible."""
        now = self._now()
        settings = await self._admin_settings_now()
        user = user_key(origin)
        if settings.get(PAUSED_SETTING):
            return Refusal(FailureKind.PAUSED, "The bot is paused by its admins. Try again once they resume it.")
        if settings.get(f"blocked:{user}"):
            return Refusal(FailureKind.BLOCKED, "An admin has blocked you from using this bot.")
        if not self._channel_allowed(origin):
            return Refusal(
                FailureKind.CHANNEL_NOT_ALLOWED, "This bot doesn't answer in this channel. Ask an admin where it does."
            )
        budget = self._settings.daily_budget_usd
        if budget is not None and await self._spent_today() >= budget * MICRO_USD_PER_USD:
            self._warn_budget_once(now, budget)
            return Refusal(
                FailureKind.BUDGET_REACHED,
                f"The bot has spent today's budget. New commands are possible again {_when(_next_day(now), now)}.",
            )
        running = Quota(
            f"running:{user}", self._settings.max_concurrent_per_user, now.timestamp() + self._running_slot_s
        )
        limit = self._limit_for(settings, user, command)
        daily = limit if limit is not None and limit.window is Window.DAY else None
        quotas = [running, _use_quota(user, command, Window.DAY, _window_start(now, Window.DAY), daily)]
        if limit is not None and limit.window is Window.HOUR:
            quotas.append(_use_quota(user, command, Window.HOUR, _window_start(now, Window.HOUR), limit))
        full = await self._store.take(quotas)
        if full is not None and full.key == running.key:
            n = self._settings.max_concurrent_per_user
            return Refusal(
                FailureKind.TOO_MANY_RUNNING,
                f"You already have {n} command{'s' if n != 1 else ''} running or waiting, the most at once. "
                "Try again when one of them has finished.",
            )
        if full is not None and limit is not None:
            resets = _window_start(now, limit.window) + _length(limit.window)
            per = "today" if limit.window is Window.DAY else "this hour"
            return Refusal(
                FailureKind.LIMIT_REACHED,
                f"You've used your {limit.count} /{command} command{'s' if limit.count != 1 else ''} for {per}. "
                f"The next one is possible {_when(resets, now)}.",
            )
        return Pass(user, command, running.key, tuple(quota.key for quota in quotas[1:]))

    async def release(self, admitted: Pass, *, reached_replicate: bool) -> None:
        """The command ended: its running slot goes back, and so does its use if Replicate never took it."""
        await self._store.give_back([admitted.running_key, *(() if reached_replicate else admitted.use_keys)])

    async def record_spend(self, admitted: Pass, micro_usd: int) -> None:
        """Add a finished prediction's estimated cost to today's board (and its user's row on it)."""
        now = self._now()
        keep_until = (_next_day(now) + timedelta(days=self._settings.retention_days)).timestamp()
        day = _day_name(now)
        await asyncio.gather(  # one store round trip for both boards
            self._store.add_ranked(f"spend:{day}", admitted.user, micro_usd, keep_until),
            self._store.add_ranked(f"commands:{day}", admitted.user, 1, keep_until),
        )
        self._spend.adjust(lambda spent: spent + micro_usd)

    # What /replicate shows.

    async def usage_of(self, user: str) -> UserUsage:
        now = self._now()
        settings = await self._admin_settings_now()
        uses = []
        for command in CommandName:
            limit = self._limit_for(settings, user, command)
            today = await self._store.count(_use_key(user, command, Window.DAY, _window_start(now, Window.DAY)))
            in_window, resets = today, _next_day(now)
            if limit is not None and limit.window is Window.HOUR:
                hour = _window_start(now, Window.HOUR)
                in_window = await self._store.count(_use_key(user, command, Window.HOUR, hour))
                resets = hour + _length(Window.HOUR)
            uses.append(CommandUse(command, today, limit, in_window, resets if limit else None))
        return UserUsage(
            user=user,
            commands=tuple(uses),
            running=await self._store.count(f"running:{user}"),
            max_running=self._settings.max_concurrent_per_user,
            spent_micro_usd=await self._store.score(f"spend:{_day_name(now)}", user),
            blocked=bool(settings.get(f"blocked:{user}")),
        )

    async def today(self, top: int = 5) -> DayUsage:
        day = _day_name(self._now())
        leaders = await self._store.top(f"spend:{day}", top)
        rows = tuple([(user, spent, await self._store.score(f"commands:{day}", user)) for user, spent in leaders])
        settings = await self._admin_settings_now()
        return DayUsage(
            spent_micro_usd=await self._store.total(f"spend:{day}"),
            budget_usd=self._settings.daily_budget_usd,
            paused=bool(settings.get(PAUSED_SETTING)),
            top=rows,
        )

    # Admin changes: stored, so they outlast restarts and reach every process; they win over the environment.

    async def set_limit(self, target: str | None, command: CommandName, limit: UseLimit | None) -> None:
        """`target` None: everyone's default. `limit` None: no limit."""
        await self._put(f"limit:{target or 'default'}:{command}", str(limit) if limit else UNLIMITED)

    async def reset_limit(self, target: str | None, command: CommandName) -> None:
        """Back to what the environment says (`LIMITS`)."""
        await self._put(f"limit:{target or 'default'}:{command}", None)

    async def set_blocked(self, user: str, blocked: bool) -> None:
        await self._put(f"blocked:{user}", "1" if blocked else None)

    async def set_paused(self, paused: bool) -> None:
        await self._put(PAUSED_SETTING, "1" if paused else None)

    async def limit_of(self, user: str | None, command: CommandName) -> UseLimit | None:
        return self._limit_for(await self._admin_settings_now(), user or "default", command)

    async def _put(self, name: str, value: str | None) -> None:
        await self._store.put_setting(name, value)
        self._admin_settings.forget()

    def _limit_for(self, settings: Mapping[str, str], user: str, command: CommandName) -> UseLimit | None:
        for name in (f"limit:{user}:{command}", f"limit:default:{command}"):
            stored = settings.get(name)
            if stored is not None:
                return None if stored == UNLIMITED else UseLimit.parse(stored)
        return self._settings.limits.get(str(command))

    def _channel_allowed(self, origin: Origin) -> bool:
        allowed = self._settings.allowed_channels
        return not allowed or origin.channel_id in allowed or f"{origin.platform}:{origin.channel_id}" in allowed

    async def _admin_settings_now(self) -> Mapping[str, str]:
        return await self._admin_settings.get()

    async def _spent_today(self) -> int:
        return await self._spend.get()

    async def _read_spend_today(self) -> int:
        return await self._store.total(f"spend:{_day_name(self._now())}")

    def _warn_budget_once(self, now: datetime, budget_usd: float) -> None:
        day = _day_name(now)
        if self._budget_warned_day != day:
            self._budget_warned_day = day
            log.warning(
                "DAILY_BUDGET_USD reached: %s spent today (UTC) of $%g; new commands are refused until 00:00 UTC",
                format_usd(self._spend.last or 0), budget_usd,
            )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _retrieve(read: asyncio.Future[Any]) -> None:
    """Every caller may have gone: the read's failure is then theirs to have seen, not an asyncio warning."""
    if not read.cancelled():
        read.exception()


def user_key(origin: Origin) -> str:
    return f"{origin.platform}:{origin.user_id}"


def _use_quota(user: str, command: CommandName, window: Window, start: datetime, limit: UseLimit | None) -> Quota:
    """A use counter; without a limit it still counts (for `usage`) and can never be full."""
    keep_until = (start + _length(window)).timestamp() + COUNTER_KEEP_S
    return Quota(_use_key(user, command, window, start), limit.count if limit else NO_LIMIT, keep_until)


def _use_key(user: str, command: CommandName, window: Window, start: datetime) -> str:
    stamp = start.strftime("%Y%m%d") if window is Window.DAY else start.strftime("%Y%m%dT%H")
    return f"use:{user}:{command}:{stamp}"


def _window_start(now: datetime, window: Window) -> datetime:
    start = now.replace(minute=0, second=0, microsecond=0)
    return start.replace(hour=0) if window is Window.DAY else start


def _length(window: Window) -> timedelta:
    return timedelta(days=1) if window is Window.DAY else timedelta(hours=1)


def _next_day(now: datetime) -> datetime:
    return _window_start(now, Window.DAY) + timedelta(days=1)


def _day_name(now: datetime) -> str:
    return now.strftime("%Y%m%d")


def _when(at: datetime, now: datetime) -> str:
    """`at 15:00 UTC (in 42 min)`."""
    minutes = max(1, round((at - now).total_seconds() / 60))
    span = f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min".replace(" 0 min", "")
    return f"at {at:%H:%M} UTC (in {span})"
