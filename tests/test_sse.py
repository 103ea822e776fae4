"""`bot.sse`: event-stream lines end only at CRLF, LF or CR, however the bytes are chunked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.sse import sse_lines


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
