"""Discord's message limits, and the text the adapter builds inside them: captions, links, cut text.

Why links are rebuilt: a caption shows a URL as `<url>` (a link without an embed preview). The URL is the
model's output, so a `>` in it would end the brackets early and let the rest be read as Markdown
(`**`, `[text](url)`, `||spoiler||`). Only plain https URLs are shown, with every character outside a small
safe set percent-encoded: the link stays the same address and nothing in it can be read as markup
(https://datatracker.ietf.org/doc/html/rfc3986#section-2.1). A caption is always cut to fit one message:
Discord refuses content over `MAX_MESSAGE_CHARS` outright, and the user would get no reply at all.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence

from discord.utils import escape_markdown

from bot.replies import Image, Images

# Limits (https://discord.com/developers/docs/resources/message#create-message).
MAX_MESSAGE_CHARS = 2000  # `content`
MAX_ATTACHMENTS = 10  # files per message
DEFAULT_ATTACHMENT_LIMIT_BYTES = 25 * 1024 * 1024  # when an interaction carries no `attachment_size_limit`

ELLIPSIS = "…"
LINKS_EXPIRE_NOTE = "(links expire in an hour)"
PROMPT_LABEL = "**prompt:** "
# A percent-encoded URL keeps only these besides letters, digits and `-._~` (quote's own safe set): the
# delimiters a URL needs, none of which Discord reads as markup inside `<…>`.
_URL_SAFE_CHARS = "/?=&%:+,;"
_PLAIN_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def fit(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut with an ellipsis if it is longer than `limit` characters."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS if limit > 0 else ""


def safe_link(url: str | None) -> str | None:
    """`url` as an inert `<https://…>` link, or None if it isn't a plain https URL."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() != "https" or not _PLAIN_HOST.fullmatch(parts.netloc):
        return None  # another scheme, credentials (`user@`), or a host that isn't a plain name
    encoded = "https://" + parts.netloc.lower() + urllib.parse.quote(parts.path, safe=_URL_SAFE_CHARS)
    if parts.query:
        encoded += "?" + urllib.parse.quote(parts.query, safe=_URL_SAFE_CHARS)
    if parts.fragment:
        encoded += "#" + urllib.parse.quote(parts.fragment, safe=_URL_SAFE_CHARS)
    return f"<{encoded}>"


def caption(
    header: str,
    lines: Sequence[str],
    links: Sequence[str],
    prompt: str,
    limit: int = MAX_MESSAGE_CHARS,
) -> str:
    """A caption of at most `limit` characters, most important first.

    `header` and `lines` (notes, problems: already safe text) come first, each cut to what is left; then as many
    whole `links` (from `safe_link`) as fit, saying how many did not; the `prompt` (escaped here) gets the rest.
    """
    shown: list[str] = []
    room = limit

    def add(line: str) -> None:
        nonlocal room
        cost = len(line) + (1 if shown else 0)  # the newline that joins it to the line above
        if room - cost >= 0:
            shown.append(line)
            room -= cost
        elif room - (1 if shown else 0) > len(ELLIPSIS):
            shown.append(fit(line, room - (1 if shown else 0)))
            room = 0

    for line in [header, *lines]:
        add(line)
    if links:
        add(_links_line(links, room - (1 if shown else 0)))
    label_room = room - (1 if shown else 0) - len(PROMPT_LABEL)
    if prompt and label_room > len(ELLIPSIS):
        add(PROMPT_LABEL + fit(escape_markdown(prompt), label_room))
    return "\n".join(shown)


def _links_line(links: Sequence[str], room: int) -> str:
    """As many whole links as fit in `room` (a cut link is a broken one), then how many were left out."""
    kept: list[str] = []
    used = len(LINKS_EXPIRE_NOTE)
    for index, link in enumerate(links):
        left_out = len(links) - index - 1
        tail = len(_left_out_note(left_out)) + 1 if left_out else 0
        if used + len(link) + 1 + tail > room:
            break
        kept.append(link)
        used += len(link) + 1
    missing = len(links) - len(kept)
    return " ".join([*kept, LINKS_EXPIRE_NOTE if kept else "", _left_out_note(missing) if missing else ""]).strip()


def _left_out_note(count: int) -> str:
    return f"({count} more link{'s' if count != 1 else ''} too long to show)"


def image_caption(images: Images, links: list[Image], limit: int = MAX_MESSAGE_CHARS) -> str:
    """Model and seed first, then what the user must know, the links, and the prompt last (escaped): markup
    typed in it can't swallow the rest, and a long prompt is what gets cut to fit the message."""
    header = f"🖼 **model:** `{images.run.model}` · **seed:** {images.seed}"
    extra_lines = [f"*{note}*" for note in images.notes]  # ours: which options the model could not use
    problems = [missing_image_line(image) for image in links if image.problem or not safe_link(image.url)]
    shown = [link for link in (safe_link(image.url) for image in links) if link]
    return caption(header, [*extra_lines, *problems], shown, images.prompt, limit)


def missing_image_line(image: Image) -> str:
    """One line saying why an image isn't attached (the core's words, shown literally)."""
    return escape_markdown(image.problem or "An image could not be posted.")
