"""Slack's text rules: escaping untrusted text, Markdown answers in markdown blocks, and the words of our messages.

Slack turns `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^…>`, `<@U…>` and `<url|label>` into
pings and links, in `text` (mrkdwn) and inside markdown blocks alike
(https://api.slack.com/reference/surfaces/formatting#escaping). Each needs a literal `<`, so:

- mrkdwn `text` (captions, notices, failures, private answers): escape `&`, `<` and `>`, Slack's own rule.
- Answers are Markdown, shown formatted through a `markdown` block
  (https://docs.slack.dev/reference/block-kit/blocks/markdown-block): escape `<` and `>` only. A bare `&`
  cannot make a `<`, so it cannot form a mention; escaping it would break the query strings of links.

Model text is never sent with `link_names` or `parse=full`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, assert_never

from bot.replies import Failure, Image, Images, Status, TextDone
from bot.requests import CommandRequest
from bot.text import close_open_fence, split_message

# Limits and timings (Slack's method and block docs).
CHAT_UPDATE_MAX_CHARS = 4000  # chat.update answers msg_too_long above this; well inside a markdown block's 12,000
EDIT_INTERVAL_S = 1.0  # per message: a reply is edited at most once a second
CHAT_UPDATE_PER_MINUTE = 50  # Tier 3, per workspace, across all messages
INTERIM_EDITS_PER_MINUTE = 40  # leaves a fifth of Tier 3 for final edits
INTERIM_EDIT_BURST = 10
# Native streaming (docs.slack.dev/reference/methods/chat.startStream, .appendStream, .stopStream; tiers from
# docs.slack.dev/apis/web-api/rate-limits): starting and stopping are Tier 2 (20 a minute per workspace, each),
# appending is Tier 4 (100 a minute); a stream leaves the streaming state about 5 minutes after it starts.
STREAM_STARTS_PER_MINUTE = 20  # chat.startStream, and as many chat.stopStream
STREAM_RATE_WINDOW_S = 62.0  # a minute, plus margin: Slack counts a call when it arrives, we when we send it
STREAM_APPENDS_PER_MINUTE = 80  # chat.appendStream's Tier 4 (100), less the burst below
STREAM_APPEND_BURST = 20
STREAM_FLUSH_INTERVAL_S = 1.0  # per stream: what arrived in the last second goes out in one append
STREAM_MAX_CHARS = 12_000  # one streamed message: markdown_text's limit per call, a message's markdown total
STREAM_CLOSING_RESERVE_CHARS = 200  # left free in a streamed message for the fence that may close it
STREAM_REFUSAL_RETRY_S = 600.0
# A 429 on chat.startStream with a Retry-After this long is the workspace's Tier 2 (a minute's window) and pauses
# every start; a shorter one is a channel's "one message per second" and only sends that answer the edit way.
STREAM_TIER_PAUSE_MIN_S = 10.0  # a workspace that refused native streaming is asked again after this
PROMPT_PREVIEW_CHARS = 500
RESPONSE_URL_MAX_USES = 5  # response_url: 5 uses in 30 minutes

STREAM_STOP_TEXT = "_⏳ Your answer is being written in this thread. Only you can see this: press Stop to end it._"
PRIVATE_FALLBACK_TEXT = "Slack isn't taking my messages in this channel right now, so here is your answer, privately."

_URL_ENCODED = {"|": "%7C", "<": "%3C", ">": "%3E", " ": "%20", "\n": "%0A", "\t": "%09"}
_BARE_AMPERSAND = re.compile(r"&(?!lt;|gt;)")  # any `&` but those of the `&lt;`/`&gt;` a markdown text carries
_ENTITY_TAIL = re.compile(r"&[#\w]{0,8}$")


class Markup(StrEnum):
    """How a thread message's text reaches Slack; a message keeps one kind for life (chat.update's
    `block_mismatch`), so a thread reply's placeholder, statuses and final text all share it."""

    MRKDWN = "mrkdwn"  # Slack's own markup in `text`: captions, /imagine's statuses
    MARKDOWN = "markdown"  # standard Markdown in a markdown block, plus a plain `text` fallback: answers


def escape(text: str) -> str:
    """Untrusted text as Slack shows it literally in mrkdwn: no pings, no links that weren't in the text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_markdown(text: str) -> str:
    """Untrusted Markdown for a markdown block: formatting stays, mentions and `<url|label>` links show literally."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def inert(text: str, markup: Markup) -> str:
    """Untrusted text made safe for a message of kind `markup`."""
    return escape_markdown(text) if markup is Markup.MARKDOWN else escape(text)


def message_content(text: str, markup: Markup) -> dict[str, Any]:
    """The `chat.postMessage` / `chat.update` arguments that show `text` (already made inert) as `markup`.

    A markdown block goes with a `text` fallback (notifications, screen readers), never with top-level
    `markdown_text`, which cannot be combined with `blocks` or `text` (`markdown_text_conflict`)."""
    if markup is Markup.MRKDWN:
        return {"text": text}
    return {"blocks": [{"type": "markdown", "text": text}], "text": fallback_text(text)}


def fallback_text(markdown: str) -> str:
    """A markdown block's text as plain mrkdwn `text`: `&` escaped too, cut to what chat.update accepts."""
    plain = _BARE_AMPERSAND.sub("&amp;", markdown)
    if len(plain) <= CHAT_UPDATE_MAX_CHARS:
        return plain
    cut = plain[: CHAT_UPDATE_MAX_CHARS - 1]
    return _ENTITY_TAIL.sub("", cut) + "…"


def parent_text(request: CommandRequest) -> str:
    """The visible message that opens the thread: who asked what, with which model."""
    return (
        f"<@{request.origin.user_id}> used /{request.command} with `{escape(request.model)}`\n"
        f"{_quoted(request.prompt)}"
    )


def status_text(status: Status) -> str:
    return f"_⏳ {status.text}_"


def image_caption(images: Images, note: str = "") -> str:
    """Model, seed and any `note` (links) first; the prompt last and quoted, so that markup typed in it
    (an unclosed ``` or `*`) can only ever reformat the prompt itself."""
    count = len(images.images)
    noun = "image" if count == 1 else f"{count} images"
    head = f"🖼 {noun} · *model:* `{escape(images.run.model)}` · *seed:* {images.seed}"
    notes = [f"_{escape(text)}_" for text in images.notes]
    return "\n".join([head, *notes, *([note] if note else []), _quoted(images.prompt)])


def _quoted(prompt: str) -> str:
    shown = prompt if len(prompt) <= PROMPT_PREVIEW_CHARS else prompt[:PROMPT_PREVIEW_CHARS] + "…"
    return "\n".join(f"> {line}" for line in escape(shown).splitlines() or [""])


def image_links(images: Images, wanted: Sequence[Image] | None = None) -> str:
    """Slack links to the images' URLs (numbered by their place in the set), for when bytes can't be posted."""
    chosen = images.images if wanted is None else wanted
    return " · ".join(
        f"<{link_target(image.url)}|image {number}>"
        for number, image in enumerate(images.images, start=1)
        if image in chosen and image.url
    )


def missing_images_note(images: Images, missing: Sequence[Image]) -> str:
    """For images without posted bytes: why (one line each, as the core put it), then links where safe."""
    if not missing:
        return ""
    problems = [escape(image.problem) for image in missing if image.problem]
    links = image_links(images, missing)
    lines = problems + ([links + " (links expire in an hour)"] if links else [])
    return "\n".join(lines) or "The image could not be fetched."


def link_target(url: str) -> str:
    """A URL as the target of a `<url|label>` link: a `|` or `>` in it would end the target early and let the
    rest spoof the label, so those (and whitespace) are percent-encoded; `&<>` are escaped as Slack asks."""
    encoded = "".join(_URL_ENCODED.get(ch, ch) for ch in url)
    return escape(encoded)


def failure_text(message: str, markup: Markup = Markup.MRKDWN) -> str:
    """A failure, all of it escaped: our failure texts use no Slack markup, and some quote others' words
    (Replicate's `detail`, what the user typed)."""
    return f"⚠️ {inert(message, markup)}"


def private_texts(event: TextDone | Images | Failure, partial: str = "") -> list[str]:
    """A final reply as response_url messages (mrkdwn, at most one use short of the five); `partial` is
    what a failed answer had written."""
    match event:
        case TextDone():
            chunks = split_message(escape(event.text), CHAT_UPDATE_MAX_CHARS)
        case Images():
            chunks = [image_caption(event, image_links(event) or "(no link available)")]
        case Failure() if partial.strip():
            text = escape(close_open_fence(partial)) + "\n\n" + failure_text(event.message)
            chunks = split_message(text, CHAT_UPDATE_MAX_CHARS)
        case Failure():
            chunks = [failure_text(event.message)]
        case _:
            assert_never(event)
    return chunks[: RESPONSE_URL_MAX_USES - 1]


def not_in_channel_text(bot_user_id: str | None) -> str:
    who = f"<@{bot_user_id}>" if bot_user_id else "the bot"
    return (
        f"I can't post in this channel yet. Invite me with `/invite {who}` (or add the app in the channel's "
        "settings → Integrations), then try again. Meanwhile I'll answer you here, privately."
    )
