"""The fakes speak one vocabulary (the table in `tests/fakes/base.py`): a test written against one fake reads
the same on the others, and the shared parts (serving, closing, waiting, fake errors) exist once."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.base import VOCABULARY, LocalServer
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack

FAKES = [FakeReplicate, FakeSlack, FakeDiscord]


@pytest.mark.parametrize("fake_type", FAKES, ids=lambda t: t.__name__)
async def test_every_fake_has_the_whole_vocabulary(
    fake_type: type[FakeReplicate] | type[FakeSlack] | type[FakeDiscord],
) -> None:
    fake = fake_type()
    assert [name for name in VOCABULARY if not hasattr(fake, name)] == []
    assert fake.fake_errors == [] and fake.requests == []


@pytest.mark.parametrize("fake_type", FAKES, ids=lambda t: t.__name__)
def test_serving_closing_and_waiting_are_shared(fake_type: type[LocalServer]) -> None:
    assert [name for name in ("start", "close", "wait_until", "__aenter__", "__aexit__")
            if getattr(fake_type, name) is not getattr(LocalServer, name)] == []


@pytest.mark.parametrize("fake_type", FAKES, ids=lambda t: t.__name__)
async def test_close_tells_whoever_still_waits(fake_type: type[LocalServer]) -> None:
    async with fake_type() as fake:
        assert fake.port > 0
        task = asyncio.create_task(fake.wait_until(lambda: False, timeout=5, what="never"))
        await asyncio.sleep(0)  # one turn of the loop: the waiter is registered, not a wait for time
    with pytest.raises(RuntimeError, match=f"{fake_type.__name__} closed"):
        await task
