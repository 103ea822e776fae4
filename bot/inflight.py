"""The journal of commands in flight: what a survivor needs to finish a command whose process died.

One entry per command in the state store's `inflight` collection (`StateStore.put_entry`), written before the
prediction is created and rewritten when Replicate names it and when the adapter learns where the answer goes;
deleted once the final reply has landed. It holds the request (prompt, options, conversation), the governance
pass (so the running slot can be given back), the model input and the time its create was sent (so a prediction
whose id never came back can still be found), the prediction id, the owning process, and the destination: an
opaque dict the adapter of that platform built and alone reads.

Each process beats `heartbeat:<instance id>` (a value expiring `heartbeat_s` after the last beat). An entry whose
owner has no heartbeat is orphaned; a survivor takes it with a claim keyed by the entry and its dead owner, so of
several survivors one takes it, and it can be taken again if the taker dies in turn (the owner is then another).

Writes of one entry go out in order, one at a time, the latest state each time: a later write never lands before
an earlier one, and a burst of changes costs one write more at most.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.governance import Pass
from bot.requests import CommandName, CommandRequest, ContextMessage, Options, Origin
from bot.state.store import StateStore, StateStoreError
from bot.tasks import BackgroundTasks

log = logging.getLogger(__name__)

COLLECTION = "inflight"
HEARTBEAT_S = 30.0  # a process silent this long is dead: its commands are orphaned
TAKEN_CLAIM_S = 86_400.0  # an entry's claim by one survivor, per dead owner; the owner changes once it is taken
STOPPED_MARK_S = 3600.0  # a Stop pressed in another process is remembered this long

Destination = Mapping[str, Any]


@dataclass
class InFlight:
    """One command in flight, as the journal keeps it."""

    request: CommandRequest
    owner: str
    governance: Pass | None = None
    model_input: dict[str, Any] = field(default_factory=dict)
    create_sent_at: float | None = None  # Unix time the create went out
    prediction_id: str | None = None
    destination: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({
            "request": _request_json(self.request),
            "owner": self.owner,
            "governance": dataclasses.asdict(self.governance) if self.governance is not None else None,
            "model_input": self.model_input,
            "create_sent_at": self.create_sent_at,
            "prediction_id": self.prediction_id,
            "destination": self.destination,
        })

    @classmethod
    def from_json(cls, text: str) -> InFlight:
        data = json.loads(text)
        governance = data.get("governance")
        return cls(
            request=_request_from(data["request"]),
            owner=str(data["owner"]),
            governance=Pass(str(governance["user"]), CommandName(governance["command"]), str(governance["running_key"]),
                            tuple(governance["use_keys"])) if governance else None,
            model_input=dict(data.get("model_input") or {}),
            create_sent_at=data.get("create_sent_at"),
            prediction_id=data.get("prediction_id"),
            destination=data.get("destination"),
        )


class Journal:
    """This process's view of the journal: its own entries' writes, its heartbeat, and the orphans it may take."""

    def __init__(
        self,
        store: StateStore,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        instance_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.instance_id = instance_id or uuid.uuid4().hex
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._mine: dict[str, InFlight] = {}
        self._destinations: dict[str, dict[str, Any]] = {}  # noted before the entry exists
        self._written: dict[str, int] = {}  # request id -> the change last written
        self._changes: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._writes = BackgroundTasks("journal write")

    # --- this process's commands ---------------------------------------------------------------------

    async def open(self, request: CommandRequest, governance: Pass | None, model_input: dict[str, Any]) -> None:
        """The entry, written before the create goes out (so a kill right after it leaves a trace to follow)."""
        entry = InFlight(request, self.instance_id, governance, model_input, create_sent_at=self._clock(),
                         destination=self._destinations.pop(request.request_id, None))
        self._mine[request.request_id] = entry
        await self._write(request.request_id)

    def adopt(self, entry: InFlight) -> None:
        """An orphan taken up here: from now on this process owns it (its entry already says so)."""
        self._mine[entry.request.request_id] = entry

    def created(self, request_id: str, prediction_id: str) -> None:
        """Replicate named the prediction: written in the background, in order."""
        entry = self._mine.get(request_id)
        if entry is not None:
            entry.prediction_id = prediction_id
            self._changed(request_id)

    def note_destination(self, request_id: str, destination: Destination) -> None:
        """Where the answer goes (the adapter's own dict), merged into what was noted before."""
        entry = self._mine.get(request_id)
        if entry is None:
            self._destinations.setdefault(request_id, {}).update(destination)
            return
        merged = {**(entry.destination or {}), **destination}
        if merged != entry.destination:  # noted again as it was (a thread answer notes it twice): nothing to write
            entry.destination = merged
            self._changed(request_id)

    async def close(self, request_id: str) -> None:
        """The answer landed (or the command is over): the entry goes, after any write still on its way."""
        self._destinations.pop(request_id, None)
        if self._mine.pop(request_id, None) is None:
            return
        async with self._lock(request_id):
            try:
                await self._store.delete_entry(COLLECTION, request_id)
            except StateStoreError as error:  # a survivor may take it up later; the prediction is over by then
                log.warning("Could not delete the journal entry of command %s: %s", request_id, error)
        self._forget(request_id)

    def owns(self, request_id: str) -> bool:
        return request_id in self._mine

    def _changed(self, request_id: str) -> None:
        self._changes[request_id] = self._changes.get(request_id, 0) + 1
        self._writes.spawn(self._write(request_id), name=f"journal-{request_id}")

    async def _write(self, request_id: str) -> None:
        """The entry's latest state, unless a write already carried it (one write at a time per entry)."""
        async with self._lock(request_id):
            entry = self._mine.get(request_id)
            change = self._changes.get(request_id, 0)
            if entry is None or self._written.get(request_id, -1) >= change:
                return
            try:
                await self._store.put_entry(COLLECTION, request_id, entry.to_json())
            except StateStoreError as error:  # the command goes on; only its recovery after a crash is lost
                log.warning("Could not write the journal entry of command %s: %s", request_id, error)
                return
            self._written[request_id] = change

    def _lock(self, request_id: str) -> asyncio.Lock:
        return self._locks.setdefault(request_id, asyncio.Lock())

    def _forget(self, request_id: str) -> None:
        for kept in (self._written, self._changes, self._locks):
            kept.pop(request_id, None)

    async def settle_writes(self, timeout_s: float) -> None:
        """Writes still on their way (shutdown)."""
        await self._writes.wait(timeout_s)
        await self._writes.cancel_all()

    # --- heartbeat, orphans, other processes' entries ------------------------------------------------

    async def beat(self) -> None:
        """This process is alive for `heartbeat_s` more."""
        await self._store.put_value(f"heartbeat:{self.instance_id}", "1", self._clock() + self.heartbeat_s)

    async def orphans(self, *, every_other: bool = False) -> list[InFlight]:
        """Entries whose owner has no heartbeat (with `every_other`, every entry not this process's: a store that
        only one process uses at a time, at start-up). Unreadable entries are logged and skipped."""
        found = []
        alive: dict[str, bool] = {self.instance_id: True}
        for request_id, text in (await self._store.entries(COLLECTION)).items():
            try:
                entry = InFlight.from_json(text)
            except (ValueError, KeyError, TypeError) as error:
                log.error("Journal entry %s is unreadable (%s); leaving it", request_id, type(error).__name__)
                continue
            if entry.owner == self.instance_id:
                continue
            if not every_other and entry.owner not in alive:
                alive[entry.owner] = await self._store.get_value(f"heartbeat:{entry.owner}") is not None
            if every_other or not alive[entry.owner]:
                found.append(entry)
        return found

    async def take(self, entry: InFlight) -> bool:
        """True for the one survivor that takes `entry` from its dead owner; the entry then names this process."""
        request_id = entry.request.request_id
        if not await self._store.claim(f"inflight-taken:{request_id}:{entry.owner}", self._clock() + TAKEN_CLAIM_S):
            return False
        if await self._store.get_entry(COLLECTION, request_id) is None:
            return False  # finished (and deleted) between the listing and the claim
        entry.owner = self.instance_id
        self.adopt(entry)
        self._changed(request_id)
        await self._write(request_id)
        return True

    async def find(self, request_id: str) -> InFlight | None:
        """Any process's entry for `request_id` (None when it is not in flight, or unreadable)."""
        text = await self._store.get_entry(COLLECTION, request_id)
        if text is None:
            return None
        try:
            return InFlight.from_json(text)
        except (ValueError, KeyError, TypeError):
            return None

    async def mark_stopped(self, request_id: str) -> None:
        """A Stop pressed here for a command another process runs: that process shows it stopped, not failed."""
        await self._store.put_value(f"stopped:{request_id}", "1", self._clock() + STOPPED_MARK_S)

    async def was_stopped(self, request_id: str) -> bool:
        try:
            return await self._store.get_value(f"stopped:{request_id}") is not None
        except StateStoreError:
            return False


def _request_json(request: CommandRequest) -> dict[str, Any]:
    return {
        "command": str(request.command),
        "prompt": request.prompt,
        "options": dataclasses.asdict(request.options),
        "origin": dataclasses.asdict(request.origin),
        "model": request.model,
        "request_id": request.request_id,
        "context": [{"role": turn.role, "text": turn.text} for turn in request.context],
        "conversation_id": request.conversation_id,
        "notes": list(request.notes),
    }


def _request_from(data: Mapping[str, Any]) -> CommandRequest:
    return CommandRequest(
        command=CommandName(data["command"]),
        prompt=str(data["prompt"]),
        options=Options(**{name: data["options"].get(name) for name in _OPTION_NAMES}),
        origin=Origin(**{name: data["origin"].get(name) for name in _ORIGIN_NAMES if name in data["origin"]}),
        model=str(data["model"]),
        request_id=str(data["request_id"]),
        context=tuple(ContextMessage(str(turn["role"]), str(turn["text"])) for turn in data.get("context", [])),
        conversation_id=data.get("conversation_id"),
        notes=tuple(str(note) for note in data.get("notes", [])),
    )


_OPTION_NAMES = tuple(option.name for option in dataclasses.fields(Options))
_ORIGIN_NAMES = tuple(origin.name for origin in dataclasses.fields(Origin))
