"""What the bot remembers of each conversation, in the state store: its model and options, its turns, and which
platform threads and messages lead to it. Kept `RETENTION_DAYS` after the last turn, then forgotten.

The turns come from here, never from re-reading the platform's history: Slack throttles `conversations.replies`
to one call a minute for many apps (https://docs.slack.dev/apis/web-api/rate-limits), and Discord withholds
other users' message text from bots without the Message Content intent.

Keys: `conversation:<id>`, a list with one JSON item per exchange (`{"user": …, "assistant": …}`; the first also
carries the conversation's `setup`: command, model, options), so remembering a turn and recalling a conversation
are one store call each, and every turn pushes the whole conversation's expiry on; and `thread:<platform key>`
(a conversation id), where an adapter names its own keys (a Slack thread, a Discord message, a DM).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.requests import CommandRequest, ContextMessage, Options
from bot.state.store import StateStore

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Remembered:
    """A conversation as its first turn set it up, and every turn since, oldest first."""

    model: str
    options: Options
    turns: tuple[ContextMessage, ...]


class ConversationMemory:
    def __init__(self, store: StateStore, retention_days: int, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._keep_s = retention_days * SECONDS_PER_DAY
        self._clock = clock

    async def link(self, key: str, conversation_id: str) -> None:
        """A platform thread or message (`key`) now leads to the conversation."""
        await self._store.put_value(f"thread:{key}", conversation_id, self._until())

    async def find(self, key: str) -> str | None:
        return await self._store.get_value(f"thread:{key}")

    async def recall(self, conversation_id: str) -> Remembered | None:
        """None when the bot no longer knows it (never started, or forgotten past the retention)."""
        exchanges = [json.loads(item) for item in await self._store.items(f"conversation:{conversation_id}")]
        if not exchanges or "setup" not in exchanges[0]:
            return None
        setup = exchanges[0]["setup"]
        turns: list[ContextMessage] = []
        for exchange in exchanges:
            turns.append(ContextMessage("user", str(exchange["user"])))
            turns.append(ContextMessage("assistant", str(exchange["assistant"])))
        return Remembered(
            model=str(setup["model"]),
            options=Options(**{name: setup["options"].get(name) for name in _OPTION_NAMES}),
            turns=tuple(turns),
        )

    async def remember(self, request: CommandRequest, answer: str) -> None:
        """A finished turn: what the user said and what the model answered. The first turn (no context yet) also
        sets the conversation's model and options; later turns' own options were for them alone."""
        if request.conversation_id is None:
            return
        exchange: dict[str, object] = {"user": request.prompt, "assistant": answer}
        if not request.context:
            exchange["setup"] = {"command": str(request.command), "model": request.model,
                                 "options": dataclasses.asdict(request.options)}
        await self._store.append_item(f"conversation:{request.conversation_id}", json.dumps(exchange), self._until())

    def _until(self) -> float:
        return self._clock() + self._keep_s


_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(Options))
