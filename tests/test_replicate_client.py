"""`bot.replicate_client`: Retry-After parsing."""

from __future__ import annotations

import pytest

from bot.replicate_client import parse_retry_after


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), (" 1.5 ", 1.5), ("", None), (None, None),
                                                 ("-1", None), ("Wed, 21 Oct 2026 07:28:00 GMT", None)])
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
