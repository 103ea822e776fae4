"""`bot.command_log`: the one line per command, its fields measured on the command's own clock."""

from __future__ import annotations

import json
import logging

import pytest

from bot.command_log import CommandRecord
from bot.errors import FailureKind
from bot.replies import Failure, RunInfo, TextDelta, TextDone
from bot.requests import CommandName, CommandRequest, Options, Origin

REQUEST = CommandRequest(command=CommandName.ASK, prompt="hi", options=Options(),
                         origin=Origin(platform="slack", user_id="U1", channel_id="C1"), model="meta/llama")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_token_is_the_first_delta_and_total_the_final_event() -> None:
    clock = Clock()
    record = CommandRecord.start(REQUEST, 0.012, clock=clock)

    clock.now += 0.25
    record.observe(TextDelta("Hel"))
    clock.now += 1.0
    record.observe(TextDelta("lo"))  # a later delta leaves the first token's time alone
    clock.now += 0.5
    record.observe(TextDone(text="Hello", run=RunInfo(model="meta/llama", prediction_id="p1", predict_time_s=1.5)))

    assert (record.ack_latency_ms, record.first_token_ms, record.total_ms) == (12.0, 250.0, 1750.0)
    assert (record.outcome, record.prediction_id, record.predict_time_s) == ("ok", "p1", 1.5)


def test_a_failure_names_its_kind_and_the_line_holds_no_prompt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.commands")
    record = CommandRecord.start(REQUEST, None, clock=Clock())

    record.observe(Failure(FailureKind.TIMED_OUT, "took too long", prediction_id="p2"))
    record.emit()

    [line] = [r.getMessage() for r in caplog.records if r.name == "bot.commands"]
    fields = json.loads(line.removeprefix("command "))
    assert (fields["outcome"], fields["prediction_id"], fields["first_token_ms"]) == ("timed_out", "p2", None)
    assert "hi" not in fields.values() and not any(key.startswith("_") for key in fields)  # prompts stay private
