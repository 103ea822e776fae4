"""Splitting long answers into platform-sized messages at paragraph or line boundaries, fence-aware.

A cut never lands inside a code block without closing it: if a block must be split, the chunk ends
with a closing fence and the next chunk reopens it with the same language, so both render as code.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+#.-]*)")
_CLOSING_FENCE_LEN = len("\n```")
_ENTITY_TAIL = re.compile(r"&[#\w]{0,8}$")  # a cut must not split `&amp;` and friends


def split_message(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters that together say `text`, with code blocks kept intact."""
    if limit < 16:
        raise ValueError("limit too small to hold a fence and some text")
    chunks: list[str] = []
    remaining = text
    while len(remaining) > limit:
        cut, fence = _best_cut(remaining, limit)
        head, remaining = remaining[:cut], remaining[cut:]
        if fence is not None:
            head = head.rstrip("\n") + "\n" + fence.marker
            remaining = fence.opening + "\n" + remaining.lstrip("\n")
        else:
            remaining = remaining.lstrip("\n")
        chunks.append(head.rstrip())
    if remaining.strip() or not chunks:
        chunks.append(remaining.rstrip() if chunks else remaining)
    return [chunk for chunk in chunks if chunk.strip()] or [text[:limit]]


class _OpenFence:
    __slots__ = ("marker", "opening")

    def __init__(self, marker: str, opening: str) -> None:
        self.marker = marker
        self.opening = opening


def _open_fence_at(text: str, position: int) -> _OpenFence | None:
    """The code block open at `position` (a line start), if any."""
    open_fence: _OpenFence | None = None
    offset = 0
    for line in text[:position].splitlines(keepends=True):
        match = _FENCE.match(line)
        if match and offset + len(line) <= position:
            marker = match.group(1)
            if open_fence is None:
                open_fence = _OpenFence(marker, f"{marker}{match.group(2)}")
            elif marker.startswith(open_fence.marker[:3]) and not match.group(2):
                open_fence = None
        offset += len(line)
    return open_fence


def _best_cut(text: str, limit: int) -> tuple[int, _OpenFence | None]:
    """Where to cut (an index), preferring a paragraph break, then a line break, then a space."""
    window = text[: limit - _CLOSING_FENCE_LEN]
    floor = limit // 3  # don't make silly short chunks just to hit a paragraph break
    for separator in ("\n\n", "\n"):
        index = window.rfind(separator)
        while index > floor:
            cut = index + len(separator)
            fence = _open_fence_at(text, cut)
            if fence is None or separator == "\n":
                return cut, fence
            index = window.rfind(separator, 0, index)
    for separator in (" ", "\t"):
        index = window.rfind(separator)
        if index > floor:
            return index + 1, _open_fence_inside_line(text, index + 1)
    cut = len(window)
    entity = _ENTITY_TAIL.search(window)
    if entity:
        cut = entity.start()
    return cut, _open_fence_inside_line(text, cut)


def _open_fence_inside_line(text: str, position: int) -> _OpenFence | None:
    line_start = text.rfind("\n", 0, position) + 1
    return _open_fence_at(text, line_start)
