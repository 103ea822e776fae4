"""`bot.text.split_message`: platform-sized chunks, cut at paragraphs or lines, never breaking a code block."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.text import close_open_fence, split_message

_FENCE_LINE = re.compile(r"^\s*(```+|~~~+)")


def fence_lines(chunk: str) -> list[str]:
    return [line.strip() for line in chunk.splitlines() if _FENCE_LINE.match(line)]


def without_fences_and_whitespace(text: str) -> str:
    kept = [line for line in text.splitlines() if not _FENCE_LINE.match(line)]
    return re.sub(r"\s+", "", "".join(kept))


def non_whitespace(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- generated Markdown -----------------------------------------------------------------------------

_WORD = st.one_of(
    st.text(alphabet="abcdefghij", min_size=1, max_size=8),
    st.text(alphabet="xyz", min_size=30, max_size=150),  # longer than a small limit: forces a hard cut
    st.sampled_from(["&amp;", "&lt;tag&gt;", "AT&amp;T", "`code`", "**bold**", "#", "-"]),
)
_LINE = st.lists(_WORD, min_size=1, max_size=12).map(" ".join)
_PARAGRAPH = st.lists(_LINE, min_size=1, max_size=4).map("\n".join)
_CODE_LINE = st.one_of(
    st.text(alphabet="abc(){}=+ ", max_size=40),
    st.text(alphabet="0123456789", min_size=40, max_size=120),
)


@st.composite
def _code_block(draw: st.DrawFn) -> str:
    marker = draw(st.sampled_from(["```", "~~~"]))
    language = draw(st.sampled_from(["", "python", "js", "c++", "objective-c"]))
    body = draw(st.lists(_CODE_LINE, max_size=12))
    return "\n".join([f"{marker}{language}", *body, marker])


_BLANK_RUN = st.text(alphabet=" \n", min_size=60, max_size=300)  # wider than a window: a cut may find only blanks
_BLOCK = st.one_of(
    _PARAGRAPH, _code_block(), st.just(""), st.sampled_from(["- item one\n- item two", "# Title"]), _BLANK_RUN
)
_MARKDOWN = st.lists(_BLOCK, min_size=1, max_size=10).flatmap(
    lambda blocks: st.lists(st.sampled_from(["\n", "\n\n", "\n\n\n"]), min_size=len(blocks), max_size=len(blocks)).map(
        lambda separators: "".join(
            block + separator for block, separator in zip(blocks, separators, strict=True)
        ).strip("\n")
    )
)
# Real limits are 2,000 (Discord) and 4,000 (Slack); below ~4 fence lines' width, cuts inside the
# fence line itself are unavoidable and the properties don't hold.
_LIMIT = st.integers(min_value=60, max_value=400)
_PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@_PROPERTY_SETTINGS
@given(text=_MARKDOWN, limit=_LIMIT)
def test_every_chunk_fits_the_limit_and_none_is_empty(text: str, limit: int) -> None:
    chunks = split_message(text, limit)

    assert chunks
    for chunk in chunks:
        assert len(chunk) <= limit
        if text.strip():
            assert chunk.strip()


@_PROPERTY_SETTINGS
@given(text=_MARKDOWN, limit=_LIMIT)
def test_code_fences_are_balanced_within_every_chunk(text: str, limit: int) -> None:
    for chunk in split_message(text, limit):
        assert len(fence_lines(chunk)) % 2 == 0, chunk


@_PROPERTY_SETTINGS
@given(text=_MARKDOWN, limit=_LIMIT)
def test_chunks_say_the_original_text_in_order(text: str, limit: int) -> None:
    chunks = split_message(text, limit)

    assert without_fences_and_whitespace("\n".join(chunks)) == without_fences_and_whitespace(text)


@_PROPERTY_SETTINGS
@given(text=_MARKDOWN, limit=_LIMIT)
def test_text_within_the_limit_comes_back_unchanged(text: str, limit: int) -> None:
    short = text[:limit]

    assert split_message(short, limit) == [short]


# --- where cuts go ----------------------------------------------------------------------------------


def test_paragraph_break_is_preferred_over_a_later_line_break() -> None:
    first = "alpha " * 10 + "\n\n" + "beta " * 4
    text = first + "\ngamma line\n" + "delta " * 30

    chunks = split_message(text, 120)

    assert chunks[0] == ("alpha " * 10).rstrip()
    assert chunks[1].startswith("beta")


def test_line_break_is_preferred_over_a_space() -> None:
    text = "one two three four five six seven\n" + "word " * 40

    chunks = split_message(text, 60)

    assert chunks[0] == "one two three four five six seven"


def test_space_is_used_when_a_paragraph_has_no_line_breaks() -> None:
    text = " ".join(f"w{index:02d}" for index in range(60))

    chunks = split_message(text, 50)

    assert all(re.fullmatch(r"(w\d\d ?)+", chunk) for chunk in chunks)
    assert " ".join(chunks) == text


def test_a_very_early_paragraph_break_is_not_used_for_a_silly_short_chunk() -> None:
    text = "Hi.\n\n" + "word " * 60

    chunks = split_message(text, 100)

    assert len(chunks[0]) > 100 // 3


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    text = "x" * 250

    chunks = split_message(text, 100)

    assert "".join(chunks) == text
    assert all(len(chunk) <= 100 for chunk in chunks)


def test_leading_newlines_are_not_carried_into_the_next_chunk() -> None:
    # More newlines than fit before the cut: some of them land at the start of what is left.
    chunks = split_message("a" * 50 + "\n" * 10 + "b" * 40, 60)

    assert chunks == ["a" * 50, "b" * 40]


# --- code blocks --------------------------------------------------------------------------------------


def _python_block(lines: int) -> str:
    return "```python\n" + "\n".join(f"print({index})" for index in range(lines)) + "\n```"


def test_code_block_longer_than_the_limit_is_closed_and_reopened_with_its_language() -> None:
    text = "Here you go:\n\n" + _python_block(40) + "\n\nDone."

    chunks = split_message(text, 120)

    assert len(chunks) > 2
    for chunk in chunks[1:]:
        assert chunk.startswith("```python\n")
    for chunk in chunks[:-1]:
        assert chunk.endswith("\n```")
    assert chunks[-1].endswith("```\n\nDone.") or chunks[-1] == "Done."


def test_reopened_code_block_keeps_a_tilde_fence() -> None:
    text = "~~~js\n" + "\n".join(f"log({index});" for index in range(40)) + "\n~~~"

    chunks = split_message(text, 100)

    assert len(chunks) > 1
    assert all(chunk.startswith("~~~js\n") and chunk.endswith("\n~~~") for chunk in chunks)


def test_code_block_split_inside_a_long_line_is_still_closed_and_reopened() -> None:
    text = "```\n" + "0123456789" * 30 + "\n```"

    chunks = split_message(text, 80)

    assert all(chunk.startswith("```\n") and chunk.endswith("\n```") for chunk in chunks)
    assert "".join(chunk[4:-4] for chunk in chunks) == "0123456789" * 30


def test_text_after_a_closed_code_block_is_not_fenced() -> None:
    text = "```\ncode\n```\n\n" + "plain words " * 20

    chunks = split_message(text, 80)

    assert chunks[0].startswith("```\ncode\n```")
    for chunk in chunks[1:]:
        assert "```" not in chunk


def test_a_paragraph_break_outside_a_code_block_is_chosen_over_one_inside() -> None:
    text = "intro words, long enough to be kept\n\n" + "```\n" + "a = 1\n\nb = 2\n" * 3 + "```"

    chunks = split_message(text, 80)

    assert chunks[0] == "intro words, long enough to be kept"


def test_four_backtick_code_block_chunks_fit_the_limit() -> None:
    text = "````text\n" + "x" * 200 + "\n````"

    chunks = split_message(text, 60)

    assert all(len(chunk) <= 60 for chunk in chunks), [len(chunk) for chunk in chunks]


def test_triple_backticks_inside_a_four_backtick_block_do_not_close_it() -> None:
    example = "```python\nprint(1)\n```\n"
    text = "````markdown\n" + example + "\n".join(f"line {index} of the example" for index in range(10)) + "\n````"

    chunks = split_message(text, 80)

    assert len(chunks) > 1
    for chunk in chunks:
        opened = [line for line in chunk.splitlines() if line.startswith("````")]
        assert len(opened) == 2, chunk


@pytest.mark.timeout(2, method="signal")
def test_long_fence_opening_line_followed_by_a_long_line_terminates_with_content_in_every_chunk() -> None:
    text = "```" + "a" * 700 + "\n" + "b" * 3000 + "\n```"

    chunks = split_message(text, 2000)

    assert all(len(chunk) <= 2000 for chunk in chunks)
    assert all("b" in chunk for chunk in chunks)  # never a chunk of just the opening line, closed at once


def test_a_language_tag_too_long_to_repeat_is_dropped_when_the_block_reopens() -> None:
    text = "```" + "a" * 700 + "\n" + "b" * 3000 + "\n```"

    chunks = split_message(text, 2000)

    assert len(chunks) > 1
    assert all(chunk.startswith("```\n") for chunk in chunks[1:])


@pytest.mark.parametrize(
    "inner",
    ["~~~", "```python", "    ```"],
    ids=["other-character", "with-an-info-string", "indented-four-spaces"],
)
def test_a_fence_line_that_cannot_close_the_block_stays_inside_it(inner: str) -> None:
    # CommonMark: a closing fence is the opening character, at least as long, no info string, indented < 4.
    code = [f"line {index}" for index in range(30)]
    text = "```\n" + "\n".join([*code[:5], inner, *code[5:]]) + "\n```"

    chunks = split_message(text, 80)

    assert len(chunks) > 2
    assert all(chunk.startswith("```\n") and chunk.endswith("\n```") for chunk in chunks), chunks


# --- entities and edge cases ------------------------------------------------------------------------


def test_html_entities_are_never_split_by_a_hard_cut() -> None:
    text = "Tom&amp;Jerry&lt;3&gt;" * 30

    chunks = split_message(text, 50)

    assert len(chunks) > 1
    assert "".join(chunks) == text
    for chunk in chunks:
        assert re.fullmatch(r"(?:&amp;|&lt;|&gt;|[A-Za-z0-9])+", chunk), chunk


@settings(max_examples=100, deadline=None)
@given(
    pieces=st.lists(st.sampled_from(["&amp;", "&lt;", "&#128512;", "ab", "c"]), min_size=20, max_size=120),
    limit=st.integers(min_value=16, max_value=80),
)
def test_generated_entities_survive_hard_cuts_intact(pieces: list[str], limit: int) -> None:
    text = "".join(pieces)

    chunks = split_message(text, limit)

    assert "".join(chunks) == text
    for chunk in chunks:
        assert re.fullmatch(r"(?:&amp;|&lt;|&#128512;|[abc])+", chunk), chunk


def test_limit_too_small_for_a_fence_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("hello", 15)


def test_empty_text_is_one_empty_chunk() -> None:
    assert split_message("", 100) == [""]


def test_an_answer_cut_short_inside_a_code_block_is_closed_before_anything_is_appended() -> None:
    assert close_open_fence("Here:\n```python\nprint(1)\n") == "Here:\n```python\nprint(1)\n```"
    assert close_open_fence("````\na ```b``` c") == "````\na ```b``` c\n````"  # closed with its own marker
    assert close_open_fence("Done:\n```\nx\n```\n") == "Done:\n```\nx\n```\n"  # balanced: untouched
    assert close_open_fence("no code at all") == "no code at all"
