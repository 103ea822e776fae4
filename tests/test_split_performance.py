"""Splitting a long answer costs time in proportion to its length, and a streamed answer re-splits only its
unsettled tail. Work is counted (lines of `bot.text` executed, characters handed to the splitter), never timed."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adapters.rendering
import bot.text
from adapters.rendering import CURSOR, RenderLimits, StreamingReply
from bot.text import SplitPoint, split_from, split_message

LIMIT = 2000


class LineCounter:
    """Counts the lines of `bot/text.py` the interpreter executes: the splitter's work, in Python steps."""

    def __init__(self) -> None:
        self.lines = 0
        self._file = bot.text.__file__

    def __enter__(self) -> LineCounter:
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *_: object) -> None:
        sys.settrace(self._previous)

    def _global(self, frame: FrameType, event: str, _: Any) -> Callable[..., Any] | None:
        return self._local if frame.f_code.co_filename == self._file else None

    def _local(self, frame: FrameType, event: str, _: Any) -> Callable[..., Any]:
        if event == "line":
            self.lines += 1
        return self._local


def steps_to_split(text: str) -> int:
    with LineCounter() as counter:
        split_message(text, LIMIT)
    return counter.lines


def code_block(lines: int) -> str:
    """A code block of short lines with blank lines between them: every blank line is a candidate cut."""
    return "```python\n" + "x = 1\n\n" * lines + "```"


def paragraphs(count: int) -> str:
    return "\n\n".join(f"Paragraph {index}: " + "some words " * 8 + "\n- a list item" for index in range(count))


def test_splitting_eight_times_the_text_takes_about_eight_times_the_work() -> None:
    small, large = paragraphs(250), paragraphs(2000)  # ~30 KB and ~240 KB

    ratio = steps_to_split(large) / steps_to_split(small)

    assert ratio < 10, ratio  # linear: ~8; re-reading the rest for every chunk made it grow with the square


def test_a_24_kb_code_block_is_split_in_a_bounded_number_of_steps_per_character() -> None:
    text = code_block(3400)
    assert len(text) > 23_000

    # ~5 per character. Looking for the open code block from the chunk's start again at each blank line
    # took ~190, and grew with the message limit.
    assert steps_to_split(text) < 10 * len(text)


# --- splitting from part way ------------------------------------------------------------------------------


_PIECES = st.sampled_from(["word ", "\n", "\n\n", "```python\n", "```\n", "~~~\n", "````md\n", "&amp;", "x" * 40, " "])


@settings(max_examples=150, deadline=None)
@given(text=st.lists(_PIECES, max_size=80).map("".join), limit=st.integers(min_value=40, max_value=200))
def test_splitting_from_where_a_chunk_ended_gives_the_chunks_after_it(text: str, limit: int) -> None:
    chunks, points = split_from(text, limit)

    assert chunks == split_message(text, limit)
    for index, point in enumerate(points):
        assert split_from(text, limit, point)[0] == chunks[index + 1:]


def test_a_fence_line_longer_than_a_message_is_cut_hard_instead_of_looping_forever() -> None:
    text = "`" * 2100 + "\n" + "x" * 3000  # untrusted output: the old splitter never returned on this

    chunks = split_message(text, LIMIT)

    assert "".join(chunks) == text and all(len(chunk) <= LIMIT for chunk in chunks)


# --- the streaming renderer ---------------------------------------------------------------------------------


class Messages:
    """An in-memory chat for the renderer."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {"first": ""}
        self.changed = asyncio.Event()

    async def post(self, text: str) -> str:
        message_id = f"m{len(self.texts)}"
        self.texts[message_id] = text
        self.changed.set()
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        self.texts[message_id] = text
        self.changed.set()

    async def delete(self, message_id: str) -> None:
        del self.texts[message_id]
        self.changed.set()


async def test_a_streamed_answer_re_splits_only_its_unsettled_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    handed: list[int] = []  # characters each split had left to look at

    def counting_split_from(text: str, limit: int, start: SplitPoint | None = None) -> Any:
        handed.append(len(text) - (start.offset if start else 0))
        return split_from(text, limit, start)

    monkeypatch.setattr(adapters.rendering, "split_from", counting_split_from)
    messages = Messages()
    reply = StreamingReply(messages, "first", RenderLimits(max_chars=500, edit_interval_s=0.0))
    text = paragraphs(200)  # ~20 KB: forty messages' worth

    def shows(expected: list[str]) -> Callable[[], bool]:
        return lambda: list(messages.texts.values()) == expected

    try:
        for start in range(0, len(text), 250):
            reply.append(text[start:start + 250])
            await asyncio.wait_for(_until(shows(split_message(reply.text + CURSOR, 500)), messages), 5.0)
    finally:
        await reply.aclose()

    assert len(messages.texts) > 40
    assert max(handed) < 2 * 500 + 250 + len(CURSOR)  # never the whole answer: at most the tail and a delta


async def _until(condition: Callable[[], bool], messages: Messages) -> None:
    while not condition():
        messages.changed.clear()
        await messages.changed.wait()
