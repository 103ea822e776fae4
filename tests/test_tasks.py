"""`bot.tasks.BackgroundTasks`: every task is kept until it ends, its failure is logged, and shutdown can bound
or cancel what is left."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.tasks import BackgroundTasks

TIMEOUT_S = 2.0


async def test_a_task_that_fails_is_logged_with_its_name_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks("command")

    async def fail() -> None:
        raise RuntimeError("model exploded")

    task = tasks.spawn(fail(), name="ask-C0ONE")
    await asyncio.gather(task, return_exceptions=True)

    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "command task ask-C0ONE failed" in record.getMessage()
    assert record.exc_info is not None and "model exploded" in str(record.exc_info[1])


async def test_wait_returns_once_the_tasks_have_finished_and_they_are_forgotten() -> None:
    tasks = BackgroundTasks("command")
    release = asyncio.Event()
    task = tasks.spawn(release.wait())
    assert len(tasks) == 1
    waiting = asyncio.create_task(tasks.wait())
    await asyncio.sleep(0)
    assert not waiting.done()  # the task is still running

    release.set()
    await asyncio.wait_for(waiting, TIMEOUT_S)

    assert task.done() and len(tasks) == 0


async def test_wait_gives_up_after_its_timeout_and_leaves_the_task_running() -> None:
    tasks = BackgroundTasks("command")
    task = tasks.spawn(asyncio.Event().wait())  # never ends by itself

    await asyncio.wait_for(tasks.wait(timeout_s=0.05), TIMEOUT_S)

    assert not task.done() and len(tasks) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_cancel_all_cancels_what_is_running_and_waits_for_it() -> None:
    tasks = BackgroundTasks("command")
    cleaned_up = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    task = tasks.spawn(hang())
    await asyncio.sleep(0)  # let it start

    await asyncio.wait_for(tasks.cancel_all(), TIMEOUT_S)

    assert task.cancelled() and cleaned_up.is_set()
