"""Discord's Again and Stop buttons: persistent components that work after a restart, and which message of an
answer shows which.

Persistence: each button is a discord.py `DynamicItem` whose `custom_id` carries the request id (`again:<32 hex>`,
`stop:<32 hex>`: Discord allows 100 characters, https://discord.com/developers/docs/components/reference). The
client matches every component interaction against the registered templates (`Client.add_dynamic_items`), so a
press on a message sent before a restart still arrives with no view kept in memory
(site-packages/discord/ui/view.py, `dispatch_dynamic_items`). `from_custom_id` only reads the id: it runs inside
the 3 s Discord gives for the acknowledgement. The press itself goes to the adapter as the client event
`replicate_button` (`client.dispatch`), like every other event discord.py delivers.

Which message carries what, at no edit of its own: Stop rides on the message being written (its status, or its
text with the streaming cursor), from its first post or edit: the placeholder, and when a long answer moves on
to a new message, that one (the edit that settles the full message takes Stop off it). The final edit, which
removes the cursor anyway, takes Stop away and puts Again on the last message instead, when the answer has one.
Only a message the final text left unedited (rare: a failed final edit, an answer that shrank) gets one edit of
its own to set its buttons right.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord.ui import Button, DynamicItem, View

from adapters.base import CommandIntake
from adapters.discord_commands import origin_of
from adapters.discord_format import fit
from adapters.discord_replies import DELIVERY_ERRORS
from adapters.rendering import CURSOR
from bot.buttons import ButtonAction
from bot.requests import CommandRequest
from bot.text import split_message

log = logging.getLogger(__name__)

WORKING_MARK = "⏳"  # how the adapters' status lines begin (a message with no answer text yet)
PRESS_EVENT = "replicate_button"  # delivered to the client's `on_replicate_button(interaction, action, request_id)`
REQUEST_ID_PATTERN = r"(?P<id>[0-9a-f]{32})"  # a request id: uuid4().hex
AGAIN_LABEL = "Again"
STOP_LABEL = "Stop"


class _PressButton(DynamicItem[Button[Any]], template=re.compile("(?!)")):  # never matches: only a base
    """A button whose press is handed to the adapter with its action and request id."""

    action: ButtonAction

    def __init__(self, request_id: str, label: str, style: discord.ButtonStyle) -> None:
        super().__init__(Button(label=label, style=style, custom_id=f"{self.action}:{request_id}"))
        self.request_id = request_id

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        interaction.client.dispatch(PRESS_EVENT, interaction, self.action, self.request_id)


class AgainButton(_PressButton, template=rf"again:{REQUEST_ID_PATTERN}"):
    """Run the finished command anew, as a command of whoever presses it."""

    action = ButtonAction.AGAIN

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id, AGAIN_LABEL, discord.ButtonStyle.secondary)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> AgainButton:
        return cls(match["id"])


class StopButton(_PressButton, template=rf"stop:{REQUEST_ID_PATTERN}"):
    """Cancel the running command (its asker or an admin)."""

    action = ButtonAction.STOP

    def __init__(self, request_id: str) -> None:
        super().__init__(request_id, STOP_LABEL, discord.ButtonStyle.danger)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> StopButton:
        return cls(match["id"])


PERSISTENT_BUTTONS = (AgainButton, StopButton)


def buttons_view(button: _PressButton | None) -> View | None:
    """A view holding only `button` (None: no components). No timeout: the buttons outlive any view object."""
    if button is None:
        return None
    view = View(timeout=None)
    view.add_item(button)
    return view


NO_MENTIONS = discord.AllowedMentions.none()
# The Again answer of a press: (the press, the new request, acknowledgement latency in seconds).
AnswerAgain = Callable[[discord.Interaction[Any], CommandRequest, float], Awaitable[None]]


class ButtonPresses:
    """A press: claimed once (in the state store: a redelivered interaction, in this process or another, is
    dropped before it could be acknowledged twice), acknowledged at once with a deferred update (nothing changes on
    screen), then Again runs the command anew as the presser's, or Stop cancels it; a refusal is an ephemeral
    follow-up."""

    def __init__(self, intake: CommandIntake, answer_again: AnswerAgain) -> None:
        self._intake = intake
        self._answer_again = answer_again

    async def on_press(self, interaction: discord.Interaction[Any], action: ButtonAction, request_id: str) -> None:
        """The client's `on_replicate_button` event."""
        async def refuse(text: str) -> None:
            await _tell_privately(interaction, text)

        async def acknowledge() -> None:
            await interaction.response.defer()  # type 6: within Discord's 3 s, before any other call

        async def answer(request: CommandRequest, ack_latency_s: float) -> None:
            await self._answer_again(interaction, request, ack_latency_s)

        await self._intake.take_press(delivery_key=str(interaction.id), origin=origin_of(interaction),
                                      action=action, request_id=request_id, refuse=refuse, answer=answer,
                                      acknowledge=acknowledge)


async def _tell_privately(interaction: discord.Interaction[Any], text: str) -> None:
    try:
        await interaction.followup.send(fit(text), ephemeral=True, allowed_mentions=NO_MENTIONS)
    except DELIVERY_ERRORS as error:
        log.info("Discord: could not answer the button press %s privately (%s)", interaction.id, type(error).__name__)


SetView = Callable[[str, View | None], Awaitable[None]]  # edit only the components of a message (by id)


class AnswerButtons:
    """The buttons of one answer's messages: Stop on the one being written; at the end, Again on the last."""

    def __init__(self, stop_id: str | None, max_chars: int) -> None:
        self._stop_id = stop_id
        self._max_chars = max_chars
        self._ending = False
        self._last_text: str | None = None  # the final text's last chunk: the message that gets Again
        self._again_id: str | None = None
        self._shown: dict[str, str | None] = {}  # message id -> the custom id it shows (None: no button)

    def view_for(self, text: str) -> View | None:
        """The components a send or edit of this text carries."""
        if not self._ending:
            being_written = text.endswith(CURSOR) or text.startswith(WORKING_MARK)
            return buttons_view(StopButton(self._stop_id) if being_written and self._stop_id else None)
        if self._again_id is not None and text == self._last_text:
            return buttons_view(AgainButton(self._again_id))
        return None

    def shown(self, message_id: str, view: View | None) -> None:
        """Record what a send or edit that Discord accepted shows."""
        self._shown[message_id] = _custom_id(view)

    def end(self, final_text: str | None, again_id: str | None) -> None:
        """From now on the answer is final: no Stop; Again (if `again_id`) on the message showing the last chunk
        of `final_text` (as `StreamingReply.finish` splits it)."""
        self._ending = True
        self._again_id = again_id
        self._last_text = split_message(final_text, self._max_chars)[-1] if final_text else None

    async def settle(self, message_ids: list[str], set_view: SetView) -> None:
        """After the final text: each message shows what it should (a message the final text left unedited may
        still show Stop). One edit per message that is wrong, none otherwise."""
        self._ending = True
        for index, message_id in enumerate(message_ids):
            last = index == len(message_ids) - 1
            wanted = buttons_view(AgainButton(self._again_id)) if last and self._again_id else None
            if self._shown.get(message_id) == _custom_id(wanted):
                continue
            try:
                await set_view(message_id, wanted)
            except (discord.DiscordException, OSError) as error:  # the answer stands; a stale button says so itself
                log.info("Discord: could not update the buttons of message %s (%s)", message_id, type(error).__name__)
                continue
            self.shown(message_id, wanted)


def _custom_id(view: View | None) -> str | None:
    if view is None:
        return None
    return next((getattr(item, "custom_id", None) for item in view.children), None)
