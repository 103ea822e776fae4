"""Slack's `/replicate`: the text after the command goes to the core's administration, and its answer comes back
privately, in the ack while it is quick, else through the command's response_url.

The manifests declare `/replicate` with `should_escape: true`, so a user typed in it arrives as `<@U123|name>`
(api.slack.com/interactivity/slash-commands#creating_commands), which is what `<user>` takes.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from adapters import slack_format as fmt
from adapters.base import CommandIntake
from adapters.slack_payloads import command_delivery_key, command_origin

log = logging.getLogger(__name__)

COMMAND = "/replicate"
# The mentions the core writes itself (`<@U123>`): escaping them would show their markup. In a private
# (ephemeral) answer a mention notifies no one.
_OWN_MENTION = re.compile(r"&lt;@([UW][A-Z0-9]{2,})&gt;")


def answer_text(answer: str) -> str:
    """The core's answer as mrkdwn: everything literal but the user mentions it made."""
    return _OWN_MENTION.sub(r"<@\1>", fmt.escape(answer))


class SlackAdministration:
    """Registers `/replicate` on the bolt app and answers it through `CommandIntake.administer`."""

    def __init__(self, app: AsyncApp, intake: CommandIntake) -> None:
        self._intake = intake
        app.command(COMMAND)(self._on_command)

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        async def in_ack(answer: str) -> None:
            await ack(text=answer_text(answer))  # an ack's text is ephemeral: only the user sees it

        async def later(answer: str) -> None:
            await _respond_privately(respond, answer_text(answer))

        await self._intake.administer(
            delivery_key=command_delivery_key(command),
            origin=command_origin(command),
            text=command.get("text", ""),
            answer_in_ack=in_ack,
            acknowledge=ack,
            answer_later=later,
            redelivered=ack,  # Slack still wants its ack; the answer went with the first delivery
        )


async def _respond_privately(respond: AsyncRespond, text: str) -> None:
    try:
        response = await respond(text=text, response_type="ephemeral", replace_original=False)
    except (aiohttp.ClientError, TimeoutError) as error:
        log.warning("Slack: /replicate's answer could not reach the response_url (%s)", type(error).__name__)
        return
    if response.status_code != 200:
        log.warning("Slack: the response_url refused /replicate's answer (HTTP %s)", response.status_code)
