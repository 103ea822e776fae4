"""`LOG_FORMAT=json`: every log line one JSON object (ts, level, logger, message), the per-command line with the
command record's fields as fields of its own, all behind the secret redactor; a bad value stops start-up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.command_log import CommandRecord
from bot.logs import REDACTED, install_logging, structured
from bot.replies import RunInfo, TextDone
from bot.requests import CommandName, CommandRequest, Options, Origin
from config.settings import SettingsError, load_settings
from service.cli import CONFIGURATION_ERROR_STATUS
from tests.harness_common import DISCORD_TOKEN, REPLICATE_TOKEN, SLACK_APP_TOKEN, SLACK_BOT_TOKEN, WAIT_S
from tests.process_harness import ROOT, SIGNING_SECRET, START_TIMEOUT_S, ask_slack, bot_process, slack_replies

SECRETS = (REPLICATE_TOKEN, SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SIGNING_SECRET, DISCORD_TOKEN)
LINE_KEYS = {"ts", "level", "logger", "message"}
COMMAND_FIELDS = {"platform", "user_id", "channel_id", "command", "model", "request_id", "prediction_id", "outcome",
                  "ack_latency_ms", "first_token_ms", "total_ms", "predict_time_s", "cost_usd"}


@contextmanager
def json_logging() -> Iterator[io.StringIO]:
    """The process's logging set-up with LOG_FORMAT=json, writing to a buffer; restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    install_logging("DEBUG", SECRETS, stream, log_format="json")
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line]
    assert all(isinstance(line, dict) and LINE_KEYS <= line.keys() for line in lines), lines
    return lines


def test_a_json_line_is_one_object_on_one_line_with_its_traceback_redacted() -> None:
    with json_logging() as stream:
        try:
            raise ValueError(f"refused\nAuthorization: Bearer {REPLICATE_TOKEN}")
        except ValueError:
            logging.getLogger("tests.json").exception("Calling %s failed\non two lines", "Replicate")

    [line] = json_lines(stream.getvalue())
    assert (line["level"], line["logger"], line["message"]) == ("ERROR", "tests.json", "Calling Replicate failed\non "
                                                                "two lines")
    assert line["ts"].endswith("+00:00") and "ValueError: refused" in line["exc_info"]
    assert REPLICATE_TOKEN not in stream.getvalue() and REDACTED in line["exc_info"]


def test_structured_fields_become_keys_of_their_own_and_are_redacted_too() -> None:
    with json_logging() as stream:
        logging.getLogger("tests.json").info(
            "checked %s", "it", extra=structured("checked", {"user_id": "U1", "note": f"token {SLACK_BOT_TOKEN}",
                                                              "level": "forged", "count": 3}))

    [line] = json_lines(stream.getvalue())
    assert line["message"] == "checked" and line["user_id"] == "U1" and line["count"] == 3
    assert line["note"] == f"token {REDACTED}"
    assert line["level"] == "INFO"  # a field never replaces the line's own keys


def test_the_command_line_carries_the_record_as_fields() -> None:
    request = CommandRequest(command=CommandName.ASK, prompt="private words", options=Options(), model="meta/llama",
                             origin=Origin(platform="slack", user_id="U1", channel_id="C1"))
    record = CommandRecord.start(request, 0.01)
    record.observe(TextDone(text="hi", run=RunInfo(model="meta/llama", prediction_id="p1", predict_time_s=0.5)))
    record.settled(None, 125)

    with json_logging() as stream:
        record.emit()

    [line] = json_lines(stream.getvalue())
    assert (line["logger"], line["message"]) == ("bot.commands", "command")
    assert COMMAND_FIELDS <= line.keys()
    assert (line["user_id"], line["channel_id"], line["outcome"], line["cost_usd"]) == ("U1", "C1", "ok", 0.000125)
    assert "private words" not in stream.getvalue()


async def test_the_real_process_writes_json_lines_with_the_command_fields_and_no_secret(tmp_path: Path) -> None:
    async with bot_process(tmp_path, LOG_FORMAT="json") as running:
        await ask_slack(running, "C0JSON", "hello")
        await running.slack.wait_until(lambda: slack_replies(running.slack, "C0JSON") != [], WAIT_S, what="answer")

        def command_line() -> dict[str, Any] | None:
            lines = [json.loads(line) for line in running.bot.lines if line.startswith("{")]
            return next((line for line in lines if line.get("logger") == "bot.commands"), None)

        await running.bot.wait_until(lambda: command_line() is not None, "the command's JSON line")
        await running.bot.kill()

    output = running.bot.output
    lines = json_lines(output)  # every line the process wrote, at DEBUG, from the bot and every library
    assert {line["level"] for line in lines} >= {"DEBUG", "INFO"}
    entry = command_line()
    assert entry is not None and entry["message"] == "command"
    assert (entry["platform"], entry["user_id"], entry["channel_id"]) == ("slack", "U0USER", "C0JSON")
    assert entry["outcome"] == "ok" and entry["cost_usd"] > 0
    for secret in SECRETS:
        core = secret.split("_", 1)[-1].split("-", 1)[-1]  # also without its r8_/xoxb-/xapp- prefix
        assert secret not in output and core not in output, f"{secret[:6]}… leaked into the log"


@pytest.mark.parametrize(("raw", "loaded"), [(None, "text"), ("text", "text"), ("JSON", "json"), (" json ", "json")])
def test_log_format_is_text_unless_json_is_asked_for(raw: str | None, loaded: str) -> None:
    environ = {} if raw is None else {"LOG_FORMAT": raw}

    assert load_settings(environ, env_file=None).log_format == loaded


def test_an_unknown_log_format_names_the_variable_and_the_choices() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"LOG_FORMAT": "xml"}, env_file=None)

    assert caught.value.variable == "LOG_FORMAT" and "text" in str(caught.value) and "json" in str(caught.value)


async def test_an_unknown_log_format_stops_start_up_with_one_line(tmp_path: Path) -> None:
    environ = {"PYTHONPATH": str(ROOT), "LOG_FORMAT": "xml", "REPLICATE_API_TOKEN": REPLICATE_TOKEN}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=environ, cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S)

    assert process.returncode == CONFIGURATION_ERROR_STATUS and stdout == b""
    [line] = stderr.decode().splitlines()
    assert line.startswith("Configuration error: LOG_FORMAT is 'xml'")
