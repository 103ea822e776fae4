"""A prediction's Server-Sent Events, split into lines by SSE's own rules.

Why not `Prediction.async_stream()`: replicate 1.0.7 reads the stream with httpx's `aiter_lines`, which
splits lines like `str.splitlines` (also at U+2028, U+2029, \\x85, \\x0b, \\x0c, \\x1c-\\x1e). A token
holding one of those loses the text after it, and a model can even write `\\u2028event: done` to end its
own stream. SSE lines end only at CRLF, LF or CR. Decoding the fields is left to replicate's `EventSource`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import replicate
from replicate.stream import EventSource, ServerSentEvent

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_STREAM_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}


async def sse_lines(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Lines of an event stream arriving in arbitrary chunks (a CRLF may be cut between two of them)."""
    pending = ""
    async for chunk in chunks:
        pending += chunk
        held_cr = pending.endswith("\r")  # maybe the first half of a CRLF: wait for the next chunk
        if held_cr:
            pending = pending[:-1]
        *lines, pending = _LINE_BREAK.split(pending)
        for line in lines:
            yield line
        if held_cr:
            pending += "\r"
    if pending:
        yield pending.removesuffix("\r")


class _SseResponse:
    """The response as `EventSource` reads it (`headers`, `aiter_lines`), with SSE's line rules."""

    def __init__(self, response: httpx.Response) -> None:
        self.headers = response.headers
        self._response = response

    def aiter_lines(self) -> AsyncIterator[str]:
        return sse_lines(self._response.aiter_text())


async def stream_events(client: replicate.Client, url: str) -> AsyncIterator[ServerSentEvent]:
    """The events at a prediction's `urls.stream`; an `error` event is raised as RuntimeError, as replicate does."""
    # `_async_client` is the client's httpx client, as in replicate's own `Prediction.async_stream`.
    async with client._async_client.stream("GET", url, headers=_STREAM_HEADERS) as response:
        response.raise_for_status()
        # EventSource is annotated with httpx.Response but reads only what `_SseResponse` has (replicate/stream.py).
        async for event in EventSource(client, _SseResponse(response)):  # type: ignore[arg-type]
            yield event
