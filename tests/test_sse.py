"""`bot.sse`: event-stream lines end only at CRLF, LF or CR, however the bytes are chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import replicate

from bot.sse import EventKind, StreamEvent, decode_events, sse_lines, stream_events
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
    assert [event.data for event in events if event.kind is EventKind.OUTPUT] == tokens
    assert events[-1].kind is EventKind.DONE


async def events_of(*lines: str) -> list[StreamEvent]:
    async def arriving() -> AsyncIterator[str]:
        for line in lines:
            yield line

    return [event async for event in decode_events(arriving())]


async def test_an_event_is_its_data_lines_joined_and_ends_at_a_blank_line() -> None:
    assert await events_of("event: output", "id: 1", "data: two", "data: lines", "", "event: done", "data: {}", "") == [
        StreamEvent(EventKind.OUTPUT, "two\nlines"), StreamEvent(EventKind.DONE, "{}")]


async def test_a_token_that_looks_like_a_url_stays_text_and_leading_spaces_after_the_first_stay() -> None:
    assert await events_of("event: output", "data: https://example.com/x", "", "event: output", "data:   three", "") \
        == [StreamEvent(EventKind.OUTPUT, "https://example.com/x"), StreamEvent(EventKind.OUTPUT, "  three")]


async def test_nothing_after_done_is_read_and_comments_and_ids_change_nothing() -> None:
    assert await events_of(": keep-alive", "event: done", "id: 9", "data: {}", "", "event: output", "data: late", "") \
        == [StreamEvent(EventKind.DONE, "{}")]


async def test_an_error_event_is_raised_with_its_data() -> None:
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        await events_of("event: output", "data: a", "", "event: error", 'data: {"detail": "CUDA out of memory"}', "")


async def test_an_event_type_replicate_does_not_send_is_an_error() -> None:
    with pytest.raises(ValueError):
        await events_of("event: surprise", "data: x", "")
