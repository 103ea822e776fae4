"""Builds the one `replicate.Client` per event loop, sized for our concurrency and wired to report Retry-After.

Why: `Client(limits=…)` is silently ignored (NOTES), so the pool size goes in through the transport;
and `ReplicateError` drops response headers, so a response hook keeps `Retry-After` for the runner.
"""

from __future__ import annotations

import contextvars

import httpx
import replicate

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


def build_replicate_client(api_token: str, base_url: str, *, max_connections: int) -> replicate.Client:
    """A client whose pool fits `max_connections` concurrent requests (streams and waits hold one each)."""
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    )
    return replicate.Client(
        api_token=api_token,
        base_url=base_url,
        transport=transport,
        event_hooks={"response": [_remember_retry_after]},
    )


async def close_replicate_client(client: replicate.Client) -> None:
    """`replicate.Client` has no close(); its httpx client does (NOTES)."""
    await client._async_client.aclose()
