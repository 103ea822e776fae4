"""The journal of commands in flight (bot/inflight.py) on a real SQLite store: entries written in order and deleted
at the end, orphans found by their owner's missing heartbeat, and each orphan taken by one survivor only."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bot.governance import Pass
from bot.inflight import COLLECTION, InFlight, Journal
from bot.requests import CommandName, CommandRequest, ContextMessage, Options, Origin
from bot.state.sqlite import SqliteStore

REQUEST = CommandRequest(
    command=CommandName.ASK, prompt="why?", options=Options(temperature=0.2),
    origin=Origin("slack", "U1", "C1", workspace_id="T1"), model="meta/llama",
    context=(ContextMessage("user", "before"),), conversation_id="conv1", notes=("a note",),
)
GOVERNANCE = Pass("slack:U1", CommandName.ASK, "running:slack:U1", ("use:slack:U1:ask:20260101",))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_an_entry_is_written_before_the_create_updated_in_order_and_deleted_at_the_end(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "bot.db")
    try:
        journal = Journal(store)
        journal.note_destination(REQUEST.request_id, {"channel": "C1"})  # known before the entry exists
        await journal.open(REQUEST, GOVERNANCE, {"prompt": "why?"})
        journal.created(REQUEST.request_id, "p1")
        journal.note_destination(REQUEST.request_id, {"message_ts": "1.2"})
        await journal.settle_writes(5.0)

        entry = InFlight.from_json((await store.entries(COLLECTION))[REQUEST.request_id])
        assert (entry.request, entry.governance, entry.prediction_id) == (REQUEST, GOVERNANCE, "p1")
        assert entry.destination == {"channel": "C1", "message_ts": "1.2"}
        assert entry.owner == journal.instance_id and entry.model_input == {"prompt": "why?"}

        await journal.close(REQUEST.request_id)
        assert await store.entries(COLLECTION) == {}
    finally:
        await store.aclose()


async def test_an_entry_is_orphaned_once_its_owners_heartbeat_expires(tmp_path: Path) -> None:
    clock = Clock()
    store = await SqliteStore.open(tmp_path / "bot.db", clock=clock)
    try:
        owner, survivor = Journal(store, heartbeat_s=30, clock=clock), Journal(store, heartbeat_s=30, clock=clock)
        await owner.beat()
        await owner.open(REQUEST, GOVERNANCE, {})
        assert await survivor.orphans() == []
        assert [e.request.request_id for e in await survivor.orphans(every_other=True)] == [REQUEST.request_id]

        clock.now += 30
        [orphan] = await survivor.orphans()
        assert orphan.owner == owner.instance_id
        assert await owner.orphans() == []  # never its own
    finally:
        await store.aclose()


async def test_of_two_survivors_racing_for_one_orphan_exactly_one_takes_it(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    stores = [await SqliteStore.open(path) for _ in range(3)]
    try:
        dead = Journal(stores[0])
        await dead.open(REQUEST, GOVERNANCE, {})
        survivors = [Journal(store) for store in stores[1:]]
        found = [await survivor.orphans() for survivor in survivors]

        taken = await asyncio.gather(*(survivor.take(orphans[0]) for survivor, orphans in zip(survivors, found,
                                                                                               strict=True)))

        assert sorted(taken) == [False, True]
        winner = survivors[taken.index(True)]
        stored = json.loads((await stores[0].entries(COLLECTION))[REQUEST.request_id])
        assert stored["owner"] == winner.instance_id  # the entry now names its new owner
        assert await winner.orphans() == []
    finally:
        for store in stores:
            await store.aclose()
