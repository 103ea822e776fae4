"""Conversations in the core, through the real `replicate` client and a real SQLite store: what the model
receives turn by turn, which options hold, a conversation the bot forgot, a restart, and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from bot.errors import FailureKind
from bot.factory import CoreResources, create_core
from bot.replies import Failure, TextDone
from bot.requests import CommandRequest, Origin
from config.governance import GovernanceSettings, UseLimit, Window
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.harness_common import ASK_MODEL, FAST_POLICY, bot_settings

ORIGIN = Origin(platform="test", user_id="U1", channel_id="C1")
SYSTEM = "You are terse."


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        fake.add_model(ASK_MODEL, TextModel(tokens=["Noted", "."]))
        yield fake


async def open_core(
    replicate: FakeReplicate, state: Path, *, context_max_chars: int = 12_000, **governance: Any
) -> CoreResources:
    settings = bot_settings(replicate, system_prompt=SYSTEM, context_max_chars=context_max_chars,
                            governance=GovernanceSettings(state_url=f"sqlite:///{state}", max_concurrent_per_user=100,
                                                          **governance))
    resources = create_core(settings, FAST_POLICY)
    await resources.open_state()
    return resources


async def answer(resources: CoreResources, prepared: CommandRequest | Failure) -> str:
    assert isinstance(prepared, CommandRequest), prepared
    async with aclosing(resources.core.execute(prepared)) as events:
        final = [event async for event in events][-1]
    assert isinstance(final, TextDone), final
    return final.text


def turn_markers(prompt: str) -> list[str]:
    """`role: text` for each turn of a Llama 3 transcript, in order."""
    turns = prompt.split("<|start_header_id|>")[1:]
    return [turn.replace("<|end_header_id|>\n\n", ": ").removesuffix("<|eot_id|>") for turn in turns]


async def test_each_turn_sends_the_system_prompt_then_every_earlier_turn(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        first = await resources.core.prepare("ask", "My name is Ada.", ORIGIN)
        assert isinstance(first, CommandRequest) and first.conversation_id
        await answer(resources, first)
        second = await resources.core.prepare_turn("What is my name?", ORIGIN, conversation_id=first.conversation_id)
        await answer(resources, second)
        third = await resources.core.prepare_turn("Thanks!", ORIGIN, conversation_id=first.conversation_id)
        await answer(resources, third)
    finally:
        await resources.aclose()
    inputs = [create.input for create in replicate.creates]
    assert inputs[0]["prompt"] == "My name is Ada." and inputs[0]["system_prompt"] == SYSTEM
    assert inputs[1]["prompt_template"] == "{prompt}"
    assert turn_markers(inputs[1]["prompt"]) == [
        f"system: {SYSTEM}", "user: My name is Ada.", "assistant: Noted.", "user: What is my name?", "assistant: "]
    assert turn_markers(inputs[2]["prompt"])[1:6] == [
        "user: My name is Ada.", "assistant: Noted.", "user: What is my name?", "assistant: Noted.", "user: Thanks!"]


async def test_the_first_turns_options_stay_and_a_follow_ups_own_apply_to_it_alone(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db")
    try:
        first = await resources.core.prepare("ask", "Hello --max-tokens 100", ORIGIN)
        assert isinstance(first, CommandRequest)
        await answer(resources, first)
        conversation = first.conversation_id
        await answer(resources, await resources.core.prepare_turn(
            "More --temperature 0.2", ORIGIN, conversation_id=conversation))
        await answer(resources, await resources.core.prepare_turn("Again", ORIGIN, conversation_id=conversation))
    finally:
        await resources.aclose()
    inputs = [create.input for create in replicate.creates]
    assert [i["max_tokens"] for i in inputs] == [100, 100, 100]
    assert [i.get("temperature") for i in inputs] == [None, 0.2, None]


async def test_a_conversation_the_bot_forgot_starts_afresh_and_says_so(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db", retention_days=7)
    try:
        text = await answer(resources, await resources.core.prepare_turn("Hi", ORIGIN, conversation_id="gone"))
        plain = await answer(resources, await resources.core.prepare_turn("Hi", ORIGIN, conversation_id=None))
    finally:
        await resources.aclose()
    assert text == "Noted.\n\n_I no longer remember that conversation (conversations are kept 7 days), " \
                   "so this starts a new one._"
    assert plain == "Noted."
    assert replicate.creates[0].input["prompt"] == "Hi"  # no earlier turns


async def test_a_restart_in_the_middle_keeps_the_conversation(tmp_path: Path, replicate: FakeReplicate) -> None:
    before = await open_core(replicate, tmp_path / "bot.db")
    try:
        first = await before.core.prepare("ask", "Remember 42.", ORIGIN)
        assert isinstance(first, CommandRequest)
        await answer(before, first)
        await before.core.link_conversation("test:thread-1", first.conversation_id or "")
    finally:
        await before.aclose()
    after = await open_core(replicate, tmp_path / "bot.db")
    try:
        conversation = await after.core.find_conversation("test:thread-1")
        assert conversation == first.conversation_id
        await answer(after, await after.core.prepare_turn("Which number?", ORIGIN, conversation_id=conversation))
    finally:
        await after.aclose()
    assert "user: Remember 42." in turn_markers(replicate.creates[-1].input["prompt"])


async def test_turns_count_as_ask_commands_against_the_limit(tmp_path: Path, replicate: FakeReplicate) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db", limits={"ask": UseLimit(2, Window.DAY)})
    try:
        first = await resources.core.prepare("ask", "One", ORIGIN)
        assert isinstance(first, CommandRequest)
        await answer(resources, first)
        await answer(resources, await resources.core.prepare_turn("Two", ORIGIN, conversation_id=first.conversation_id))
        refused = await resources.core.prepare_turn("Three", ORIGIN, conversation_id=first.conversation_id)
    finally:
        await resources.aclose()
    assert isinstance(refused, Failure) and refused.kind is FailureKind.LIMIT_REACHED
    assert len(replicate.creates) == 2


async def test_past_the_context_limit_the_oldest_turns_are_left_out(
    tmp_path: Path, replicate: FakeReplicate
) -> None:
    resources = await open_core(replicate, tmp_path / "bot.db", context_max_chars=len(SYSTEM) + 1_500)
    try:
        first = await resources.core.prepare("ask", "a" * 1000, ORIGIN)
        assert isinstance(first, CommandRequest)
        await answer(resources, first)
        conversation = first.conversation_id
        await answer(resources, await resources.core.prepare_turn("b" * 1000, ORIGIN, conversation_id=conversation))
        await answer(resources, await resources.core.prepare_turn("c" * 10, ORIGIN, conversation_id=conversation))
    finally:
        await resources.aclose()
    last = turn_markers(replicate.creates[-1].input["prompt"])
    assert "user: " + "a" * 1000 not in last and "user: " + "b" * 1000 in last and "user: " + "c" * 10 in last

