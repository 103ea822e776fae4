"""A Slack thread as the streaming renderer sees it, and the Web API call that turns a spent 429 into `RateLimited`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_format as fmt
from adapters.rendering import NO_BUTTONS, Buttons, RateLimited
from adapters.slack_buttons import action_blocks, message_content

# What a Web API call raises once slack_sdk's retries are spent: Slack said no (SlackApiError, 5xx included),
# the request failed (SlackRequestError), 429s outlasted the retries (RateLimited), the network failed.
DELIVERY_ERRORS = (SlackClientError, RateLimited, aiohttp.ClientError, TimeoutError)


def error_code(error: BaseException) -> str:
    """What to log for a failed call: Slack's error code, or the exception's type (never its text)."""
    if isinstance(error, SlackApiError):
        return f"{error.response.get('error', '')} (HTTP {error.response.status_code})"
    return type(error).__name__


async def call(request: Awaitable[Any]) -> Any:
    """A Web API call whose 429, once slack_sdk's own retries are spent, becomes `RateLimited`."""
    try:
        return await request
    except SlackApiError as error:
        if error.response.status_code == 429:
            retry_after = error.response.headers.get("Retry-After") or error.response.headers.get("retry-after") or 1
            raise RateLimited(float(retry_after)) from error
        raise


class SlackThread:
    """A thread's replies, as the streaming renderer sees them.

    Edits go through `edit_client`, which does not wait out 429s: the renderer decides what a rate
    limit means (skip a progress edit; post a final answer anew), so a finished answer never sleeps
    behind Retry-After. Posts and deletes go through `client`, whose retry handlers wait it out.
    Every message of the thread is sent as `markup`, posts and edits alike, so no edit changes a
    message's kind (chat.update answers `block_mismatch` to that), with the buttons it carries (Stop while its
    answer is written, Again once it is finished).
    """

    def __init__(
        self, client: AsyncWebClient, edit_client: AsyncWebClient, channel: str, thread_ts: str, markup: fmt.Markup
    ) -> None:
        self._client = client
        self._edit_client = edit_client
        self.channel = channel
        self.thread_ts = thread_ts
        self.markup = markup

    async def post(self, text: str, buttons: Buttons = NO_BUTTONS) -> str:
        response = await call(self._client.chat_postMessage(
            channel=self.channel,
            thread_ts=self.thread_ts,
            unfurl_links=False,
            unfurl_media=False,
            **message_content(text, self.markup, buttons),
        ))
        return str(response["ts"])

    async def edit(self, message_id: str, text: str, buttons: Buttons = NO_BUTTONS) -> None:
        await call(self._edit_client.chat_update(
            channel=self.channel, ts=message_id, **message_content(text, self.markup, buttons)
        ))

    async def delete(self, message_id: str) -> None:
        await call(self._client.chat_delete(channel=self.channel, ts=message_id))

    async def post_privately(self, user_id: str, text: str, buttons: Buttons = NO_BUTTONS) -> None:
        """An ephemeral message (mrkdwn, already escaped) in the thread that only `user_id` sees, with `buttons`."""
        await call(self._edit_client.chat_postEphemeral(
            channel=self.channel, user=user_id, thread_ts=self.thread_ts,
            **message_content(text, fmt.Markup.MRKDWN, buttons),
        ))

    # Native streaming goes through `edit_client` too: a 429 there means "use another way now", never "wait".

    async def start_stream(self, recipient_user_id: str, recipient_team_id: str) -> str:
        """A new streamed reply (empty until text is appended); its ts. Slack asks for the recipient in channels."""
        response = await call(self._edit_client.chat_startStream(
            channel=self.channel, thread_ts=self.thread_ts,
            recipient_user_id=recipient_user_id, recipient_team_id=recipient_team_id,
        ))
        return str(response["ts"])

    async def append_stream(self, message_id: str, markdown: str) -> None:
        """Add `markdown` (already inert) to the end of a streamed reply."""
        await call(self._edit_client.chat_appendStream(channel=self.channel, ts=message_id, markdown_text=markdown))

    async def stop_stream(self, message_id: str, markdown: str, buttons: Buttons = NO_BUTTONS) -> None:
        """End a streamed reply with `markdown` added (may be empty) and `buttons` under it."""
        await call(self._edit_client.chat_stopStream(
            channel=self.channel, ts=message_id, markdown_text=markdown or None, blocks=action_blocks(buttons) or None
        ))
