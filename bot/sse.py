"""A prediction's Server-Sent Events, split into lines and decoded by SSE's own rules.

Why not `Prediction.async_stream()`: replicate 1.0.7 reads the stream with httpx's `aiter_lines`, which
splits lines like `str.splitlines` (also at U+2028, U+2029, \\x85, \\x0b, \\x0c, \\x1c-\\x1e). A token
holding one of those loses the text after it, and a model can even write `\\u2028event: done` to end its
own stream. SSE lines end only at CRLF, LF or CR
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

Why not replicate's `EventSource` for the fields either: it builds a pydantic model per event and turns every
token that starts like a URL into a `FileOutput` (replicate/stream.py, replicate/helpers.py), work the text
path then undoes; at 200 answers streaming at once that was the largest share of the bot's CPU after the HTTP
client itself (`bin/bench --profile`). The events Replicate sends are few and plain: `output` (a token),
`logs`, `error` (raised, as replicate does) and `done` (https://replicate.com/docs/topics/predictions/streaming).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

import replicate

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


class EventKind(StrEnum):
    """The event types Replicate's prediction streams send; any other is an error (as in replicate's client)."""

    OUTPUT = "output"
    LOGS = "logs"
    ERROR = "error"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    kind: EventKind
    data: str  # the event's data lines joined by "\n": a token, a log line, `{}` or `{"reason": …}` for done


async def stream_events(client: replicate.Client, url: str) -> AsyncIterator[StreamEvent]:
    """The events at a prediction's `urls.stream` (see `decode_events`); a response that is not an event stream
    is a ValueError."""
    # `_async_client` is the client's httpx client, as in replicate's own `Prediction.async_stream`.
    async with client._async_client.stream("GET", url, headers=_STREAM_HEADERS) as response:
        response.raise_for_status()
        content_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if content_type != "text/event-stream":
            raise ValueError(f"expected an event stream, got {content_type!r}")
        async for event in decode_events(sse_lines(response.aiter_text())):
            yield event


async def decode_events(lines: AsyncIterator[str]) -> AsyncIterator[StreamEvent]:
    """Events from an event stream's lines, up to `done`: an `error` event is raised as RuntimeError, an event
    type Replicate does not send as ValueError (as replicate's client does)."""
    kind: EventKind | None = None
    data: list[str] = []
    async for line in lines:
        if not line:  # a blank line dispatches the event gathered so far
            if kind is not None:
                event = StreamEvent(kind, "\n".join(data))
                if kind is EventKind.ERROR:
                    raise RuntimeError(event.data)
                yield event
                if kind is EventKind.DONE:
                    return
            kind, data = None, []
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = EventKind(value)
        elif field == "data":
            data.append(value)
        # `id`, `retry` and comments (a line starting with ":") change nothing the bot uses.
