"""The last-resort path for a Discord command's replies: every accepted command gets its answer somewhere.

Where a reply goes, in order:

    the interaction   while its token lives (15 minutes, less a safety margin)
    the channel       after that, or if the interaction's webhook refuses
    a direct message  if the channel refuses too (403: the bot can't see or post there any more)
    the log           one WARNING line naming the interaction, when even the DM is refused

A place that refused every form of a reply (403, 404, an expired token) is not tried again for that command.
Each reply may come in several forms, best first (images as attachments, then as links): every form is
tried in a place before moving on. Nothing here raises on a refused send; `deliver` returns None instead, so
the caller can stop a prediction whose answer has nowhere to go.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import discord

from adapters.rendering import RateLimited

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


class TokenExpired(Exception):
    """The interaction's token is (nearly) past its lifetime: nothing more goes through its webhook."""


# What a refused or failed send raises: discord.py's errors (403, 404, 5xx after its retries, a 429 it gave up
# on), the connection's, and our own refusal to use an expired token.
DELIVERY_ERRORS = (discord.DiscordException, aiohttp.ClientError, OSError, TokenExpired)


async def rate_limited_call(request: Any) -> Any:
    """discord.py already waits out 429s; a rate limit it gives up on becomes `RateLimited` for the renderer."""
    try:
        return await request
    except discord.RateLimited as error:
        raise RateLimited(error.retry_after) from error


class Place(StrEnum):
    INTERACTION = "the interaction"
    CHANNEL = "the channel"
    DM = "a direct message"


@dataclass(frozen=True)
class Message:
    """One plain message for the channel or a DM; `files` are (filename, bytes), attached to it."""

    content: str
    files: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Form:
    """One form of a reply: how the interaction shows it (None: not through the interaction), and the
    messages that carry it in the channel or a DM."""

    via_interaction: Callable[[], Awaitable[object]] | None
    messages: Callable[[Place], Sequence[Message]]


@dataclass
class Delivered:
    """Where a reply landed, and the plain messages that carry it (none through the interaction)."""

    place: Place
    messages: list[discord.Message] = field(default_factory=list)  # sent to the channel or DM


class CommandReplies:
    """The replies of one interaction, delivered along the ladder above."""

    def __init__(
        self, client: discord.Client, interaction: discord.Interaction, token_alive: Callable[[], bool]
    ) -> None:
        self._client = client
        self._interaction = interaction
        self._token_alive = token_alive
        self._refused: set[Place] = set()

    async def deliver(self, *forms: Form, what: str, if_lost: str) -> Delivered | None:
        """Send the first form that some place takes; None (after one WARNING saying `if_lost`) if none did."""
        last_error: BaseException | None = None
        for place in (Place.INTERACTION, Place.CHANNEL, Place.DM):
            usable = [form for form in forms if place is not Place.INTERACTION or form.via_interaction is not None]
            if place in self._refused or not usable or (place is Place.INTERACTION and not self._token_alive()):
                continue
            for form in usable:
                try:
                    return await self._send(place, form)
                except DELIVERY_ERRORS as error:
                    last_error = error
                    log.info("Discord: %s refused %s for interaction %s (%s)", place, what,
                             self._interaction.id, _describe(error))
            if _is_refusal(last_error):
                self._refused.add(place)
        log.warning("Discord: no way left to send %s for interaction %s (user %s, channel %s): %s; %s",
                    what, self._interaction.id, self._interaction.user.id, self._interaction.channel_id,
                    _describe(last_error) if last_error else "every place had refused before", if_lost)
        return None

    async def discard(self, delivered: Delivered | None) -> None:
        """Remove messages that were only a stand-in (a "still working" notice); failing that, they stay."""
        for message in delivered.messages if delivered else []:
            try:
                await message.delete()
            except DELIVERY_ERRORS as error:
                log.info("Discord: could not remove a notice for interaction %s (%s)", self._interaction.id,
                         _describe(error))

    async def _send(self, place: Place, form: Form) -> Delivered:
        if place is Place.INTERACTION:
            assert form.via_interaction is not None
            await form.via_interaction()
            return Delivered(place)
        channel = await (self._channel() if place is Place.CHANNEL else self._interaction.user.create_dm())
        sent = []
        for message in form.messages(place):
            # Files are rebuilt for every attempt: discord.py closes a File once it has been sent.
            files = [discord.File(io.BytesIO(data), filename=name) for name, data in message.files]
            if files:
                sent.append(await channel.send(content=message.content, files=files, allowed_mentions=NO_MENTIONS))
            else:
                sent.append(await channel.send(content=message.content, allowed_mentions=NO_MENTIONS))
        return Delivered(place, sent)

    async def _channel(self) -> discord.abc.Messageable:
        channel = self._interaction.channel
        if isinstance(channel, discord.abc.Messageable):
            return channel
        # Not in the cache (e.g. a thread the bot hasn't seen): a partial channel sends without fetching it.
        return self._client.get_partial_messageable(self._interaction.channel_id or 0)


def _is_refusal(error: BaseException | None) -> bool:
    """A place that said no for good (not a 5xx or a dropped connection, which may pass)."""
    if isinstance(error, TokenExpired):
        return True
    return isinstance(error, discord.HTTPException) and error.status in (401, 403, 404)


def _describe(error: BaseException) -> str:
    """For the log: Discord's status, code and message, never a traceback."""
    if isinstance(error, discord.HTTPException):
        return f"{error.status} {error.code} {error.text}".strip()
    return type(error).__name__
