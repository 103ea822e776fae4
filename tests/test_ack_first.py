"""`adapters.ack_first`: answers wait while any delivery is still owed its acknowledgement, never for long."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from adapters.ack_first import AcksFirst

WAIT_S = 10.0


def starting(started: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    async def answer() -> None:
        started.set()

    return answer


async def test_an_answer_starts_at_once_when_no_acknowledgement_is_owed() -> None:
    acks, started = AcksFirst(max_wait_s=WAIT_S), asyncio.Event()
    await asyncio.wait_for(acks.answer(starting(started)), 1.0)  # well within the maximum wait
    assert started.is_set()


async def test_an_answer_waits_until_every_owed_acknowledgement_went_out() -> None:
    acks, started = AcksFirst(max_wait_s=WAIT_S), asyncio.Event()
    with acks.owed():
        with acks.owed():
            answer = asyncio.create_task(acks.answer(starting(started)))
            await asyncio.sleep(0)  # the answer task runs up to its wait
            assert not started.is_set()
        await asyncio.sleep(0)
        assert not started.is_set()  # one is still owed
    await asyncio.wait_for(answer, WAIT_S)
    assert started.is_set()


async def test_a_delivery_that_fails_before_its_acknowledgement_owes_nothing_after() -> None:
    acks, started = AcksFirst(max_wait_s=WAIT_S), asyncio.Event()
    with pytest.raises(RuntimeError), acks.owed():
        raise RuntimeError("the claim failed")
    await asyncio.wait_for(acks.answer(starting(started)), 1.0)
    assert started.is_set()


async def test_a_flood_that_never_pauses_still_has_its_answers_started() -> None:
    acks, started = AcksFirst(max_wait_s=0.05), asyncio.Event()
    with acks.owed():  # owed throughout
        await asyncio.wait_for(acks.answer(starting(started)), WAIT_S)
        assert started.is_set()
