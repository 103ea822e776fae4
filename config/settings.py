"""Settings from the environment and `.env`, read and validated once at start, then passed explicitly.

Nothing else reads `os.environ`. A bad value stops start-up with one line that names the variable
and the fix (`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from config.errors import SettingsError
from config.governance import GovernanceSettings, governance_settings_from
from config.models import ASK_SYSTEM_PROMPT, DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL

__all__ = ["GovernanceSettings", "Settings", "SettingsError", "load_settings"]

# Where Replicate serves prediction outputs (https://replicate.com/docs/topics/predictions/output-files).
DEFAULT_OUTPUT_HOSTS = ("replicate.delivery", "*.replicate.delivery")

DEFAULT_REPLICATE_BASE_URL = "https://api.replicate.com"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_DISCORD_API_URL = "https://discord.com/api/v10"
REPLICATE_TOKEN_PAGE = "https://replicate.com/account/api-tokens"
PUBLIC_HTTP_HOST = "0.0.0.0"
LOOPBACK_HTTP_HOST = "127.0.0.1"
LOG_FORMATS = ("text", "json")  # bot/logs.py writes both

# A bot token is three base64url parts joined by dots; only its alphabet is checked, which catches what gets
# pasted by mistake (quotes, spaces, "Bot " in front) without rejecting a token whose shape Discord changes.
_DISCORD_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
DISCORD_TOKEN_FIX = "copy the token from the Developer Portal's Bot page (Reset Token) and paste it alone"
_OUTPUT_HOST = re.compile(r"^(\*\.)?[a-z0-9][a-z0-9.-]*(:\d{1,5})?$|^\[[0-9a-f:]+\](:\d{1,5})?$")
_MODEL_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(?::[0-9a-f]{64})?$")
Number = TypeVar("Number", int, float)


@dataclass(frozen=True)
class SlackSettings:
    """What the Slack adapter needs: Socket Mode when `app_token` is set, else HTTP mode (signed requests)."""

    bot_token: str = field(repr=False)
    api_url: str = DEFAULT_SLACK_API_URL
    app_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DiscordSettings:
    """What the Discord adapter needs."""

    token: str = field(repr=False)
    api_url: str = DEFAULT_DISCORD_API_URL
    gateway_url: str | None = None
    guild_ids: tuple[int, ...] = ()
    message_content: bool = False  # the privileged Message Content intent (enable it in the Developer Portal too)
    shard_count: int | None = None  # None: as many shards as Discord recommends (`GET /gateway/bot`)
    shard_ids: tuple[int, ...] = ()  # the shards this process runs; empty: every one of `shard_count`


@dataclass(frozen=True)
class Settings:
    # Secrets are kept out of repr() so that logging a Settings can never leak them.
    replicate_api_token: str | None = field(default=None, repr=False)
    replicate_base_url: str = DEFAULT_REPLICATE_BASE_URL
    replicate_output_hosts: tuple[str, ...] = DEFAULT_OUTPUT_HOSTS
    ca_bundle: Path | None = None  # CAs to trust for Replicate's API and files instead of certifi's
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_app_token: str | None = field(default=None, repr=False)
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_api_url: str = DEFAULT_SLACK_API_URL
    discord_token: str | None = field(default=None, repr=False)
    discord_api_url: str = DEFAULT_DISCORD_API_URL
    discord_gateway_url: str | None = None
    discord_guild_ids: tuple[int, ...] = ()
    ask_model: str = DEFAULT_ASK_MODEL
    imagine_model: str = DEFAULT_IMAGINE_MODEL
    allowed_models: frozenset[str] = frozenset({DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL})
    max_prompt_chars: int = 4000
    max_concurrent_predictions: int = 50
    max_queued: int = 200
    image_dir: Path = Path("images")
    prediction_timeout_s: float = 300.0
    shutdown_grace_s: float = 25.0
    heartbeat_timeout_s: float = 30.0  # HEARTBEAT_TIMEOUT: a process silent this long is dead; others finish its work
    port: int = 3000
    http_host: str | None = None  # HTTP_HOST; None: see `http_listen_host`
    log_level: str = "INFO"
    log_format: str = "text"  # LOG_FORMAT: `text` lines, or `json`: one JSON object per line
    system_prompt: str = ASK_SYSTEM_PROMPT  # SYSTEM_PROMPT: first in every /ask and conversation
    context_max_chars: int = 12_000  # CONTEXT_MAX_CHARS: the most conversation text sent to a model
    discord_message_content: bool = False  # DISCORD_MESSAGE_CONTENT=1: the privileged intent is enabled
    discord_shard_count: int | None = None  # DISCORD_SHARD_COUNT; None: Discord's recommendation
    discord_shard_ids: tuple[int, ...] = ()  # DISCORD_SHARD_IDS; empty: every shard
    governance: GovernanceSettings = field(default_factory=GovernanceSettings)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential configured: the one list the log redactor (and the benchmark's) blank out."""
        values = (self.replicate_api_token, self.slack_bot_token, self.slack_app_token, self.slack_signing_secret,
                  self.discord_token)
        return tuple(value for value in values if value)

    @property
    def slack(self) -> SlackSettings | None:
        """Slack's settings, grouped for its adapter; None when Slack is not configured."""
        if not self.slack_bot_token:
            return None
        return SlackSettings(self.slack_bot_token, self.slack_api_url, self.slack_app_token, self.slack_signing_secret)

    @property
    def discord(self) -> DiscordSettings | None:
        """Discord's settings, grouped for its adapter; None when Discord is not configured."""
        if not self.discord_token:
            return None
        return DiscordSettings(self.discord_token, self.discord_api_url, self.discord_gateway_url,
                               self.discord_guild_ids, self.discord_message_content, self.discord_shard_count,
                               self.discord_shard_ids)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_bot_token)

    @property
    def slack_socket_mode(self) -> bool:
        return bool(self.slack_app_token)

    @property
    def discord_enabled(self) -> bool:
        return bool(self.discord_token)

    @property
    def http_listen_host(self) -> str:
        """HTTP_HOST if set; else every interface when Slack HTTP mode needs Slack to reach the port, and
        loopback otherwise (the port then serves only /healthz, which nothing outside should need)."""
        if self.http_host:
            return self.http_host
        slack_http_mode = self.slack_enabled and not self.slack_socket_mode
        return PUBLIC_HTTP_HOST if slack_http_mode else LOOPBACK_HTTP_HOST

    def require_replicate_token(self) -> str:
        """The token, or the one-line error that tells the operator where to get one."""
        if not self.replicate_api_token:
            raise SettingsError(
                "REPLICATE_API_TOKEN",
                "is not set",
                f"create a token at {REPLICATE_TOKEN_PAGE} and put REPLICATE_API_TOKEN=r8_... in .env "
                "or the environment",
            )
        return self.replicate_api_token


def load_settings(environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
    """Read `env_file` (if present) under the real environment, which wins, and validate everything."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({key: value for key, value in dotenv_values(env_file).items() if value is not None})
    values.update(os.environ if environ is None else environ)
    env = {key: value.strip() for key, value in values.items() if value.strip()}
    return _settings_from(env)


def _settings_from(env: Mapping[str, str]) -> Settings:
    ask_model = _model_ref(env, "ASK_MODEL", DEFAULT_ASK_MODEL)
    imagine_model = _model_ref(env, "IMAGINE_MODEL", DEFAULT_IMAGINE_MODEL)
    settings = Settings(
        replicate_api_token=env.get("REPLICATE_API_TOKEN"),
        replicate_base_url=_url(env, "REPLICATE_BASE_URL", DEFAULT_REPLICATE_BASE_URL, ("http://", "https://")),
        replicate_output_hosts=_output_hosts(env),
        ca_bundle=_ca_bundle(env),
        slack_bot_token=_token(env, "SLACK_BOT_TOKEN", "xoxb-", "the Bot User OAuth Token from OAuth & Permissions"),
        slack_app_token=_token(env, "SLACK_APP_TOKEN", "xapp-", "an App-Level Token with connections:write"),
        slack_signing_secret=env.get("SLACK_SIGNING_SECRET"),
        slack_api_url=_slack_api_url(env),
        discord_token=_discord_token(env),
        discord_api_url=_url(env, "DISCORD_API_URL", DEFAULT_DISCORD_API_URL, ("http://", "https://")).rstrip("/"),
        discord_gateway_url=_optional_url(env, "DISCORD_GATEWAY_URL", ("ws://", "wss://")),
        discord_guild_ids=_guild_ids(env),
        ask_model=ask_model,
        imagine_model=imagine_model,
        allowed_models=_allowed_models(env, ask_model, imagine_model),
        max_prompt_chars=_number(env, "MAX_PROMPT_CHARS", 4000, int, minimum=1),
        max_concurrent_predictions=_number(env, "MAX_CONCURRENT_PREDICTIONS", 50, int, minimum=1),
        max_queued=_number(env, "MAX_QUEUED", 200, int, minimum=0),
        image_dir=Path(env.get("IMAGE_DIR", "images")),
        prediction_timeout_s=_number(env, "PREDICTION_TIMEOUT", 300.0, float, minimum=0.1),
        shutdown_grace_s=_number(env, "SHUTDOWN_GRACE", 25.0, float, minimum=0.0),
        heartbeat_timeout_s=_number(env, "HEARTBEAT_TIMEOUT", 30.0, float, minimum=0.5),
        port=_number(env, "PORT", 3000, int, minimum=0, maximum=65535),
        http_host=_ip_address(env, "HTTP_HOST"),
        log_level=_log_level(env),
        log_format=_log_format(env),
        system_prompt=env.get("SYSTEM_PROMPT", ASK_SYSTEM_PROMPT),
        context_max_chars=_number(env, "CONTEXT_MAX_CHARS", 12_000, int, minimum=1000),
        discord_message_content=_flag(env, "DISCORD_MESSAGE_CONTENT"),
        discord_shard_count=_shard_count(env),
        discord_shard_ids=_shard_ids(env),
        governance=governance_settings_from(env),
    )
    if settings.slack_enabled and not (settings.slack_app_token or settings.slack_signing_secret):
        raise SettingsError(
            "SLACK_APP_TOKEN",
            "is not set (nor SLACK_SIGNING_SECRET)",
            "set SLACK_APP_TOKEN=xapp-... for Socket Mode, or SLACK_SIGNING_SECRET for HTTP mode",
        )
    return settings


def _token(env: Mapping[str, str], name: str, prefix: str, what: str) -> str | None:
    value = env.get(name)
    if value is not None and not value.startswith(prefix):
        raise SettingsError(name, f"does not start with {prefix}", f"use {what} ({prefix}...)")
    return value


def _discord_token(env: Mapping[str, str]) -> str | None:
    """Only what is surely not a Discord bot token is refused; the value is never echoed."""
    value = env.get("DISCORD_TOKEN")
    if value is None:
        return None
    problem, fix = "", DISCORD_TOKEN_FIX
    if value.lower().startswith(("bot ", "bearer ")):
        problem, fix = f"starts with '{value.split()[0]} '", f"{fix}, without 'Bot ' (discord.py adds it)"
    elif value.startswith(("xox", "xapp-")):
        problem, fix = "is a Slack token", f"that one belongs in SLACK_BOT_TOKEN or SLACK_APP_TOKEN; {fix}"
    elif value.startswith("r8_"):
        problem, fix = "is a Replicate token", f"that one belongs in REPLICATE_API_TOKEN; {fix}"
    elif not _DISCORD_TOKEN_CHARS.match(value):
        problem = "has characters a bot token never has (quotes, spaces, punctuation)"
    if problem:
        raise SettingsError("DISCORD_TOKEN", problem, fix)
    return value


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    return _optional_url(env, name, schemes) or default


def _optional_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    value = env.get(name)
    if value is not None and not value.startswith(schemes):
        raise SettingsError(name, f"is not a {' or '.join(s[:-3] for s in schemes)} URL", f"e.g. {schemes[-1]}host/...")
    return value


def _slack_api_url(env: Mapping[str, str]) -> str:
    url = _url(env, "SLACK_API_URL", DEFAULT_SLACK_API_URL, ("http://", "https://"))
    return url if url.endswith("/") else url + "/"  # slack_sdk joins method names onto it


def _number(
    env: Mapping[str, str],
    name: str,
    default: Number,
    kind: Callable[[str], Number],
    *,
    minimum: float,
    maximum: float | None = None,
) -> Number:
    raw = env.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(name, f"is {raw!r}, not a number", f"set it to a number like {default}") from None
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f"at least {minimum:g}"
        raise SettingsError(name, f"is {raw}", f"set it to a number {bound}")
    return value


def _ip_address(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise SettingsError(
                name,
                f"is {value!r}, not an IP address",
                f"use {PUBLIC_HTTP_HOST} (every interface) or {LOOPBACK_HTTP_HOST} (this host only)",
            ) from None
    return value


def _model_ref(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default)
    if not _MODEL_REF.match(value):
        raise SettingsError(name, f"is {value!r}", "use owner/name or owner/name:<64-hex version id>")
    return value


def _allowed_models(env: Mapping[str, str], ask_model: str, imagine_model: str) -> frozenset[str]:
    listed = [item.strip() for item in env.get("ALLOWED_MODELS", "").split(",") if item.strip()]
    for item in listed:
        if not _MODEL_REF.match(item):
            raise SettingsError("ALLOWED_MODELS", f"has {item!r}", "list owner/name[:version] entries, comma-separated")
    return frozenset(ref.lower() for ref in (*listed, ask_model, imagine_model))


def _ca_bundle(env: Mapping[str, str]) -> Path | None:
    """SSL_CERT_FILE, the usual name for a CA bundle (a TLS-intercepting proxy's, a test server's), read here
    and passed on explicitly rather than left for each HTTP library to find in the environment."""
    value = env.get("SSL_CERT_FILE")
    if value is None:
        return None
    if not Path(value).is_file():
        raise SettingsError(
            "SSL_CERT_FILE", f"is {value!r}, which is not a file", "point it at a PEM bundle or unset it"
        )
    return Path(value)


def _output_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    items = [item.strip().lower() for item in env.get("REPLICATE_OUTPUT_HOSTS", "").split(",") if item.strip()]
    for item in items:
        if not _OUTPUT_HOST.match(item):
            raise SettingsError(
                "REPLICATE_OUTPUT_HOSTS", f"has {item!r}", "list host, host:port or *.domain entries, comma-separated"
            )
    return tuple(items) or DEFAULT_OUTPUT_HOSTS


def _guild_ids(env: Mapping[str, str]) -> tuple[int, ...]:
    items = [item.strip() for item in env.get("DISCORD_GUILD_IDS", "").split(",") if item.strip()]
    for item in items:
        if not (item.isascii() and item.isdigit()):
            raise SettingsError("DISCORD_GUILD_IDS", f"has {item!r}", "list numeric server ids, comma-separated")
    return tuple(int(item) for item in items)


def _shard_count(env: Mapping[str, str]) -> int | None:
    if "DISCORD_SHARD_COUNT" not in env:
        return None
    return _number(env, "DISCORD_SHARD_COUNT", 1, int, minimum=1)


def _shard_ids(env: Mapping[str, str]) -> tuple[int, ...]:
    """The shards of DISCORD_SHARD_COUNT this process runs: each in range, none twice (discord.py refuses ids
    without a count; Discord closes a session whose shard id is not below the count, code 4010)."""
    raw = env.get("DISCORD_SHARD_IDS")
    if raw is None:
        return ()
    count = _shard_count(env)
    if count is None:
        raise SettingsError(
            "DISCORD_SHARD_IDS", "is set without DISCORD_SHARD_COUNT",
            "set DISCORD_SHARD_COUNT to the total number of shards across every process, or unset DISCORD_SHARD_IDS",
        )
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise SettingsError("DISCORD_SHARD_IDS", "lists no shard", "list shard ids like 0,1, or unset it")
    ids: list[int] = []
    for item in items:
        if not (item.isascii() and item.isdigit()):
            raise SettingsError("DISCORD_SHARD_IDS", f"has {item!r}", "list numeric shard ids, comma-separated (0,1)")
        shard_id = int(item)
        if shard_id >= count:
            raise SettingsError("DISCORD_SHARD_IDS", f"has {shard_id}, out of range for DISCORD_SHARD_COUNT={count}",
                                f"list ids from 0 to {count - 1}")
        if shard_id in ids:
            raise SettingsError("DISCORD_SHARD_IDS", f"lists {shard_id} twice", "list each shard once")
        ids.append(shard_id)
    return tuple(ids)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise SettingsError(name, f"is {value!r}", "set it to 1 (on) or 0 (off)")
    return value in ("1", "true", "yes", "on")


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SettingsError("LOG_LEVEL", f"is {level!r}", "use DEBUG, INFO, WARNING or ERROR")
    return level



def _log_format(env: Mapping[str, str]) -> str:
    value = env.get("LOG_FORMAT", "text").strip().lower()
    if value not in LOG_FORMATS:
        raise SettingsError("LOG_FORMAT", f"is {value!r}", "use text (the default) or json (one JSON object per line)")
    return value
