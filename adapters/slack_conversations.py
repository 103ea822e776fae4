"""Slack conversations: a reply in a thread the bot answered, a mention, a direct message → the next turn.

Which messages are turns (https://docs.slack.dev/reference/events/message, /app_mention):

- a reply in a thread (`thread_ts` present and not the message's own `ts`; the Events API sends no
  `message_replied` subtype for it) whose root leads to a conversation continues it. A thread the bot no longer
  remembers but whose parent it wrote (`parent_user_id`) starts afresh and says so; any other thread is not ours;
- a mention of the bot starts a conversation in the mentioning message's thread (in a thread that already is a
  conversation, it is just the next turn);
- in a direct message (`channel_type` "im"), a top-level message starts one and replies in its thread continue it.

Each is answered in its thread, streamed like /ask. A mention in a channel arrives twice, as `app_mention` and as
`message` (two event ids, one `channel` + `ts`), and Slack redelivers an event it thinks unacknowledged: the turn's
delivery key is the message's channel and ts, so it is answered once. Other bots' messages and edits, deletions,
joins (any subtype but a thread broadcast or a file share) are ignored, yet acknowledged: bolt answers an event
no listener matches with 404 "unhandled request", which in Socket Mode means no ack, and Slack sends it again
(slack_bolt/app/async_app.py, `async_dispatch`). bolt itself drops the bot's own messages (`IgnoringSelfEvents`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp

from adapters import slack_format as fmt
from adapters.base import CommandIntake
from bot.core import CommandCore
from bot.requests import CommandRequest, Origin
from bot.state.store import StateStoreError

log = logging.getLogger(__name__)

# Message subtypes that are someone saying something (https://docs.slack.dev/reference/events/message#subtypes);
# every other subtype (message_changed, message_deleted, channel_join, …) is not a turn.
SAID_SUBTYPES = (None, "thread_broadcast", "file_share")
DIRECT_MESSAGE = "im"  # the event's `channel_type` in a direct message with the bot
EMPTY_MENTION_TEXT = "Write your question after the mention, e.g. `@Replicate what is a haiku?`"

# (request, latency in seconds, channel, thread ts, user)
AnswerTurn = Callable[[CommandRequest, float, str, str, str], Awaitable[None]]
TellPrivately = Callable[[str, str, str | None, str], Awaitable[bool]]  # channel, user, thread, text


def thread_key(channel: str, thread_ts: str) -> str:
    """The key a Slack thread (its root message) is linked to its conversation under."""
    return f"slack:{channel}:{thread_ts}"


async def link_thread(core: CommandCore, channel: str, thread_ts: str, conversation_id: str) -> None:
    """From now on a reply in this thread continues the conversation; if the store fails, the answer still goes out."""
    try:
        await core.link_conversation(thread_key(channel, thread_ts), conversation_id)
    except StateStoreError as error:
        log.warning("Slack: could not link thread %s in %s to its conversation (%s)", thread_ts, channel, error)


class SlackConversations:
    """Registers the event listeners on `app` and turns the messages that are turns into `take_turn` calls."""

    def __init__(
        self,
        app: AsyncApp,
        core: CommandCore,
        intake: CommandIntake,
        *,
        answer: AnswerTurn,
        tell: TellPrivately,
        bot_user_id: Callable[[], str | None],
    ) -> None:
        self._core = core
        self._intake = intake
        self._answer = answer
        self._tell = tell
        self._bot_user_id = bot_user_id
        app.event("app_mention")(self._on_mention)
        app.event({"type": "message", "subtype": SAID_SUBTYPES})(self._on_message)
        # Last: every other message event (edits, deletions, joins…) is acknowledged and dropped here.
        app.event("message")(self._on_other_message)

    async def _on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._take(event, body, mentioned=True)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._take(event, body, mentioned=self._own_mention().search(event.get("text") or "") is not None)

    async def _on_other_message(self, event: dict[str, Any]) -> None:
        log.debug("Slack: ignored a %s message event", event.get("subtype"))

    async def _take(self, event: dict[str, Any], body: dict[str, Any], *, mentioned: bool) -> None:
        if event.get("bot_id"):  # another bot (our own events never get here: bolt drops them)
            return
        channel, ts, user = str(event.get("channel", "")), str(event.get("ts", "")), str(event.get("user", ""))
        if not (channel and ts and user):
            return
        thread_ts = event.get("thread_ts")
        in_thread = thread_ts is not None and thread_ts != ts
        root = str(thread_ts) if in_thread else ts
        conversation_id, forgotten = None, False
        if in_thread:
            conversation_id = await self._core.find_conversation(thread_key(channel, root))
            forgotten = conversation_id is None and event.get("parent_user_id") == self._bot_user_id()
            if conversation_id is None and not (forgotten or mentioned):
                return  # a thread the bot is not part of
        elif not (mentioned or event.get("channel_type") == DIRECT_MESSAGE):
            return  # a channel message not meant for the bot
        delivery_key = f"{channel}:{ts}"
        text = self._own_mention().sub(" ", str(event.get("text") or "")).strip()
        if not text:
            # Never an empty prompt to a model; the hint is given once, however many events the message came as.
            if mentioned and await self._core.claim_delivery(f"slack:{delivery_key}"):
                await self._tell(channel, user, root, EMPTY_MENTION_TEXT)
            return

        async def refuse(message: str) -> None:
            await self._tell(channel, user, root, fmt.escape(message))

        async def answer(request: CommandRequest, latency_s: float) -> None:
            if request.conversation_id is not None:  # a new or restarted conversation, or its expiry refreshed
                await link_thread(self._core, channel, root, request.conversation_id)
            await self._answer(request, latency_s, channel, root, user)

        await self._intake.take_turn(
            delivery_key=delivery_key,
            origin=Origin(
                platform="slack",
                user_id=user,
                channel_id=channel,
                workspace_id=str(body.get("team_id") or event.get("team") or "") or None,
                thread_id=root,
            ),
            text=text,
            conversation_id=conversation_id,
            refuse=refuse,
            answer=answer,
            forgotten=forgotten,
        )

    def _own_mention(self) -> re.Pattern[str]:
        """`<@U…>` or `<@U…|name>` of the bot itself (known once the start-up auth.test has answered)."""
        bot_user_id = self._bot_user_id() or "\0"  # before start-up nothing matches
        return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>")
