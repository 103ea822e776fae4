"""Every test runs offline and in a clean environment.

- A network guard: a socket that connects anywhere but the loopback (or a Unix socket) raises
  `NetworkBlocked`, and the test fails even if the code under test swallowed the error. Our fakes listen on
  127.0.0.1; anything else is a test reaching the real Slack, Discord or Replicate (as python-telegram-bot's
  offline request does for its suite). Subprocesses (the real bot process) are pointed at the fakes by
  their environment and are not guarded here.
- No time limit on a Hypothesis example: timing belongs in the benchmark, and a loaded 2-core CI machine
  would turn Hypothesis' default 200 ms deadline into random failures.
- A clean environment: the bot's own settings and proxy variables from the developer's shell are removed
  before each test (as httpx's autouse `clean_environ` fixture does), so no test depends on them.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

# The real redis-server fixtures (`redis_server`, `redis_url`) for the Redis state store's tests.
pytest_plugins = ["tests.redis_server"]

settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

# The bot's settings, and the proxy variables httpx, aiohttp and slack_sdk read.
_ENVIRONMENT_PREFIXES = ("REPLICATE_", "SLACK_", "DISCORD_")
_ENVIRONMENT_NAMES = {
    "ASK_MODEL", "IMAGINE_MODEL", "ALLOWED_MODELS", "MAX_PROMPT_CHARS", "MAX_CONCURRENT_PREDICTIONS", "MAX_QUEUED",
    "IMAGE_DIR", "PREDICTION_TIMEOUT", "SHUTDOWN_GRACE", "PORT", "LOG_LEVEL", "HTTP_HOST",
    "LOG_FORMAT",
    "STATE_URL", "RETENTION_DAYS", "LIMITS", "MAX_CONCURRENT_PER_USER", "DAILY_BUDGET_USD", "MODEL_PRICES",
    "DEFAULT_PRICE_PER_SECOND", "ALLOWED_CHANNELS", "ADMIN_USERS", "SYSTEM_PROMPT", "CONTEXT_MAX_CHARS",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy",
}


class NetworkBlocked(RuntimeError):
    """A test tried to reach beyond 127.0.0.1."""


_blocked: list[str] = []
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def check_address(family: int, address: Any) -> None:
    """Raise `NetworkBlocked` unless `address` is on this machine's loopback (or a Unix socket path)."""
    if family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        _blocked.append(f"{host}")
        raise NetworkBlocked(f"a test tried to connect to {host!r}: tests only talk to fakes on 127.0.0.1")


def forget_blocked() -> None:
    """For the guard's own tests: the attempts they made on purpose don't fail them."""
    _blocked.clear()


def _guarded_connect(self: socket.SocketType, address: Any) -> None:
    check_address(self.family, address)
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.SocketType, address: Any) -> int:
    check_address(self.family, address)
    return _real_connect_ex(self, address)


# Patched on the class on purpose (mypy forbids assigning to a method): every socket of the run is guarded.
socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def offline_and_clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(_ENVIRONMENT_PREFIXES) or name in _ENVIRONMENT_NAMES:
            monkeypatch.delenv(name, raising=False)
    _blocked.clear()
    yield
    if _blocked:
        attempts = ", ".join(sorted(set(_blocked)))
        _blocked.clear()
        pytest.fail(f"this test tried to reach the network beyond 127.0.0.1: {attempts}")
