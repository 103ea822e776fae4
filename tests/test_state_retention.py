"""What has expired is deleted when the bot opens its store, so a long-running deployment's file stays small."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.factory import create_core
from bot.state import Quota, open_store
from config.governance import GovernanceSettings
from tests.fakes.replicate_server import FakeReplicate
from tests.harness_common import bot_settings


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        yield fake


def counter_keys(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [str(key) for (key,) in db.execute("SELECT key FROM counters ORDER BY key")]


async def test_opening_the_state_deletes_what_has_expired_and_keeps_the_rest(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    path = tmp_path / "bot.db"
    a_week_ago = time.time() - 7 * 86_400
    earlier = await open_store(f"sqlite:///{path}", clock=lambda: a_week_ago)
    try:
        await earlier.take([Quota("use:slack:U1:ask:old", 5, a_week_ago + 3600)])  # long expired now
        await earlier.take([Quota("use:slack:U1:ask:new", 5, time.time() + 3600)])
    finally:
        await earlier.aclose()
    assert counter_keys(path) == ["use:slack:U1:ask:new", "use:slack:U1:ask:old"]

    settings = bot_settings(replicate, governance=GovernanceSettings(state_url=f"sqlite:///{path}"))
    resources = create_core(settings)
    try:
        await resources.open_state()
    finally:
        await resources.aclose()
    assert counter_keys(path) == ["use:slack:U1:ask:new"]
