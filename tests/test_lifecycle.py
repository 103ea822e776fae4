"""Running in production (README: Deploying): graceful shutdown of the real process, `/healthz`, exactly-once
predictions, one structured log line per command, and no secret in the log at any level."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.discord_adapter import DiscordAdapter
from tests.bot_harness import Bots, running_bots
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.harness_common import (
    ANSWER,
    ASK_MODEL,
    CHANNEL,
    DISCORD_TOKEN,
    IMAGINE_MODEL,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
)
from tests.process_harness import (
    BROKEN_MODEL,
    HUNG_MODEL,
    QUICK_TOKENS,
    RESTARTING,
    SHUTDOWN_GRACE_S,
    SIGNING_SECRET,
    ask_slack,
    bot_process,
    discord_contents,
    slack_replies,
)

# --- SIGTERM / SIGINT ----------------------------------------------------------------------------------


async def test_sigterm_refuses_new_commands_lets_quick_ones_finish_cancels_the_rest_and_exits_0(
    tmp_path: Path,
) -> None:
    async with bot_process(tmp_path) as running:
        replicate, slack, discord = running.replicate, running.slack, running.discord
        await ask_slack(running, "C0HUNG", f"think forever --model {HUNG_MODEL}")
        hung_discord = await discord.send_interaction("ask", {"prompt": "think forever", "model": HUNG_MODEL},
                                                      channel_id=CHANNEL)
        await replicate.wait_until(lambda: len(replicate.running()) == 2, WAIT_S, what="two hung predictions")
        await ask_slack(running, "C0QUICK", "a quick one")
        await replicate.wait_until(lambda: len(replicate.creates) == 3, WAIT_S, what="the quick prediction")

        running.bot.process.send_signal(signal.SIGTERM)
        await running.bot.wait_for_line("Stopping: finishing in-flight commands")

        # Arriving after SIGTERM: a polite, private "restarting", and nothing created.
        late = await running.slack.send_slash_command(command="/ask", text="too late", channel_id="C0LATE")
        late_ack = await slack.wait_for_ack(late)
        late_discord = await discord.send_interaction("ask", {"prompt": "too late"}, channel_id=CHANNEL)
        await discord.wait_until(lambda: bool(discord_contents(discord, late_discord)), WAIT_S, what="late reply")

        assert await running.bot.exit_status(SHUTDOWN_GRACE_S + 15) == 0
        assert RESTARTING in late_ack["payload"]["text"]
        late_original = discord.interactions[late_discord.token].original
        assert late_original is not None and late_original.ephemeral and RESTARTING in late_original.content
        assert slack.channel_messages("C0LATE") == []
        assert len(replicate.creates) == 3

        # In flight and quick enough: answered in full.
        assert slack_replies(slack, "C0QUICK") == ["".join(QUICK_TOKENS)]
        # In flight past the grace: cancelled on Replicate, nothing left running, and the users told once.
        hung_ids = sorted(p.id for p in replicate.creates if p.model == HUNG_MODEL)
        assert sorted(replicate.cancels) == hung_ids
        assert replicate.running() == []
        assert slack_replies(slack, "C0HUNG") == [f"Thinking\n\n⚠️ {RESTARTING}"]
        told = discord_contents(discord, hung_discord)
        assert told[0].startswith("Thinking") and [text for text in told if RESTARTING in text] == [f"⚠️ {RESTARTING}"]
        # Connections closed by the bot, not left for the servers to time out.
        assert all(connection.closed_at is not None and not connection.closed_by_server
                   for connection in slack.socket.connections)
        assert all(connection.closed_at is not None for connection in discord.gateway.log)
        assert "Stopped cleanly" in running.bot.output


# Shutdown after the grace (cancels, last replies, closing) fits in a few seconds; the bound here is loose
# (CI machines are noisy) but far below what waiting out a hung cancel used to take (10 s more).
SHUTDOWN_TAIL_BOUND_S = 8.0


async def test_sigterm_during_an_unanswered_imagine_create_finds_and_cancels_it_and_exits_soon_after_the_grace(
    tmp_path: Path,
) -> None:
    async with bot_process(tmp_path) as running:
        replicate, slack = running.replicate, running.slack
        replicate.add_model(IMAGINE_MODEL, ImageModel(hang=True))
        replicate.hold("create", 1)  # Replicate makes the prediction, the create never answers
        replicate.hold("cancel", 1)  # and the cancel takes effect but is never answered either
        envelope = await slack.send_slash_command(command="/imagine", text="a lighthouse", channel_id="C0IMG")
        await slack.wait_for_ack(envelope)
        await replicate.wait_until(lambda: len(replicate.creates) == 1, WAIT_S, what="the held create")

        running.bot.process.send_signal(signal.SIGTERM)
        signalled = asyncio.get_running_loop().time()

        assert await running.bot.exit_status(SHUTDOWN_GRACE_S + 15) == 0
        assert asyncio.get_running_loop().time() - signalled < SHUTDOWN_GRACE_S + SHUTDOWN_TAIL_BOUND_S
        assert replicate.cancels == [replicate.creates[0].id] and replicate.running() == []
        assert slack_replies(slack, "C0IMG") == [f"⚠️ {RESTARTING}"]
        assert "Stopped cleanly" in running.bot.output


async def test_sigint_stops_as_cleanly_as_sigterm_and_no_secret_or_authorization_reaches_the_debug_log(
    tmp_path: Path,
) -> None:
    async with bot_process(tmp_path) as running:
        replicate, slack, discord = running.replicate, running.slack, running.discord
        # A full flow at DEBUG: text, image, a failing model, on both platforms; then a command left in flight.
        await ask_slack(running, "C0TEXT", "hello")
        await running.slack.send_slash_command(command="/imagine", text="a lighthouse --seed 3", channel_id="C0IMG")
        await ask_slack(running, "C0FAIL", f"break --model {BROKEN_MODEL}")
        answered = await discord.send_interaction("ask", {"prompt": "hello"}, channel_id=CHANNEL)
        broken = await discord.send_interaction("ask", {"prompt": "break", "model": BROKEN_MODEL}, channel_id=CHANNEL)
        await running.bot.wait_until(lambda: len(running.bot.command_records()) == 5, "five commands logged")
        await ask_slack(running, "C0HUNG", f"think forever --model {HUNG_MODEL}")
        await replicate.wait_until(lambda: any(p.model == HUNG_MODEL for p in replicate.running()), WAIT_S,
                                   what="the hung prediction")

        running.bot.process.send_signal(signal.SIGINT)

        assert await running.bot.exit_status(SHUTDOWN_GRACE_S + 15) == 0
        assert "Traceback" not in running.bot.output and "KeyboardInterrupt" not in running.bot.output
        assert [p.model for p in replicate.creates if p.id in replicate.cancels] == [HUNG_MODEL]
        assert replicate.running() == []
        assert slack_replies(slack, "C0HUNG") == [f"Thinking\n\n⚠️ {RESTARTING}"]
        assert discord_contents(discord, answered) == ["".join(QUICK_TOKENS)]
        assert any("failed while running" in text for text in discord_contents(discord, broken))

        output = running.bot.output
        assert "DEBUG" in output  # the secrets were given every chance to show up
        for secret in (REPLICATE_TOKEN, SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SIGNING_SECRET, DISCORD_TOKEN):
            core = secret.split("_", 1)[-1].split("-", 1)[-1]  # also without its r8_/xoxb-/xapp- prefix
            assert secret not in output and core not in output, f"{secret[:6]}… leaked into the log"
        bearer = re.findall(r"(?:Bearer|Bot)[ \t]+(?!\[redacted\])[\w.~+/=-]{8,}", output)
        assert bearer == [], bearer
        assert "CUDA out of memory" in output  # the raw model error went to the log (and only there)

        records = {(r["platform"], r["command"], r["model"]): r for r in running.bot.command_records()}
        check_command_records(records, replicate)


def check_command_records(records: dict[tuple[str, str, str], dict[str, Any]], replicate: FakeReplicate) -> None:
    """One structured line per command: who asked where, what ran, how it ended, how fast, and what it cost."""
    by_model = {p.id: p.model for p in replicate.creates}
    text = records[("slack", "ask", ASK_MODEL)]
    assert text["outcome"] == "ok" and by_model[text["prediction_id"]] == ASK_MODEL
    assert (text["user_id"], text["channel_id"]) == ("U0USER", "C0TEXT")
    assert text["ack_latency_ms"] >= 0 and 0 <= text["first_token_ms"] <= text["total_ms"]
    # Streamed text: the metrics come from one GET after the answer; Llama 3 is priced per token.
    assert isinstance(text["predict_time_s"], float) and 0 < text["cost_usd"] < 0.0001
    image = records[("slack", "imagine", IMAGINE_MODEL)]
    assert image["outcome"] == "ok" and by_model[image["prediction_id"]] == IMAGINE_MODEL
    assert isinstance(image["predict_time_s"], float) and image["total_ms"] > 0 and image["first_token_ms"] is None
    assert image["cost_usd"] == 0.003  # flux-schnell: $0.003 per image, one image
    for platform in ("slack", "discord"):
        failed = records[(platform, "ask", BROKEN_MODEL)]
        assert failed["outcome"] == "model_failed" and by_model[failed["prediction_id"]] == BROKEN_MODEL
        assert failed["total_ms"] is not None and failed["ack_latency_ms"] is not None
    hung = records[("slack", "ask", HUNG_MODEL)]
    assert hung["outcome"] == "shutting_down" and by_model[hung["prediction_id"]] == HUNG_MODEL
    assert records[("discord", "ask", ASK_MODEL)]["outcome"] == "ok"
    assert len(records) == 6


# --- /healthz ------------------------------------------------------------------------------------------


class ManualClock:
    """The health monitor's clock, moved by the test: "down for longer than the window" without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def get_health(bots: Bots) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{bots.service.http_port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_healthz_reports_connections_and_commands_and_turns_503_past_the_reconnect_window() -> None:
    clock = ManualClock()

    def hung(replicate: FakeReplicate) -> None:
        replicate.add_model(HUNG_MODEL, TextModel(tokens=[], hang=True))

    async with running_bots(
        arrange=hung, service_options={"reconnect_window_s": 30.0, "clock": clock},
        allowed_models=frozenset({ASK_MODEL, IMAGINE_MODEL, HUNG_MODEL}), max_concurrent_predictions=1,
        shutdown_grace_s=0.1,
    ) as bots:
        discord_adapter = bots.service.adapter("discord")
        assert bots.slack is not None and isinstance(discord_adapter, DiscordAdapter)
        # discord.py is ready once the guilds have streamed in (it waits a moment for more after READY).
        await asyncio.wait_for(discord_adapter.wait_until_ready(), WAIT_S)
        status, idle = await get_health(bots)
        assert status == 200
        assert idle == {"status": "ok", "accepting": True, "running": 0, "queued": 0,
                        "adapters": {"slack": {"connected": True}, "discord": {"connected": True}}}

        for channel in ("C0ONE", "C0TWO"):  # one runs, one waits for the single slot
            await bots.slack.send_slash_command(command="/ask", text=f"wait --model {HUNG_MODEL}", channel_id=channel)
        await bots.replicate.wait_until(lambda: len(bots.replicate.running()) == 1, what="the running prediction")
        await bots.slack.wait_until(lambda: any("Queued" in m.text for m in bots.slack_replies("C0TWO")),
                                    what="the queued command's status")
        status, busy = await get_health(bots)
        assert status == 200 and busy["running"] == 1 and busy["queued"] == 1

        # Slack's socket goes away and cannot come back (apps.connections.open keeps failing).
        bots.slack.fail("apps.connections.open", "internal_error", times=1000)
        await bots.slack.send_disconnect(reason="refresh_requested", close_after=0.0)
        first = bots.slack.socket.connections[0]
        await bots.slack.wait_until(lambda: first.closed_at is not None, what="the socket closed")
        status, down = await get_health(bots)
        assert status == 200  # a reconnect is routine: inside the window the process is still healthy
        assert down["adapters"]["slack"] == {"connected": False, "down_for_s": 0.0}

        clock.now += 30.5
        status, gone = await get_health(bots)
        assert status == 503 and gone["status"] == "unhealthy"
        assert gone["adapters"] == {"slack": {"connected": False, "down_for_s": 30.5}, "discord": {"connected": True}}


# --- exactly once ---------------------------------------------------------------------------------------


def slow_answers(replicate: FakeReplicate) -> None:
    """An answer that takes ~1 s: a redelivery arriving meanwhile would have time to start a second one."""
    replicate.add_model(ASK_MODEL, TextModel(tokens=QUICK_TOKENS, token_interval_s=0.5))


async def test_a_slash_command_delivered_twice_with_one_trigger_id_runs_once_and_is_answered_once() -> None:
    async with running_bots(discord=False, arrange=slow_answers) as bots:
        slack = bots.slack
        assert slack is not None
        first = await slack.send_slash_command(command="/ask", text="once please", channel_id="C0ONCE")
        delivery = slack.sent_envelopes[first]
        # Slack redelivers (say, the first ack was late): a new envelope around the very same command.
        conn = slack.socket.current()
        assert conn is not None
        again = await slack.socket.send_envelope(conn, "slash_commands", dict(delivery.payload),
                                                 response_url=delivery.response_url, accepts_response_payload=True,
                                                 retry_attempt=1, retry_reason="timeout")
        await slack.wait_for_ack(first)
        second_ack = await slack.wait_for_ack(again.envelope_id)  # acked, so Slack stops retrying …

        assert await bots.slack_final("C0ONCE") == ["".join(QUICK_TOKENS)]
        assert second_ack.get("payload") in (None, {})  # … and quietly: nothing shown for the repeat
        assert len(bots.replicate.creates) == 1
        assert len(bots.slack_parents("C0ONCE")) == 1 and len(bots.slack_replies("C0ONCE")) == 1
        assert slack.response_url_posts(delivery.response_url or "") == []


async def test_an_interaction_dispatched_twice_runs_once_and_is_answered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_bots(slack=False, arrange=slow_answers) as bots:
        discord = bots.discord
        assert discord is not None
        sent = await discord.send_interaction("ask", {"prompt": "once please"}, channel_id=CHANNEL)
        discord.dispatch("INTERACTION_CREATE", sent.payload)  # a redelivery after a resume: same id, same token

        assert await bots.discord_final(sent) == ["".join(QUICK_TOKENS)]
        assert len(bots.replicate.creates) == 1
        assert len([c for c in discord.callbacks if c.interaction_id == sent.id]) == 1  # deferred once, no 40060
        assert discord.followups(sent.token) == []
    # The repeat was dropped, not answered into Discord's "already acknowledged" (40060) and an error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("dropped a repeated delivery" in r.getMessage() for r in caplog.records)


async def test_our_own_retry_after_a_429_on_create_creates_one_prediction_and_one_answer() -> None:
    async with running_bots(discord=False, arrange=lambda r: r.rate_limit("create", retry_after=1)) as bots:
        assert bots.slack is not None
        await bots.slack.send_slash_command(command="/ask", text="hello", channel_id="C0RETRY")

        assert await bots.slack_final("C0RETRY") == [ANSWER]
        creates = bots.replicate.requests_to("POST", "/v1/models/")
        assert [request.status for request in creates] == [429, 201]
        assert len(bots.replicate.creates) == 1


async def test_healthz_turns_503_when_the_discord_gateway_stays_down_past_the_window() -> None:
    clock = ManualClock()
    async with running_bots(slack=False, service_options={"reconnect_window_s": 30.0, "clock": clock}) as bots:
        discord_adapter = bots.service.adapter("discord")
        assert bots.discord is not None and isinstance(discord_adapter, DiscordAdapter)
        await asyncio.wait_for(discord_adapter.wait_until_ready(), WAIT_S)
        assert (await get_health(bots))[1]["adapters"]["discord"] == {"connected": True}

        await bots.discord.close()  # Discord goes away: the socket closes (1001) and reconnects are refused
        assert all(connection.closed_at is not None for connection in bots.discord.gateway.log)
        await get_health(bots)  # the monitor first sees it down now …
        clock.now += 30.5  # … and it stays down past the window
        status, body = await get_health(bots)

        assert body["adapters"]["discord"]["connected"] is False
        assert status == 503


async def test_what_start_up_made_is_kept_out_of_garbage_collection_until_shutdown() -> None:
    assert gc.get_freeze_count() == 0
    async with running_bots(slack=True, discord=False):
        assert gc.get_freeze_count() > 0  # a full collection during a burst no longer scans them
    assert gc.get_freeze_count() == 0
