"""Splitting long answers into platform-sized messages at paragraph or line boundaries, fence-aware.

A cut never lands inside a code block without closing it: if a block must be split, the chunk ends
with a closing fence and the next chunk reopens it with the same language, so both render as code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)")
_ENTITY_TAIL = re.compile(r"&[#\w]{0,8}$")  # a cut must not split `&amp;` and friends


@dataclass(frozen=True)
class _OpenFence:
    marker: str  # the run of backticks or tildes that opened the block; closing needs as many
    info: str  # the language tag

    def reopening(self, limit: int) -> str:
        # A language tag too long to repeat in a chunk is dropped rather than crowd out the content.
        info = self.info if len(self.marker) + len(self.info) <= limit // 4 else ""
        return self.marker + info


def split_message(text: str, limit: int) -> list[str]:
    """Chunks of at most `limit` characters that together say `text`, with code blocks kept intact."""
    if limit < 16:
        raise ValueError("limit too small to hold a fence and some text")
    chunks: list[str] = []
    remaining = text
    while len(remaining) > limit:
        head, remaining = _take_chunk(remaining, limit)
        if head.strip():
            chunks.append(head)
    if remaining.strip() or not chunks:
        chunks.append(remaining.rstrip() if chunks else remaining)
    return chunks


def _take_chunk(text: str, limit: int) -> tuple[str, str]:
    """The next chunk (≤ limit, fences closed) and what is left (fence reopened if needed)."""
    reserve = 1 + _longest_marker(text, limit)  # room for "\n" + a closing fence
    window = text[: limit - reserve]
    content_start = _first_line_end(text) if _FENCE.match(text) else 0
    cut = _best_cut(window, text, floor=max(limit // 3, content_start), minimum=content_start + 1)
    fence = _open_fence_at(text, cut)
    head, rest = text[:cut], text[cut:]
    if fence is None:
        return head.rstrip(), rest.lstrip("\n")
    closed = head.rstrip("\n") + "\n" + fence.marker
    return closed, fence.reopening(limit) + "\n" + rest.lstrip("\n")


def _best_cut(window: str, text: str, floor: int, minimum: int) -> int:
    """Where to cut, preferring a paragraph break outside code, then any line break, then a space.

    Breaks before `floor` would make silly short chunks; a cut before `minimum` would make no progress.
    """
    index = window.rfind("\n\n")
    while index > floor:
        if _open_fence_at(text, index + 2) is None:
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


def _first_line_end(text: str) -> int:
    newline = text.find("\n")
    return len(text) if newline < 0 else newline + 1


def _longest_marker(text: str, limit: int) -> int:
    longest = 3
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match:
            longest = max(longest, len(match.group(1)))
    return min(longest, limit // 4)


def _open_fence_at(text: str, position: int) -> _OpenFence | None:
    """The code block still open at `position`, by CommonMark's rule: a closing fence is the same
    character, at least as long as the opening one, with no info string."""
    open_fence: _OpenFence | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        if offset >= position:
            break
        match = _FENCE.match(line)
        if match and offset + len(line.rstrip("\n")) <= position:
            marker, info = match.group(1), match.group(2)
            if open_fence is None:
                open_fence = _OpenFence(marker, info)
            elif marker[0] == open_fence.marker[0] and len(marker) >= len(open_fence.marker) and not info:
                open_fence = None
        offset += len(line)
    return open_fence
