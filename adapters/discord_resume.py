"""Discord: finishing an answer that a process which died began (`adapters.base.Adapter.resume`).

The destination holds what the interaction's webhook needs (application id, token, creation time) and where else
the answer may go (its channel). While the token lives (15 minutes less a margin) the answer edits the original
response through the webhook, as a live one would (`PATCH /webhooks/{application.id}/{interaction.token}/messages/
@original`, https://discord.com/developers/docs/interactions/receiving-and-responding#edit-original-interaction-
response), continuing in follow-ups; past it, the answer is posted in the channel, saying whose it is. The
resumed answer shows its status and Stop at once, then its final text; it is not streamed again token by token
(a dead process's partial text is already on screen). Its messages are linked to its conversation as a live
answer's are, so a reply to it goes on from there. Every send carries `AllowedMentions.none()`.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, assert_never, cast

import discord

from adapters.discord_buttons import AgainButton, StopButton, buttons_view
from adapters.discord_conversations import stopped_text
from adapters.discord_format import MAX_ATTACHMENTS, MAX_MESSAGE_CHARS, fit, image_caption
from adapters.discord_replies import DELIVERY_ERRORS
from bot.errors import FailureKind
from bot.replies import Failure, Images, ReplyEvent, Status, TextDelta, TextDone
from bot.requests import CommandRequest
from bot.text import close_open_fence, split_message

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# The interaction's original response, as Discord's webhook routes name it (discord.py types the id as int).
ORIGINAL = cast(int, "@original")
RESUMED_TEXT = "⏳ Still working on it…"
INCOMPLETE_NOTE = "\n\n*(answer incomplete)*"

LinkAnswer = Callable[[list[int]], Awaitable[None]]  # a reply to these messages continues the conversation


def destination_of(interaction: discord.Interaction[Any]) -> dict[str, Any]:
    """What a survivor needs to finish this interaction's answer (the token is the store's, never the log's)."""
    return {
        "application_id": interaction.application_id,
        "token": interaction.token,
        "created_at": interaction.created_at.timestamp(),
        "channel_id": interaction.channel_id,
    }


class ResumedAnswer:
    """One answer finished from its destination: the interaction while its token lives, else the channel."""

    def __init__(
        self,
        client: discord.Client,
        request: CommandRequest,
        destination: Mapping[str, Any],
        token_lifetime_s: float,
        final_text: Callable[[str], str],
        link: LinkAnswer,
    ) -> None:
        self._client = client
        self._link = link
        self._original_id: int | None = None  # the interaction's response, once the resumed answer is in it
        self._request = request
        self._webhook = discord.Webhook.partial(int(destination["application_id"]), str(destination["token"]),
                                                client=client)
        self._expires_at = float(destination["created_at"]) + token_lifetime_s
        self._channel_id = int(destination["channel_id"])
        self._final_text = final_text
        self._via_interaction = True

    def _token_alive(self) -> bool:
        return self._via_interaction and time.time() < self._expires_at

    async def run(self, events: AsyncIterator[ReplyEvent]) -> None:
        """Show the answer goes on (or return, leaving `events` unread, when nothing takes it), then deliver it."""
        if not await self._show_resumed():
            return
        text = ""
        async for event in events:
            match event:
                case Status():
                    continue
                case TextDelta():
                    text += event.text
                case TextDone():
                    # As a live answer is: linked before its final text shows (so a reply typed at once finds the
                    # conversation), and again for the messages it added.
                    linked = [self._original_id] if self._token_alive() and self._original_id is not None else []
                    await self._link(linked)
                    written = await self._deliver(split_message(self._final_text(event.text), MAX_MESSAGE_CHARS),
                                                  again_id=event.again_id)
                    await self._link([message_id for message_id in written if message_id not in linked])
                case Images():
                    await self._deliver_images(event)
                case Failure() if event.kind is FailureKind.STOPPED:
                    await self._deliver(split_message(stopped_text(text, event.message), MAX_MESSAGE_CHARS))
                case Failure():
                    partial = close_open_fence(text) + INCOMPLETE_NOTE if text.strip() else ""
                    error = fit(f"⚠️ {event.message}")
                    await self._deliver([*split_message(partial, MAX_MESSAGE_CHARS), error] if partial else [error])
                case _:
                    assert_never(event)

    async def _show_resumed(self) -> bool:
        if self._token_alive():
            try:
                original = await self._webhook.edit_message(
                    ORIGINAL, content=RESUMED_TEXT, allowed_mentions=NO_MENTIONS,
                    view=buttons_view(StopButton(self._request.request_id)))
                self._original_id = original.id
                return True
            except DELIVERY_ERRORS as error:
                log.info("Discord: the interaction of command %s refused the resumed answer (%s); trying its channel",
                         self._request.request_id, type(error).__name__)
                self._via_interaction = False
        try:
            await self._client.fetch_channel(self._channel_id)
        except DELIVERY_ERRORS as error:
            log.warning("Discord: channel %s of command %s is gone (%s)", self._channel_id, self._request.request_id,
                        type(error).__name__)
            return False
        self._via_interaction = False
        return True

    async def _deliver(self, chunks: list[str], *, again_id: str | None = None) -> list[int]:
        """The chunks, through the interaction while its token lives, else in the channel; the messages written."""
        again = buttons_view(AgainButton(again_id)) if again_id else None
        if self._token_alive():
            written: list[int] = []
            try:
                for index, chunk in enumerate(chunks):
                    view = again if index == len(chunks) - 1 else None
                    if index == 0:
                        message = await self._webhook.edit_message(ORIGINAL, content=chunk,
                                                                   allowed_mentions=NO_MENTIONS, view=view)
                    elif view is not None:
                        message = await self._webhook.send(content=chunk, wait=True, allowed_mentions=NO_MENTIONS,
                                                           view=view)
                    else:
                        message = await self._webhook.send(content=chunk, wait=True, allowed_mentions=NO_MENTIONS)
                    written.append(message.id)
                return written
            except DELIVERY_ERRORS as error:
                log.info("Discord: the interaction refused the resumed answer of %s (%s); posting in its channel",
                         self._request.request_id, type(error).__name__)
        lead = f"Answer to /{self._request.command} from <@{self._request.origin.user_id}>:\n"
        return await self._post(split_message(lead + "\n".join(chunks), MAX_MESSAGE_CHARS), again)

    async def _deliver_images(self, images: Images) -> None:
        attachable = [image for image in images.images if image.data][:MAX_ATTACHMENTS]
        links = [image for image in images.images if image not in attachable]
        again = buttons_view(AgainButton(images.again_id)) if images.again_id else None

        def files() -> list[discord.File]:  # rebuilt for every attempt: discord.py closes a File once sent
            return [discord.File(io.BytesIO(image.data), filename=image.filename) for image in attachable]

        if self._token_alive():
            try:
                await self._webhook.edit_message(ORIGINAL, content=image_caption(images, links), attachments=files(),
                                                 allowed_mentions=NO_MENTIONS, view=again)
                return
            except DELIVERY_ERRORS as error:
                log.info("Discord: the interaction refused the resumed images of %s (%s); posting in its channel",
                         self._request.request_id, type(error).__name__)
        lead = f"Answer to /{self._request.command} from <@{self._request.origin.user_id}>:\n"
        await self._post([lead + image_caption(images, links, MAX_MESSAGE_CHARS - len(lead))], again, files())

    async def _post(self, chunks: list[str], again: discord.ui.View | None,
                    files: list[discord.File] | None = None) -> list[int]:
        """The chunks posted in the channel; the messages written (those that went before a failure, too)."""
        channel = self._client.get_partial_messageable(self._channel_id)
        written: list[int] = []
        try:
            for index, chunk in enumerate(chunks):
                last = index == len(chunks) - 1
                extra: dict[str, Any] = {"view": again} if last and again is not None else {}
                if last and files:
                    extra["files"] = files
                written.append((await channel.send(content=chunk, allowed_mentions=NO_MENTIONS, **extra)).id)
        except DELIVERY_ERRORS as error:
            log.warning("Discord: the resumed answer of command %s reached no one (%s)", self._request.request_id,
                        type(error).__name__)
        return written
