"""`GET /metrics` on the running service: commands by platform, command and outcome, refusals by reason, spend,
latency histograms, predictions running and queued, and Slack's edit budget, after real commands through the
real Slack and Discord clients against the fakes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from adapters.slack_format import INTERIM_EDIT_BURST
from bot.errors import FailureKind
from config.governance import UseLimit, Window
from service.metrics import BotMetrics
from tests.bot_harness import Bots, running_bots
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.harness_common import ASK_MODEL, CHANNEL, IMAGINE_MODEL, WAIT_S
from tests.process_harness import BROKEN_MODEL, HUNG_MODEL

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TEAM = "T0TEAM"  # the fake Slack's workspace


class CommandLines(logging.Handler):
    """Counts the core's per-command log lines: the metrics of a command are counted in the same step."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._change = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_for(self, count: int) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while self.count < count:
                    await self._change.wait()
        except TimeoutError:
            raise AssertionError(f"{self.count} command lines after {WAIT_S}s, not {count}") from None


@contextmanager
def command_lines() -> Iterator[CommandLines]:
    logger = logging.getLogger("bot.commands")
    handler, saved = CommandLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


async def scrape(bots: Bots) -> tuple[str, Samples]:
    """(Content-Type, every sample by name and labels)."""
    url = f"http://127.0.0.1:{bots.service.http_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        content_type, body = response.headers["Content-Type"], await response.text()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body) for sample in family.samples
    }
    return content_type, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: Samples, name: str, match: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name and match(dict(labels)))


def failing_models(replicate: FakeReplicate) -> None:
    replicate.add_model(BROKEN_MODEL, TextModel(tokens=[], fail_with="CUDA out of memory"))


async def ephemeral_reply(discord: FakeDiscord, sent: SentInteraction) -> str:
    def original() -> str | None:
        message = discord.interactions[sent.token].original
        return message.content if message is not None and message.ephemeral else None
    await discord.wait_until(lambda: original() is not None, WAIT_S, what=f"private reply to {sent.id}")
    return original() or ""


async def test_metrics_count_answered_failed_and_refused_commands_with_spend_and_latency_on_both_platforms() -> None:
    with command_lines() as lines:
        async with running_bots(arrange=failing_models, allowed_models=frozenset({ASK_MODEL, IMAGINE_MODEL,
                                BROKEN_MODEL}), limits={"ask": UseLimit(1, Window.DAY)}) as bots:
            slack, discord = bots.slack, bots.discord
            assert slack is not None and discord is not None
            await slack.send_slash_command(command="/ask", text="hello", channel_id="C0OK")
            await bots.slack_final("C0OK")
            refused = await slack.send_slash_command(command="/ask", text="hello again", channel_id="C0OK")
            assert "used your 1 /ask" in str((await slack.wait_for_ack(refused)).get("payload"))
            await slack.send_slash_command(command="/ask", text=f"break --model {BROKEN_MODEL}", user_id="U0TWO",
                                           channel_id="C0FAIL")
            await bots.slack_final("C0FAIL")
            answered = await discord.send_interaction("ask", {"prompt": "hello"}, channel_id=CHANNEL)
            await bots.discord_final(answered)
            over = await discord.send_interaction("ask", {"prompt": "hello again"}, channel_id=CHANNEL)
            assert "used your 1 /ask" in await ephemeral_reply(discord, over)
            picture = await discord.send_interaction("imagine", {"prompt": "a lighthouse"}, channel_id=CHANNEL)
            await bots.discord_final(picture)
            await lines.wait_for(4)  # the four commands that ran, settled: metrics looked up, spend counted

            content_type, samples = await scrape(bots)

    assert content_type.startswith("text/plain; version=") and "charset=utf-8" in content_type
    commands = "replicate_bot_commands_total"
    assert value(samples, commands, platform="slack", command="ask", outcome="ok") == 1
    assert value(samples, commands, platform="slack", command="ask", outcome="model_failed") == 1
    assert value(samples, commands, platform="discord", command="ask", outcome="ok") == 1
    assert value(samples, commands, platform="discord", command="imagine", outcome="ok") == 1
    limit = str(FailureKind.LIMIT_REACHED)
    for platform in ("slack", "discord"):
        assert value(samples, commands, platform=platform, command="ask", outcome=limit) == 1
        assert value(samples, "replicate_bot_refusals_total", platform=platform, command="ask", reason=limit) == 1
    assert total(samples, commands) == 6 and total(samples, "replicate_bot_refusals_total") == 2

    # flux-schnell: $0.003 per image; the Llama answers are priced per token, a fraction of a cent.
    spend = "replicate_bot_estimated_spend_usd_total"
    assert value(samples, spend, model=IMAGINE_MODEL) == 0.003
    assert 0 < (value(samples, spend, model=ASK_MODEL) or 0) < 0.001

    # Every command that ran has its answer time; every finished prediction Replicate's compute time.
    assert value(samples, "replicate_bot_answer_seconds_count", platform="slack", command="ask") == 2
    assert value(samples, "replicate_bot_answer_seconds_count", platform="discord", command="imagine") == 1
    assert value(samples, "replicate_bot_answer_seconds_bucket", platform="discord", command="imagine",
                 le="+Inf") == 1
    assert value(samples, "replicate_bot_prediction_seconds_count", model=ASK_MODEL) == 2
    assert value(samples, "replicate_bot_prediction_seconds_count", model=IMAGINE_MODEL) == 1
    assert (value(samples, "replicate_bot_prediction_seconds_sum", model=IMAGINE_MODEL) or 0) > 0
    assert value(samples, "replicate_bot_first_token_seconds_count", platform="discord") == 1

    # Slack's per-workspace edit budget, as the answer left it.
    left = value(samples, "replicate_bot_edit_budget_left", platform="slack", scope=TEAM)
    assert left is not None and left <= INTERIM_EDIT_BURST
    assert value(samples, "replicate_bot_accepting_commands") == 1


async def test_metrics_on_a_redis_store_show_the_workspaces_shared_edit_budget(redis_url: str) -> None:
    """With Redis, several processes lease Slack's edit budget from the store; the scrape reads what this one holds."""
    with command_lines() as lines:
        async with running_bots(discord=False, state_url=redis_url) as bots:
            assert bots.slack is not None
            await bots.slack.send_slash_command(command="/ask", text="hello", channel_id="C0REDIS")
            await bots.slack_final("C0REDIS")
            await lines.wait_for(1)  # settled: counted

            _, samples = await scrape(bots)

    left = value(samples, "replicate_bot_edit_budget_left", platform="slack", scope=TEAM)
    assert left is not None and left <= INTERIM_EDIT_BURST
    assert value(samples, "replicate_bot_commands_total", platform="slack", command="ask", outcome="ok") == 1


def hung_model(replicate: FakeReplicate) -> None:
    replicate.add_model(HUNG_MODEL, TextModel(tokens=[], hang=True))


async def test_metrics_show_the_prediction_running_and_the_command_queued_while_they_last() -> None:
    async with running_bots(discord=False, arrange=hung_model, max_concurrent_predictions=1,
                            allowed_models=frozenset({ASK_MODEL, IMAGINE_MODEL, HUNG_MODEL})) as bots:
        assert bots.slack is not None
        _, idle = await scrape(bots)
        assert value(idle, "replicate_bot_predictions_running") == 0
        assert value(idle, "replicate_bot_predictions_queued") == 0

        for channel in ("C0ONE", "C0TWO"):  # one runs, one waits for the single slot
            await bots.slack.send_slash_command(command="/ask", text=f"wait --model {HUNG_MODEL}", channel_id=channel)
        await bots.replicate.wait_until(lambda: len(bots.replicate.running()) == 1, what="the running prediction")
        await bots.slack.wait_until(lambda: any("Queued" in m.text for m in bots.slack_replies("C0TWO")),
                                    what="the queued command's status")
        _, busy = await scrape(bots)

        assert value(busy, "replicate_bot_predictions_running") == 1
        assert value(busy, "replicate_bot_predictions_queued") == 1


def test_each_service_keeps_its_metrics_in_a_registry_of_its_own() -> None:
    first, second = BotMetrics(), BotMetrics()  # two services in one process (tests, benchmarks): no clash

    assert first.registry is not second.registry
    assert {family.name for family in first.registry.collect()} >= {
        "replicate_bot_commands", "replicate_bot_refusals", "replicate_bot_estimated_spend_usd",
        "replicate_bot_prediction_seconds", "replicate_bot_answer_seconds", "replicate_bot_predictions_running",
        "replicate_bot_predictions_queued", "replicate_bot_edit_budget_left",
    }
