"""Slack's text rules: escaping untrusted model output, and the words of our thread messages.

Slack turns `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^…>`, `<@U…>` and `<url|label>` into
pings and links. Escaping `&`, `<` and `>` (Slack's own rule for text) makes model output inert; we
also never send it with `link_names` or `parse=full` (NOTES).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.replies import Image, Images, Status
from bot.requests import CommandRequest

# Limits and timings (NOTES, Slack section).
CHAT_UPDATE_MAX_CHARS = 4000  # chat.update answers msg_too_long above this
EDIT_INTERVAL_S = 1.0  # per message: a reply is edited at most once a second
CHAT_UPDATE_PER_MINUTE = 50  # Tier 3, per workspace, across all messages
INTERIM_EDITS_PER_MINUTE = 40  # leaves a fifth of Tier 3 for final edits
INTERIM_EDIT_BURST = 10
PROMPT_PREVIEW_CHARS = 500
RESPONSE_URL_MAX_USES = 5  # response_url: 5 uses in 30 minutes


def escape(text: str) -> str:
    """Untrusted text as Slack shows it literally: no pings, no links that weren't in the text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parent_text(request: CommandRequest) -> str:
    """The visible message that opens the thread: who asked what, with which model."""
    return f"<@{request.origin.user_id}> used /{request.command} with `{escape(request.model)}`\n{_quoted(request.prompt)}"


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
        f"<{escape(image.url)}|image {number}>"
        for number, image in enumerate(images.images, start=1)
        if image in chosen and image.url
    )


def failure_text(message: str) -> str:
    return f"⚠️ {message}"


def not_in_channel_text(bot_user_id: str | None) -> str:
    who = f"<@{bot_user_id}>" if bot_user_id else "the bot"
    return (
        f"I can't post in this channel yet. Invite me with `/invite {who}` (or add the app in the channel's "
        "settings → Integrations), then try again. Meanwhile I'll answer you here, privately."
    )
