"""Discord messages as conversation turns: a reply to one of the bot's answers, a mention, a DM.

Which message continues what:

    a reply to a bot answer          that answer's conversation (`discord:msg:<answer message id>`); a reply to a
                                     bot message the bot no longer links starts afresh and says so
    a mention (not such a reply)     a new conversation
    a DM                             the user's latest DM conversation (`discord:dm:<user id>`), or a new one
    anything else, bots, the bot     ignored

Without the privileged Message Content intent Discord sends a message's text only when it mentions the bot or is
a DM (https://discord.com/developers/docs/events/gateway#message-content-intent); replies to interaction
responses are no exception. So a reply without a mention arrives empty: it is never sent to a model, the user
gets a hint instead, and every answer outside DMs ends with a line saying to mention the bot to continue.

The answer is a reply to the user's message (pinging no one, the user included), streamed by edits like /ask's
and continued in further replies past 2,000 characters; each of its messages then leads to the conversation.
An Again press is answered the same way, as a reply to the pressed answer (pictures attached to it).
A refused turn is told to the user privately: Discord has no ephemeral reply to a message, so by DM, else by a
reply that deletes itself.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterable, Sequence
from contextlib import aclosing
from typing import Any, assert_never

import discord

from adapters.base import CommandIntake
from adapters.discord_buttons import AnswerButtons
from adapters.discord_format import (
    DEFAULT_ATTACHMENT_LIMIT_BYTES,
    MAX_ATTACHMENTS,
    MAX_MESSAGE_CHARS,
    fit,
    image_caption,
)
from adapters.discord_replies import DELIVERY_ERRORS, rate_limited_call
from adapters.rendering import RenderLimits, StreamingReply
from bot.core import CommandCore
from bot.errors import FailureKind
from bot.replies import Failure, Images, Status, TextDelta, TextDone
from bot.requests import CommandRequest, Origin
from bot.state.store import StateStoreError
from bot.text import close_open_fence

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
# Edits of ordinary messages share the channel's rate-limit bucket (about 5 per 5 s,
# https://discord.com/developers/docs/topics/rate-limits): a slower pace than an interaction's own webhook.
CHANNEL_EDIT_INTERVAL_S = 1.5
REFUSAL_SHOWN_S = 60.0  # a refusal that could not go by DM is replied in the channel, then deleted
# `-#` is Discord's subtext line (https://support.discord.com/hc/en-us/articles/210298617).
CONTINUE_HINT = "-# Reply to this and mention @{name} to continue."
EMPTY_MESSAGE_TEXT = "Mention me (@{name}) and write your question in the same message."
INCOMPLETE_NOTE = "\n\n*(answer incomplete)*"
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def message_key(message_id: int | str) -> str:
    """The link from one of the bot's answer messages to its conversation."""
    return f"discord:msg:{message_id}"


def dm_key(user_id: int | str) -> str:
    """The link from a user's DM with the bot to their latest conversation there."""
    return f"discord:dm:{user_id}"


class ReplyMessages:
    """The messages of one answer, each a reply to the user's message (as the streaming renderer sees them),
    each with the buttons `AnswerButtons` gives it."""

    def __init__(self, message: discord.Message, buttons: AnswerButtons) -> None:
        self._message = message
        # If the user deleted their message meanwhile, the answer still goes out, just not as a reply.
        self._reference = message.to_reference(fail_if_not_exists=False)
        self._sent: dict[str, discord.Message] = {}
        self.buttons = buttons

    async def post(self, text: str, files: Sequence[tuple[str, bytes]] = ()) -> str:
        view = self.buttons.view_for(text)
        extra: dict[str, Any] = {"view": view} if view is not None else {}
        if files:
            extra["files"] = _files(files)
        sent = await rate_limited_call(self._message.channel.send(
            content=text, reference=self._reference, mention_author=False, allowed_mentions=NO_MENTIONS, **extra,
        ))
        self._sent[str(sent.id)] = sent
        self.buttons.shown(str(sent.id), view)
        return str(sent.id)

    async def edit(self, message_id: str, text: str, files: Sequence[tuple[str, bytes]] | None = None) -> None:
        """`files`, when given, replace the message's attachments."""
        view = self.buttons.view_for(text)
        extra: dict[str, Any] = {} if files is None else {"attachments": _files(files)}
        await rate_limited_call(self._sent[message_id].edit(
            content=text, allowed_mentions=NO_MENTIONS, view=view, **extra
        ))
        self.buttons.shown(message_id, view)

    async def set_view(self, message_id: str, view: discord.ui.View | None) -> None:
        """Only the buttons of a message change."""
        await rate_limited_call(self._sent[message_id].edit(view=view))

    async def delete(self, message_id: str) -> None:
        await rate_limited_call(self._sent.pop(message_id).delete())


def _files(files: Sequence[tuple[str, bytes]]) -> list[discord.File]:
    """Built for every attempt: discord.py closes a File once it has been sent."""
    return [discord.File(io.BytesIO(data), filename=name) for name, data in files]


class DiscordConversations:
    """Turns message events into conversation turns, and knows how every answer invites the next one."""

    def __init__(
        self, client: discord.Client, core: CommandCore, intake: CommandIntake, *, message_content: bool
    ) -> None:
        self._client = client
        self._core = core
        self._intake = intake
        self._message_content = message_content

    # --- what every answer shares (/ask's too) ---------------------------------------------------------------

    def final_text(self, text: str, *, in_dm: bool) -> str:
        """The answer as shown at the end: without the intent, and outside DMs, with a line saying how to go on."""
        if self._message_content or in_dm:
            return text
        return f"{close_open_fence(text)}\n\n{CONTINUE_HINT.format(name=self._bot_name())}"

    async def link_answer(
        self, message_ids: Iterable[int | str], conversation_id: str | None, *, dm_user: int | None
    ) -> None:
        """A reply to any of these messages (and, in a DM, the user's next message) continues the conversation.

        Every link is written in one store round trip: the answer's final text waits for them."""
        keys = [message_key(message_id) for message_id in message_ids]
        if dm_user is not None:
            keys.append(dm_key(dm_user))
        if conversation_id is None or not keys:
            return
        outcomes = await asyncio.gather(
            *(self._core.link_conversation(key, conversation_id) for key in keys), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, StateStoreError):  # the answer is out; only its continuation is lost
                log.warning("Discord: could not link the answer to conversation %s: %s", conversation_id, outcome)
                return
            if isinstance(outcome, BaseException):
                raise outcome

    # --- messages ------------------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """discord.py's `on_message`: a turn, a hint, or nothing."""
        me = self._client.user
        if me is None or message.author.bot or message.author.id == me.id or message.type not in ANSWERED_TYPES:
            return
        in_dm = message.guild is None
        mentioned = any(user.id == me.id for user in message.mentions)
        forgotten = False
        replied_to_bot, conversation_id = await self._replied_conversation(message, me.id)
        if replied_to_bot:
            forgotten = conversation_id is None
        elif in_dm:
            conversation_id = await self._core.find_conversation(dm_key(message.author.id))
        elif not mentioned:
            return
        text = _without_mention(message.content, me.id)
        if not text:  # withheld by Discord (no intent, no mention) or only the mention: nothing to ask a model
            await self._hint(message, conversation_id)
            return

        async def refuse(reason: str) -> None:
            await self._refuse(message, reason)

        async def answer(request: CommandRequest, latency_s: float) -> None:
            await self.answer_in_replies(message, request, latency_s, asker_id=message.author.id)

        await self._intake.take_turn(
            delivery_key=str(message.id),
            origin=_origin(message),
            text=text,
            conversation_id=conversation_id,
            refuse=refuse,
            answer=answer,
            forgotten=forgotten,
        )

    async def _replied_conversation(self, message: discord.Message, bot_id: int) -> tuple[bool, str | None]:
        """Whether the message replies to the bot, and the conversation that answer leads to (None: gone)."""
        reference = message.reference
        if message.type is not discord.MessageType.reply or reference is None or reference.message_id is None:
            return False, None
        conversation_id = await self._core.find_conversation(message_key(reference.message_id))
        resolved = reference.resolved
        by_bot = isinstance(resolved, discord.Message) and resolved.author.id == bot_id
        return conversation_id is not None or by_bot, conversation_id

    async def _hint(self, message: discord.Message, conversation_id: str | None) -> None:
        """Say how to ask (once per message, like a turn); a reply to the hint goes on with the conversation."""
        if not await self._core.claim_delivery(f"discord:{message.id}"):
            return
        try:
            sent = await message.reply(
                EMPTY_MESSAGE_TEXT.format(name=self._bot_name()), mention_author=False, allowed_mentions=NO_MENTIONS
            )
        except DELIVERY_ERRORS as error:
            log.info("Discord: could not send a hint in channel %s (%s)", message.channel.id, type(error).__name__)
            return
        if conversation_id is not None:
            await self.link_answer([sent.id], conversation_id, dm_user=None)

    async def _refuse(self, message: discord.Message, reason: str) -> None:
        """Privately: a DM; if the user takes no DMs from the bot, a reply that deletes itself."""
        try:
            await message.author.send(fit(reason), allowed_mentions=NO_MENTIONS)
            return
        except DELIVERY_ERRORS as error:
            log.info("Discord: could not DM a refusal to %s (%s); replying instead", message.author.id,
                     type(error).__name__)
        try:
            await message.reply(
                fit(reason), mention_author=False, allowed_mentions=NO_MENTIONS, delete_after=REFUSAL_SHOWN_S
            )
        except DELIVERY_ERRORS as error:
            log.warning("Discord: could not tell %s their message was refused (%s)", message.author.id,
                        type(error).__name__)

    async def answer_again(
        self, interaction: discord.Interaction[Any], request: CommandRequest, latency_s: float
    ) -> None:
        """An Again press's answer: a reply to the pressed message, in the conversation that message was in."""
        if interaction.message is None:  # a button press always comes with its message
            log.error("Discord: an Again press without its message (interaction %s)", interaction.id)
            return
        await self.answer_in_replies(interaction.message, request, latency_s, asker_id=interaction.user.id)

    async def answer_in_replies(
        self, message: discord.Message, request: CommandRequest, latency_s: float, *, asker_id: int
    ) -> None:
        """Stream the answer into replies to `message` (Stop on the one being written, Again on the last at the
        end); link them once the answer is final. In a DM the asker's next message continues it too."""
        in_dm = message.guild is None
        async def link(message_ids: list[str], *, dm: bool = False) -> None:
            """The answer's messages; and with `dm`, the asker's DM (before the final text: a DM's next message
            needs no message of ours to find its conversation)."""
            await self.link_answer(message_ids, request.conversation_id, dm_user=asker_id if dm else None)

        messages = ReplyMessages(message, AnswerButtons(request.request_id, MAX_MESSAGE_CHARS))
        limits = RenderLimits(max_chars=MAX_MESSAGE_CHARS, edit_interval_s=CHANNEL_EDIT_INTERVAL_S)
        reply = StreamingReply(messages, None, limits)

        async def finish(text: str, again_id: str | None) -> None:
            messages.buttons.end(text, again_id)  # Stop goes, Again comes with the final edit
            await reply.finish(text)
            await messages.buttons.settle(reply.message_ids, messages.set_view)

        try:
            async with aclosing(self._core.execute(request, ack_latency_s=latency_s)) as events:
                async for event in events:
                    match event:
                        case Status():
                            reply.set_status(f"⏳ {event.text}")
                        case TextDelta():
                            reply.append(event.text)
                        case TextDone():
                            # Linked before the final text shows (and again for messages it added), so a reply
                            # typed at once finds the conversation.
                            linked = reply.message_ids
                            await link(linked, dm=in_dm)
                            await finish(self.final_text(event.text, in_dm=in_dm), event.again_id)
                            await link([i for i in reply.message_ids if i not in linked])
                        case Failure() if event.kind is FailureKind.STOPPED:
                            await finish(stopped_text(reply.text, event.message), None)
                        case Failure():
                            await finish(_failure_text(reply.text, event.message), None)
                        case Images():  # an Again of /imagine
                            await reply.aclose()
                            await _send_images(messages, reply.message_ids, event, _attachment_limit(message))
                        case _:
                            assert_never(event)
        except DELIVERY_ERRORS as error:  # leaving `execute` early cancels the prediction
            log.warning("Discord: could not answer message %s in channel %s (%s)", message.id, message.channel.id,
                        type(error).__name__)
        finally:
            await reply.aclose()

    def _bot_name(self) -> str:
        user = self._client.user
        return user.name if user is not None else "me"


def stopped_text(partial: str, stopped: str) -> str:
    """A stopped answer: what it had written (its code block closed), then that it was stopped."""
    if not partial.strip():
        return f"⏹ {stopped}"
    return f"{close_open_fence(partial)}\n\n⏹ {stopped}"


async def _send_images(messages: ReplyMessages, shown: list[str], images: Images, limit_bytes: int) -> None:
    """The pictures as attachments in the answer's message (its placeholder, else a new reply), with Again;
    as links if Discord refuses the files."""
    attachable = [image for image in images.images if image.data and len(image.data) <= limit_bytes][:MAX_ATTACHMENTS]
    links = [image for image in images.images if image not in attachable]
    files = [(image.filename, image.data) for image in attachable if image.data]
    for text, with_files in ((image_caption(images, links), files), (image_caption(images, list(images.images)), [])):
        messages.buttons.end(text, images.again_id)
        try:
            if shown:
                await messages.edit(shown[0], text, with_files)
            else:
                await messages.post(text, with_files)
            return
        except DELIVERY_ERRORS as error:
            log.info("Discord: the images were refused (%s)%s", type(error).__name__,
                     "; sending links instead" if with_files else "")
    log.warning("Discord: the images of an Again press are lost")


def _attachment_limit(message: discord.Message) -> int:
    return message.guild.filesize_limit if message.guild is not None else DEFAULT_ATTACHMENT_LIMIT_BYTES


def _failure_text(partial: str, error: str) -> str:
    """The error; after the part of the answer that came (its code block closed), when some did."""
    if not partial.strip():
        return f"⚠️ {error}"
    return f"{close_open_fence(partial)}{INCOMPLETE_NOTE}\n\n⚠️ {error}"


def _without_mention(content: str, bot_id: int) -> str:
    """The message's text without the mention of the bot (`<@id>`, or `<@!id>` from older clients)."""
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def _origin(message: discord.Message) -> Origin:
    """Who wrote the message, and where (a member with Manage Server administers the bot in that server)."""
    author = message.author
    return Origin(
        platform="discord",
        user_id=str(author.id),
        channel_id=str(message.channel.id),
        user_name=author.name,
        workspace_id=str(message.guild.id) if message.guild is not None else None,
        platform_admin=isinstance(author, discord.Member) and author.guild_permissions.manage_guild,
    )
