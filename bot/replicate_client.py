"""The `replicate.Client` of one event loop, sized for our concurrency and wired to report Retry-After.

Why: `Client(limits=…)` is silently ignored (replicate/client.py builds its transport without it), so the pool
size goes in through the transport (aiohttp's, `bot.http_transport`, whose pool costs the same at any size:
httpcore's re-scanned its whole pool at every request, encode/httpcore#1035); and `ReplicateError` drops
response headers, so a response hook keeps `Retry-After` for the runner.
"""

from __future__ import annotations

import contextvars
import ssl

import httpx
import replicate

from bot.http_transport import AiohttpTransport

# The Retry-After of the last 429 this task received from Replicate, in seconds.
last_retry_after_s: contextvars.ContextVar[float | None] = contextvars.ContextVar("last_retry_after_s", default=None)


async def _remember_retry_after(response: httpx.Response) -> None:
    if response.status_code == 429:
        last_retry_after_s.set(parse_retry_after(response.headers.get("retry-after")))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header; HTTP dates are rare on APIs and treated as absent."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def build_replicate_client(
    api_token: str, base_url: str, *, max_connections: int, ssl_context: ssl.SSLContext | None = None
) -> replicate.Client:
    """A client whose pool fits `max_connections` concurrent requests (streams and waits hold one each)."""
    transport = AiohttpTransport(max_connections=max_connections, ssl_context=ssl_context or httpx.create_ssl_context())
    return replicate.Client(
        api_token=api_token,
        base_url=base_url,
        transport=transport,
        event_hooks={"response": [_remember_retry_after]},
    )


async def close_replicate_client(client: replicate.Client) -> None:
    """`replicate.Client` has no close() (replicate/client.py); its httpx client does."""
    await client._async_client.aclose()
