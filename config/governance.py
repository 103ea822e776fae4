"""The governance settings: where state lives, per-user limits, the daily budget and its prices, access, admins.

Parsed once with the rest of the settings (`config.settings`); a malformed value stops start-up with one line
naming the variable and the fix (`SettingsError`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import overload

from config.errors import SettingsError

DEFAULT_STATE_URL = "sqlite:///data/bot.db"
DEFAULT_RETENTION_DAYS = 30
DEFAULT_MAX_CONCURRENT_PER_USER = 3
DEFAULT_PRICE_PER_SECOND = 0.001
LIMITED_COMMANDS = ("ask", "imagine")
PLATFORMS = ("slack", "discord", "console")

_LIMIT = re.compile(r"^\s*(?P<command>[a-z]+)\s*=\s*(?P<count>\d+)\s*/\s*(?P<window>hour|day)\s*$")
_PRICE_TERM = re.compile(r"^\s*(?P<usd>\d+(?:\.\d+)?(?:e-?\d+)?)\s*/\s*(?P<unit>[A-Za-z-]+)\s*$")
_MODEL = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class Window(StrEnum):
    """A calendar window in UTC: a limit of N per hour resets at the top of each hour, per day at 00:00 UTC."""

    HOUR = "hour"
    DAY = "day"


@dataclass(frozen=True)
class UseLimit:
    """At most `count` commands of one kind per calendar `window`, per user."""

    count: int
    window: Window

    def __str__(self) -> str:
        return f"{self.count}/{self.window}"

    @classmethod
    def parse(cls, text: str) -> UseLimit:
        """`N/hour` or `N/day`; raises ValueError otherwise."""
        count, _, window = text.strip().partition("/")
        if not count.strip().isdigit() or window.strip() not in Window.__members__.values():
            raise ValueError(f"{text!r} is not N/hour or N/day")
        return cls(int(count), Window(window.strip()))


class PriceUnit(StrEnum):
    """What a model is billed by: Replicate bills official models per output (image, token), others by time."""

    SECOND = "s"  # of the prediction's `metrics.predict_time`
    IMAGE = "image"  # per output file
    RUN = "run"  # per prediction
    MILLION_INPUT_TOKENS = "Mtok-in"  # `metrics.input_token_count`
    MILLION_OUTPUT_TOKENS = "Mtok-out"  # `metrics.output_token_count`


@dataclass(frozen=True)
class Price:
    """A model's price: one or more terms added together (`0.05/Mtok-in+0.25/Mtok-out`)."""

    terms: tuple[tuple[float, PriceUnit], ...]

    def __str__(self) -> str:
        return "+".join(f"{usd:g}/{unit}" for usd, unit in self.terms)


@dataclass(frozen=True)
class GovernanceSettings:
    state_url: str = DEFAULT_STATE_URL
    retention_days: int = DEFAULT_RETENTION_DAYS
    limits: Mapping[str, UseLimit] = field(default_factory=dict)  # command ("ask", "imagine") -> limit
    max_concurrent_per_user: int = DEFAULT_MAX_CONCURRENT_PER_USER
    daily_budget_usd: float | None = None
    model_prices: Mapping[str, Price] = field(default_factory=dict)  # "owner/name" (lower case) -> price
    default_price_per_second: float = DEFAULT_PRICE_PER_SECOND
    allowed_channels: frozenset[str] = frozenset()  # empty: everywhere; entries "C123" or "slack:C123"
    admin_users: frozenset[str] = frozenset()  # "slack:U123", "discord:456"


def governance_settings_from(env: Mapping[str, str]) -> GovernanceSettings:
    return GovernanceSettings(
        state_url=_state_url(env),
        retention_days=_whole_number(env, "RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=1),
        limits=_limits(env),
        max_concurrent_per_user=_whole_number(
            env, "MAX_CONCURRENT_PER_USER", DEFAULT_MAX_CONCURRENT_PER_USER, minimum=1
        ),
        daily_budget_usd=_money(env, "DAILY_BUDGET_USD", None),
        model_prices=_model_prices(env),
        default_price_per_second=_money(env, "DEFAULT_PRICE_PER_SECOND", DEFAULT_PRICE_PER_SECOND),
        allowed_channels=_ids(env, "ALLOWED_CHANNELS", platform_required=False),
        admin_users=_ids(env, "ADMIN_USERS", platform_required=True),
    )


def parse_price(text: str) -> Price:
    """`0.0023/s`, `0.003/image`, `0.05/Mtok-in+0.25/Mtok-out`; raises ValueError otherwise."""
    terms: list[tuple[float, PriceUnit]] = []
    for term in text.split("+"):
        match = _PRICE_TERM.match(term)
        units = {unit.value: unit for unit in PriceUnit}
        if match is None or match["unit"] not in units:
            raise ValueError(f"{term.strip()!r} is not PRICE/UNIT (units: {', '.join(units)})")
        usd = float(match["usd"])
        if not math.isfinite(usd):
            raise ValueError(f"{term.strip()!r} is not a price")
        terms.append((usd, units[match["unit"]]))
    return Price(tuple(terms))


def _state_url(env: Mapping[str, str]) -> str:
    value = env.get("STATE_URL", DEFAULT_STATE_URL)
    if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
        return value
    if value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise SettingsError(
        "STATE_URL", "is neither sqlite:///PATH nor redis://HOST:PORT/DB",
        f"e.g. {DEFAULT_STATE_URL} (a file, created on first use) or redis://localhost:6379/0",
    )


def _limits(env: Mapping[str, str]) -> Mapping[str, UseLimit]:
    limits: dict[str, UseLimit] = {}
    for item in (part for part in env.get("LIMITS", "").split(",") if part.strip()):
        match = _LIMIT.match(item)
        if match is None or match["command"] not in LIMITED_COMMANDS:
            raise SettingsError(
                "LIMITS", f"has {item.strip()!r}",
                "list COMMAND=N/hour or COMMAND=N/day for ask and imagine, e.g. ask=50/day,imagine=20/day",
            )
        limits[match["command"]] = UseLimit(int(match["count"]), Window(match["window"]))
    return MappingProxyType(limits)


def _model_prices(env: Mapping[str, str]) -> Mapping[str, Price]:
    prices: dict[str, Price] = {}
    for item in (part for part in env.get("MODEL_PRICES", "").split(",") if part.strip()):
        model, _, price = item.partition("=")
        try:
            if not _MODEL.match(model.strip()):
                raise ValueError(f"{model.strip()!r} is not owner/name")
            prices[model.strip().lower()] = parse_price(price)
        except ValueError as error:
            raise SettingsError(
                "MODEL_PRICES", f"has {item.strip()!r} ({error})",
                "list owner/name=PRICE/UNIT entries, e.g. stability-ai/sdxl=0.0023/s,"
                "black-forest-labs/flux-schnell=0.003/image",
            ) from None
    return MappingProxyType(prices)


@overload
def _money(env: Mapping[str, str], name: str, default: float) -> float: ...
@overload
def _money(env: Mapping[str, str], name: str, default: None) -> float | None: ...
def _money(env: Mapping[str, str], name: str, default: float | None) -> float | None:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = float(raw.lstrip("$"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SettingsError(name, f"is {raw!r}", "set it to an amount in US dollars, e.g. 5 or 0.5")
    return value


def _whole_number(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise SettingsError(name, f"is {raw!r}", f"set it to a whole number, at least {minimum}")
    return int(raw)


def _ids(env: Mapping[str, str], name: str, *, platform_required: bool) -> frozenset[str]:
    entries: set[str] = set()
    for item in (part.strip() for part in env.get(name, "").split(",") if part.strip()):
        platform, colon, ident = item.rpartition(":")
        well_formed = _ID.match(ident) is not None and (platform in PLATFORMS if colon else not platform_required)
        if not well_formed:
            example = "slack:U0123ABCD,discord:123456789012345678" if platform_required else "C0123ABCD,123456789012"
            raise SettingsError(name, f"has {item!r}", f"list ids, comma-separated, e.g. {example}")
        entries.add(item)
    return frozenset(entries)
