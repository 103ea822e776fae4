"""Splitting long answers into platform-sized messages at paragraph or line boundaries, fence-aware.

A cut never lands inside a code block without closing it: if a block must be split, the chunk ends
with a closing fence and the next chunk reopens it with the same language, so both render as code.

Linear in the text's length: each line's fence is read once, and each chunk looks only at the next
`limit` characters. (Re-reading everything left for each chunk made a 24 KB answer take over a
second of event-loop time.) A split can also start part way (`split_from`), so a streamed answer
re-splits only its unsettled tail.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

# A fence line (CommonMark): up to three spaces, a run of backticks or tildes, an info string. No `^`:
# matched with `pattern.match(text, start, end)` at each line's start, without copying the line out.
_FENCE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)")
_ENTITY_TAIL = re.compile(r"&[#\w]{0,8}$")  # a cut must not split `&amp;` and friends


@dataclass(frozen=True)
class _OpenFence:
    marker: str  # the run of backticks or tildes that opened the block; closing needs as many
    info: str  # the language tag

    def reopening(self, limit: int) -> str:
        # A language tag too long to repeat in a chunk is dropped rather than crowd out the content.
        info = self.info if len(self.marker) + len(self.info) <= limit // 4 else ""
        return self.marker + info


@dataclass(frozen=True)
class SplitPoint:
    """Where the text still to split begins: `reopen` (a fence line, or "") followed by `text[offset:]`."""

    offset: int
    reopen: str = ""


def split_message(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters that together say `text`, with code blocks kept intact."""
    return split_from(text, limit)[0]


def split_from(text: str, limit: int, start: SplitPoint | None = None) -> tuple[list[str], list[SplitPoint]]:
    """`split_message` of what is left of `text` at `start` (after earlier chunks), and where the first
    chunks end: `points[i]` is where the text after `chunks[i]` begins, and splitting from it gives
    `chunks[i + 1:]`. There are at most `len(chunks) - 1` points (fewer after a hard cut of a fence line
    longer than a message)."""
    if limit < 16:
        raise ValueError("limit too small to hold a fence and some text")
    splitter = _Splitter(text, limit)
    point = start or SplitPoint(0)
    chunks: list[str] = []
    points: list[SplitPoint] = []
    while len(point.reopen) + len(text) - point.offset > limit:
        head, after = splitter.take_chunk(point)
        if after == point or len(head) > limit:
            # A fence line longer than a message (model output can be anything): it cannot be closed and
            # reopened within one, so the rest is cut hard, which always ends and always fits.
            remaining = point.reopen + text[point.offset:]
            pieces = (remaining[start:start + limit] for start in range(0, len(remaining), limit))
            chunks.extend(piece for piece in pieces if piece.strip())
            return chunks, points
        point = after
        if head.strip():
            chunks.append(head)
            points.append(point)
    remaining = point.reopen + text[point.offset:]
    continued = bool(chunks) or start is not None
    if remaining.strip() or not continued:
        chunks.append(remaining.rstrip() if continued else remaining)
    elif points:
        points.pop()  # the last chunk is the last one: nothing follows it
    return chunks, points


class _Splitter:
    """One text's lines (as `str.splitlines` sees them) and fences, read once; chunks are cut from it."""

    def __init__(self, text: str, limit: int) -> None:
        self._text = text
        self._limit = limit
        self._starts: list[int] = []  # where each line starts
        self._ends: list[int] = []  # where each line's content ends (before a trailing "\n")
        self._fences: list[re.Match[str] | None] = []
        offset = 0
        for line in text.splitlines(keepends=True):
            end = offset + len(line.rstrip("\n"))
            self._starts.append(offset)
            self._ends.append(end)
            self._fences.append(_FENCE.match(text, offset, offset + len(line)))
            offset += len(line)
        # The longest fence marker from each line to the end: how much room a closing fence may need.
        self._longest_after = [3] * (len(self._starts) + 1)
        for index in range(len(self._starts) - 1, -1, -1):
            fence = self._fences[index]
            marker = len(fence.group(1)) if fence else 0
            self._longest_after[index] = max(self._longest_after[index + 1], marker)

    def take_chunk(self, point: SplitPoint) -> tuple[str, SplitPoint]:
        """The next chunk (≤ limit, fences closed) and where the rest begins (fence reopened if needed)."""
        text, limit, reopen = self._text, self._limit, point.reopen
        content_start = self._fence_content_start(point)
        view_end = max(limit, content_start + 1)
        view = reopen + text[point.offset:point.offset + max(view_end - len(reopen), 0)]
        lines = self._lines_from(point, view_end)
        reserve = 1 + self._longest_marker(point, lines)
        window = view[: limit - reserve]
        fences = _FenceStates(lines, len(view))
        cut = _best_cut(window, fences, floor=max(limit // 3, content_start), minimum=content_start + 1)
        fence = fences.at(cut)
        head = view[:cut]
        rest = min(point.offset + cut - len(reopen), len(text))
        while rest < len(text) and text[rest] == "\n":
            rest += 1
        if fence is None:
            return head.rstrip(), SplitPoint(rest)
        closed = head.rstrip("\n") + "\n" + fence.marker
        return closed, SplitPoint(rest, fence.reopening(limit) + "\n")

    def _fence_content_start(self, point: SplitPoint) -> int:
        """If what is left opens with a fence line: where the code after it starts (past the first "\n")."""
        if point.reopen:
            return len(point.reopen)  # the reopened fence: one line, ending in its "\n"
        text = self._text
        index = bisect_right(self._starts, point.offset) - 1
        if index < 0 or point.offset >= len(text):
            return 0
        if self._starts[index] == point.offset:
            fence = self._fences[index]
        else:
            line_end = self._starts[index + 1] if index + 1 < len(self._starts) else len(text)
            fence = _FENCE.match(text, point.offset, line_end)
        if fence is None:
            return 0
        newline = text.find("\n", point.offset)
        return len(text) - point.offset if newline < 0 else newline + 1 - point.offset

    def _lines_from(self, point: SplitPoint, bound: int) -> list[tuple[int, re.Match[str] | None]]:
        """The lines of what is left that start before `bound`, as (content end, fence) in its own coordinates."""
        text, reopen = self._text, point.reopen
        found: list[tuple[int, re.Match[str] | None]] = []
        if reopen:
            found.append((len(reopen) - 1, _FENCE.match(reopen)))
        if point.offset >= len(text):
            return found
        shift = len(reopen) - point.offset  # a text index + shift = its index in what is left
        index = bisect_right(self._starts, point.offset) - 1
        if self._starts[index] == point.offset:
            fence = self._fences[index]
        else:  # a line cut part way: what is left of it is a line of its own
            line_end = self._starts[index + 1] if index + 1 < len(self._starts) else len(text)
            fence = _FENCE.match(text, point.offset, line_end)
        found.append((self._ends[index] + shift, fence))
        index += 1
        while index < len(self._starts) and self._starts[index] + shift < bound:
            found.append((self._ends[index] + shift, self._fences[index]))
            index += 1
        return found

    def _longest_marker(self, point: SplitPoint, lines: list[tuple[int, re.Match[str] | None]]) -> int:
        """The longest fence marker in what is left (at least 3), capped at a quarter of the limit."""
        longest = 3
        reopen_lines = 1 if point.reopen else 0
        for _, fence in lines[: reopen_lines + 1]:  # the reopened fence and a line cut part way
            if fence:
                longest = max(longest, len(fence.group(1)))
        index = bisect_right(self._starts, point.offset)  # the first whole line after the one holding offset
        if point.offset < len(self._text) and index - 1 >= 0 and self._starts[index - 1] == point.offset:
            index -= 1  # offset starts a whole line: it counts too (its fence is the one read above)
        longest = max(longest, self._longest_after[min(index, len(self._starts))])
        return min(longest, self._limit // 4)


class _FenceStates:
    """Which code block is open at any position of what is left, by CommonMark's rule: a closing fence is
    the same character, at least as long as the opening one, with no info string. A fence line counts once
    its content ends at or before the position."""

    def __init__(self, lines: list[tuple[int, re.Match[str] | None]], view_length: int) -> None:
        self._ends: list[int] = []
        self._states: list[_OpenFence | None] = []
        open_fence: _OpenFence | None = None
        for content_end, fence in lines:
            if fence is None or content_end > view_length:
                continue
            marker, info = fence.group(1), fence.group(2)
            if open_fence is None:
                open_fence = _OpenFence(marker, info)
            elif marker[0] == open_fence.marker[0] and len(marker) >= len(open_fence.marker) and not info:
                open_fence = None
            else:
                continue
            self._ends.append(content_end)
            self._states.append(open_fence)

    def at(self, position: int) -> _OpenFence | None:
        index = bisect_right(self._ends, position)
        return self._states[index - 1] if index else None


def _best_cut(window: str, fences: _FenceStates, floor: int, minimum: int) -> int:
    """Where to cut, preferring a paragraph break outside code, then any line break, then a space.

    Breaks before `floor` would make silly short chunks; a cut before `minimum` would make no progress.
    """
    index = window.rfind("\n\n")
    while index > floor:
        if fences.at(index + 2) is None:
            return index + 2
        index = window.rfind("\n\n", 0, index)
    for separator in ("\n", " ", "\t"):
        index = window.rfind(separator)
        if index >= floor and index + 1 > floor:
            return index + 1
    cut = len(window)
    entity = _ENTITY_TAIL.search(window)
    if entity and entity.start() >= minimum:
        cut = entity.start()
    return max(cut, minimum)


def close_open_fence(text: str) -> str:
    """`text` with its code block closed if it ends inside one (an answer cut short by a failure), so that what
    is appended after it (an error, a note) is shown as text, not swallowed by the code block."""
    open_marker: str | None = None
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if fence is None:
            continue
        marker, info = fence.group(1), fence.group(2)
        if open_marker is None:
            open_marker = marker
        elif marker[0] == open_marker[0] and len(marker) >= len(open_marker) and not info:
            open_marker = None
    return text if open_marker is None else text.rstrip("\n") + "\n" + open_marker
