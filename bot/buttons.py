"""The buttons under answers: **Again** (a finished command, run anew as a command of whoever presses it) and
**Stop** (a running one, cancelled on Replicate).

Again must work after a restart, from any process: what it needs (the command, prompt, options, model, and a
conversation's turns so far) is kept in the state store under the finished request's id, which is all the
button carries. Stop needs the running command, which lives in the process running it; after a restart nothing
runs any more, so a Stop press then answers that it expired. A double click runs once: the second press of the
same button by the same user within `DOUBLE_PRESS_S` is dropped (a claim in the store, so across processes too).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from enum import StrEnum

from bot.requests import CommandName, CommandRequest, ContextMessage, Options, Origin
from bot.state.store import StateStore

SECONDS_PER_DAY = 86_400
DOUBLE_PRESS_S = 5.0  # two presses of one button by one user this close together are one press
EXPIRED_TEXT = "This button has expired: the bot no longer knows that command. Run it again with its command."
STOP_EXPIRED_TEXT = "That answer is no longer running, so there is nothing to stop."
STOP_NOT_YOURS_TEXT = "Only the person who asked, or an admin, can stop this answer."


class ButtonAction(StrEnum):
    AGAIN = "again"
    STOP = "stop"


class StopOutcome(StrEnum):
    STOPPING = "stopping"  # cancelled: the answer ends marked as stopped
    NOT_RUNNING = "not_running"  # finished already, or never ran in this process (a restart)
    NOT_YOURS = "not_yours"


class AgainPayloads:
    """What Again needs of each finished command, kept `RETENTION_DAYS`."""

    def __init__(self, store: StateStore, retention_days: int, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._keep_s = retention_days * SECONDS_PER_DAY
        self._clock = clock

    async def keep(self, request: CommandRequest) -> None:
        payload = {
            "command": str(request.command),
            "prompt": request.prompt,
            "options": dataclasses.asdict(request.options),
            "model": request.model,
            "conversation_id": request.conversation_id,
            "context": [{"role": turn.role, "text": turn.text} for turn in request.context],
        }
        await self._store.put_value(f"again:{request.request_id}", json.dumps(payload), self._clock() + self._keep_s)

    async def load(self, request_id: str, presser: Origin) -> CommandRequest | None:
        """The command to run anew, as the presser's (a new seed for pictures); None when it expired."""
        text = await self._store.get_value(f"again:{request_id}")
        if text is None:
            return None
        payload = json.loads(text)
        options = Options(**{name: payload["options"].get(name) for name in _OPTION_NAMES})
        command = CommandName(payload["command"])
        if command is CommandName.IMAGINE:
            options = dataclasses.replace(options, seed=None)  # the core picks a new one
        return CommandRequest(
            command=command,
            prompt=str(payload["prompt"]),
            options=options,
            origin=presser,
            model=str(payload["model"]),
            conversation_id=payload.get("conversation_id"),
            context=tuple(ContextMessage(str(turn["role"]), str(turn["text"])) for turn in payload["context"]),
        )

    async def first_press(self, request_id: str, presser: Origin) -> bool:
        """False for a second press of the same button by the same user within `DOUBLE_PRESS_S`."""
        key = f"press:{request_id}:{presser.platform}:{presser.user_id}"
        return await self._store.claim(key, self._clock() + DOUBLE_PRESS_S)


_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(Options))
