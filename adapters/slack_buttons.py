"""Slack's Again and Stop buttons: the blocks that show them under a thread reply, and the listeners for their presses.

A press arrives as a `block_actions` payload (https://api.slack.com/reference/interaction-payloads/block-actions):
over Socket Mode in an `interactive` envelope, in HTTP mode as a signed POST whose form field `payload` holds it;
bolt routes both to `app.action(action_id)`. Slack does not acknowledge a press by itself: the listener calls
`ack()` first, within the 3 s Slack allows, and does the rest in an owned task (bolt sends the ack only when the
listener returns). A button's `value` is the id the core keeps its command under, so any process, before or after
a restart, can take the press: nothing about buttons is held in memory.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from adapters import slack_format as fmt
from adapters.base import CommandIntake
from adapters.rendering import NO_BUTTONS, Buttons
from adapters.slack_conversations import AnswerTurn, link_thread
from bot.buttons import ButtonAction
from bot.core import CommandCore
from bot.requests import CommandRequest, Origin
from bot.text import split_message

log = logging.getLogger(__name__)

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks/section-block, /block-elements/button-element).
SECTION_TEXT_MAX_CHARS = 3000  # a section block's text
BUTTON_VALUE_MAX_CHARS = 2000  # a button's value: ours is a 32-character request id
BUTTONS_BLOCK_ID = "buttons"
AGAIN_LABEL = "Again"
STOP_LABEL = "Stop"

RespondPrivately = Callable[[AsyncRespond, str], Awaitable[bool]]  # one ephemeral message through response_url


def message_content(text: str, markup: fmt.Markup, buttons: Buttons = NO_BUTTONS) -> dict[str, Any]:
    """The `chat.postMessage` / `chat.update` arguments for a thread reply that shows `text` (already inert) and
    `buttons`.

    Every call sends the message's blocks, buttons or none: chat.update keeps a message's old blocks when it is
    given none, so an edit that sent only `text` would leave a Stop button under a finished answer. Slack shows a
    message's blocks instead of its `text`, so mrkdwn text goes into section blocks and `text` is the fallback."""
    if markup is fmt.Markup.MARKDOWN:
        content = fmt.message_content(text, markup)
    else:
        sections = [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
                    for chunk in split_message(text, SECTION_TEXT_MAX_CHARS)]
        content = {"blocks": sections, "text": text}
    content["blocks"] = [*content["blocks"], *action_blocks(buttons)]
    return content


def action_blocks(buttons: Buttons) -> list[dict[str, Any]]:
    """An actions block with the message's buttons, or nothing when it has none."""
    elements = []
    if buttons.stop_id is not None:
        elements.append(_button(ButtonAction.STOP, STOP_LABEL, buttons.stop_id, style="danger"))
    if buttons.again_id is not None:
        elements.append(_button(ButtonAction.AGAIN, AGAIN_LABEL, buttons.again_id))
    return [{"type": "actions", "block_id": BUTTONS_BLOCK_ID, "elements": elements}] if elements else []


def _button(action: ButtonAction, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    assert len(value) <= BUTTON_VALUE_MAX_CHARS, "a request id is 32 characters"
    button: dict[str, Any] = {"type": "button", "action_id": str(action), "value": value,
                              "text": {"type": "plain_text", "text": label}}
    if style is not None:
        button["style"] = style
    return button


def presser_of(body: dict[str, Any]) -> Origin:
    """Who pressed, where: the presser's Slack user in the message's channel and thread."""
    user = body.get("user") or {}
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = str((body.get("channel") or {}).get("id") or container.get("channel_id") or "")
    return Origin(
        platform="slack",
        user_id=str(user.get("id", "")),
        channel_id=channel,
        user_name=user.get("username") or user.get("name"),
        workspace_id=(body.get("team") or {}).get("id") or user.get("team_id"),
        # An ephemeral message's press (the Stop of a native stream) has no `message`, only the container's ts.
        thread_id=message.get("thread_ts") or container.get("thread_ts") or message.get("ts")
        or container.get("message_ts"),
    )


class SlackButtons:
    """Registers the Again and Stop listeners on `app`; a press becomes `CommandIntake.take_press`."""

    def __init__(
        self,
        app: AsyncApp,
        core: CommandCore,
        intake: CommandIntake,
        *,
        answer: AnswerTurn,
        respond_privately: RespondPrivately,
    ) -> None:
        self._core = core
        self._intake = intake
        self._answer = answer
        self._respond_privately = respond_privately
        for action in ButtonAction:
            app.action(str(action))(self._on_press)

    async def _on_press(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                        respond: AsyncRespond) -> None:
        await ack()  # first: Slack shows the press as failed without an ack within 3 s
        origin = presser_of(body)
        if not (origin.user_id and origin.channel_id and origin.thread_id):
            log.info("Slack: dropped a button press without a user, channel or message")
            return

        async def answer(request: CommandRequest, latency_s: float) -> None:
            assert origin.thread_id is not None
            if request.conversation_id is not None:  # a reply to the new answer goes on with its conversation
                await link_thread(self._core, origin.channel_id, origin.thread_id, request.conversation_id)
            await self._answer(request, latency_s, origin.channel_id, origin.thread_id, origin.user_id)

        await self._intake.take_press(
            # One per press: a redelivered envelope (or HTTP retry) carries the same trigger.
            delivery_key=f"{origin.workspace_id}:{body.get('trigger_id') or action.get('action_ts')}",
            origin=origin,
            action=ButtonAction(str(action.get("action_id"))),
            request_id=str(action.get("value") or ""),
            refuse=functools.partial(self._refuse, respond),
            answer=answer,
        )

    async def _refuse(self, respond: AsyncRespond, message: str) -> None:
        await self._respond_privately(respond, fmt.escape(message))
