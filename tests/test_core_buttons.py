"""Again and Stop in the core, through the real `replicate` client and a real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from bot.buttons import EXPIRED_TEXT, StopOutcome
from bot.errors import FailureKind
from bot.factory import CoreResources, create_core
from bot.replies import Failure, Images, ReplyEvent, TextDelta, TextDone
from bot.requests import CommandRequest, Origin
from config.governance import GovernanceSettings, UseLimit, Window
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.harness_common import ASK_MODEL, FAST_POLICY, IMAGINE_MODEL, PNG, bot_settings

ASKER = Origin(platform="slack", user_id="UASKER", channel_id="C1")
OTHER = Origin(platform="slack", user_id="UOTHER", channel_id="C1")
ADMIN = Origin(platform="slack", user_id="UADMIN", channel_id="C1")
HUNG = "test/hung"


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        fake.add_model(ASK_MODEL, TextModel(tokens=["Hello", " again"]))
        fake.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]))
        fake.add_model(HUNG, TextModel(tokens=["Thinking", " hard"], hang=True))
        yield fake


async def open_core(replicate: FakeReplicate, state: Path, **governance: Any) -> CoreResources:
    settings = bot_settings(
        replicate, allowed_models=frozenset({ASK_MODEL, IMAGINE_MODEL, HUNG}),
        governance=GovernanceSettings(state_url=f"sqlite:///{state}", max_concurrent_per_user=100,
                                      admin_users=frozenset({"slack:UADMIN"}), **governance))
    resources = create_core(settings, FAST_POLICY)
    await resources.open_state()
    return resources


async def run(resources: CoreResources, prepared: CommandRequest | Failure | None) -> list[ReplyEvent]:
    assert isinstance(prepared, CommandRequest), prepared
    async with aclosing(resources.core.execute(prepared)) as events:
        return [event async for event in events]


async def test_again_on_a_picture_runs_it_anew_for_the_presser_with_a_new_seed(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        first = await resources.core.prepare("imagine", "a lighthouse --ar 16:9 --seed 7", ASKER)
        assert isinstance(first, CommandRequest)
        final = (await run(resources, first))[-1]
        assert isinstance(final, Images) and final.again_id == first.request_id
        again = await resources.core.prepare_again(first.request_id, OTHER)
        assert isinstance(again, CommandRequest)
        assert (again.prompt, again.options.aspect_ratio, again.origin) == ("a lighthouse", "16:9", OTHER)
        assert (await run(resources, again))[-1].__class__ is Images
    finally:
        await resources.aclose()
    seeds = [create.input["seed"] for create in replicate.creates]
    assert seeds[0] == 7 and seeds[1] != 7 and [c.input["aspect_ratio"] for c in replicate.creates] == ["16:9"] * 2


async def test_again_on_a_conversation_turn_answers_that_turn_anew_after_a_restart(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    before = await open_core(replicate, tmp_path / "bot.db")
    try:
        first = await before.core.prepare("ask", "My name is Ada", ASKER)
        await run(before, first)
        assert isinstance(first, CommandRequest)
        turn = await before.core.prepare_turn("And my name?", ASKER, conversation_id=first.conversation_id)
        final = (await run(before, turn))[-1]
        assert isinstance(final, TextDone) and final.again_id
    finally:
        await before.aclose()
    after = await open_core(replicate, tmp_path / "bot.db")
    try:
        again = await after.core.prepare_again(final.again_id, ASKER)
        assert isinstance(again, CommandRequest) and again.conversation_id == first.conversation_id
        await run(after, again)
    finally:
        await after.aclose()
    prompts = [create.input["prompt"] for create in replicate.creates]
    assert prompts[2] == prompts[1] and "My name is Ada" in prompts[2] and "And my name?" in prompts[2]


async def test_again_counts_against_the_pressers_limit_and_a_double_press_runs_once(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db", limits={"ask": UseLimit(1, Window.DAY)})
    try:
        first = await resources.core.prepare("ask", "Hi", ASKER)
        final = (await run(resources, first))[-1]
        assert isinstance(final, TextDone) and final.again_id
        refused = await resources.core.prepare_again(final.again_id, ASKER)  # the asker has used their one
        assert isinstance(refused, Failure) and refused.kind is FailureKind.LIMIT_REACHED
        presses = await asyncio.gather(*(resources.core.prepare_again(final.again_id, OTHER) for _ in range(2)))
        assert sorted(type(p).__name__ for p in presses) == ["CommandRequest", "NoneType"]
        await run(resources, next(p for p in presses if p is not None))
    finally:
        await resources.aclose()
    assert len(replicate.creates) == 2


async def test_a_button_the_bot_no_longer_knows_says_it_expired(tmp_path: Path, replicate: FakeReplicate) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        expired = await resources.core.prepare_again("0123456789abcdef", ASKER)
        assert resources.core.stop("0123456789abcdef", ASKER) is StopOutcome.NOT_RUNNING
    finally:
        await resources.aclose()
    assert isinstance(expired, Failure) and expired.message == EXPIRED_TEXT
    assert replicate.creates == []


async def test_stop_keeps_what_was_written_marks_it_stopped_and_cancels_on_replicate(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        request = await resources.core.prepare("ask", f"think --model {HUNG}", ASKER)
        assert isinstance(request, CommandRequest)
        events: list[ReplyEvent] = []
        async with aclosing(resources.core.execute(request)) as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, TextDelta) and event.text == " hard":
                    assert resources.core.stop(request.request_id, OTHER) is StopOutcome.NOT_YOURS
                    assert resources.core.stop(request.request_id, ASKER) is StopOutcome.STOPPING
        await replicate.wait_until(lambda: replicate.running() == [], what="the prediction cancelled")
    finally:
        await resources.aclose()
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Thinking hard"
    final = events[-1]
    assert isinstance(final, Failure) and final.kind is FailureKind.STOPPED and final.message == "Stopped."
    assert replicate.cancels == [replicate.creates[0].id]
    assert resources.core.stop(request.request_id, ASKER) is StopOutcome.NOT_RUNNING


async def test_an_admin_may_stop_anyones_answer(tmp_path: Path, replicate: FakeReplicate) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        request = await resources.core.prepare("ask", f"think --model {HUNG}", ASKER)
        assert isinstance(request, CommandRequest)
        async with aclosing(resources.core.execute(request)) as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    assert resources.core.stop(request.request_id, ADMIN) is StopOutcome.STOPPING
                final = event
    finally:
        await resources.aclose()
    assert isinstance(final, Failure) and final.kind is FailureKind.STOPPED
