"""`bot.sse`: event-stream lines end only at CRLF, LF or CR, however the bytes are chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import replicate
from replicate.stream import ServerSentEvent

from bot.sse import sse_lines, stream_events
from tests.fakes.replicate_server import FakeReplicate, TextModel

TOKEN = "r8_test_token"


async def lines_of(*chunks: str) -> list[str]:
    async def arriving() -> AsyncIterator[str]:
        for chunk in chunks:
            yield chunk

    return [line async for line in sse_lines(arriving())]


async def test_lines_end_at_lf_crlf_and_cr() -> None:
    assert await lines_of("a\nb\r\nc\rd\n") == ["a", "b", "c", "d"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"])
async def test_unicode_and_ascii_separators_stay_inside_the_line(separator: str) -> None:
    assert await lines_of(f"data: before{separator}event: done{separator}after\n\n") == [
        f"data: before{separator}event: done{separator}after",
        "",
    ]


async def test_crlf_cut_between_two_chunks_is_one_line_break() -> None:
    assert await lines_of("event: output\r", "\ndata: hi\r", "\n\r\n") == ["event: output", "data: hi", ""]


async def test_cr_at_a_chunk_end_followed_by_text_is_a_line_break() -> None:
    assert await lines_of("a\r", "b\n") == ["a", "b"]


async def test_a_line_may_arrive_in_many_chunks_and_the_last_needs_no_break() -> None:
    assert await lines_of("da", "ta: hel", "lo\nid: 1", "\nlast") == ["data: hello", "id: 1", "last"]


async def test_a_cr_ending_the_stream_ends_the_last_line_and_is_not_part_of_it() -> None:
    assert await lines_of("data: a\r") == ["data: a"]


async def test_stream_events_asks_for_an_event_stream_and_keeps_separators_inside_tokens() -> None:
    tokens = ["before\u2028event: done", "\u2028after"]
    async with FakeReplicate(api_token=TOKEN) as fake:
        fake.add_model("acme/separators", TextModel(tokens=tokens))
        client = replicate.Client(api_token=TOKEN, base_url=fake.base_url)
        try:
            prediction = await client.models.predictions.async_create(model="acme/separators", input={}, stream=True)
            assert prediction.urls is not None
            events = [event async for event in stream_events(client, prediction.urls["stream"])]
        finally:
            await client._async_client.aclose()

        (stream_request,) = fake.requests_to("GET", "/v1/streams/")
        assert stream_request.headers["Accept"] == "text/event-stream"  # as replicate's own `async_stream` asks
        assert stream_request.headers["Cache-Control"] == "no-store"
        assert fake.fake_errors == []
    assert [event.data for event in events if event.event is ServerSentEvent.EventType.OUTPUT] == tokens
    assert events[-1].event is ServerSentEvent.EventType.DONE
