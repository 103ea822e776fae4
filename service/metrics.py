"""`GET /metrics`: what the bot is doing, in Prometheus's text format, for dashboards and alerts.

Counters and histograms are fed by the core as each command ends or is refused (`CommandObserver`); the gauges
(predictions running and queued, a chat platform's edit budget) are read when Prometheus scrapes, never pushed
per event. Every metric lives in a registry owned by this object, not prometheus_client's process-wide
`REGISTRY`, so two services in one process (tests) never share or clash. One process per container: Prometheus
tells the instances apart by their `instance` label, and sums over them (multiprocess mode is not needed).

Labels hold only bounded values (platform, command, outcome, configured models, workspace ids): no user ids,
no prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric

from bot.command_log import CommandRecord
from bot.errors import FailureKind
from bot.requests import Origin

METRICS_PATH = "/metrics"
PREFIX = "replicate_bot"
MS_PER_S = 1000.0
# Replicate's compute time per prediction: a text answer takes seconds, an image a few, a cold boot minutes.
PREDICTION_BUCKETS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# From taking a command up to its final reply (queue, boot, run, download included), and to its first token.
ANSWER_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TOKEN_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class CoreGauges(Protocol):
    """What the core reports about its load at any moment (`bot.core.CommandCore`)."""

    @property
    def running(self) -> int: ...

    @property
    def queued(self) -> int: ...

    @property
    def accepting(self) -> bool: ...


@runtime_checkable
class EditBudgetSource(Protocol):
    """An adapter whose platform limits edits per scope (a Slack workspace): the interim edits each scope may
    still make now (below zero: overdrawn by final edits, progress edits wait)."""

    name: str

    def edit_budget_left(self) -> Mapping[str, float]: ...


class BotMetrics:
    """The service's metrics, and the `CommandObserver` the core reports every command's end to."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._commands = Counter(
            f"{PREFIX}_commands", "Commands ended, by platform, command and outcome (ok, a failure or a refusal)",
            ["platform", "command", "outcome"], registry=self.registry,
        )
        self._refusals = Counter(
            f"{PREFIX}_refusals", "Commands turned away before they ran, by reason (a limit, the budget, bad input…)",
            ["platform", "command", "reason"], registry=self.registry,
        )
        self._prediction_seconds = Histogram(
            f"{PREFIX}_prediction_seconds", "Replicate's compute time (predict_time) of each finished prediction",
            ["model"], buckets=PREDICTION_BUCKETS_S, registry=self.registry,
        )
        self._answer_seconds = Histogram(
            f"{PREFIX}_answer_seconds", "From taking a command up to its final reply (success or failure)",
            ["platform", "command"], buckets=ANSWER_BUCKETS_S, registry=self.registry,
        )
        self._first_token_seconds = Histogram(
            f"{PREFIX}_first_token_seconds", "From taking an /ask (or a conversation turn) up to its first text",
            ["platform"], buckets=FIRST_TOKEN_BUCKETS_S, registry=self.registry,
        )
        self._spend = Counter(
            f"{PREFIX}_estimated_spend_usd", "Estimated cost of finished predictions (metrics x price table), USD",
            ["model"], registry=self.registry,
        )
        self._live = LiveGauges()
        self.registry.register(self._live)

    def watch(self, core: CoreGauges, adapters: Iterable[object]) -> None:
        """Read the core's load, and each adapter's edit budget if it has one, at every scrape."""
        self._live.core = core
        self._live.budgets = {
            adapter.name: adapter.edit_budget_left for adapter in adapters if isinstance(adapter, EditBudgetSource)
        }

    def command_ended(self, record: CommandRecord) -> None:
        self._commands.labels(record.platform, record.command, record.outcome).inc()
        if record.total_ms is not None:
            self._answer_seconds.labels(record.platform, record.command).observe(record.total_ms / MS_PER_S)
        if record.first_token_ms is not None:
            self._first_token_seconds.labels(record.platform).observe(record.first_token_ms / MS_PER_S)
        if record.predict_time_s is not None:
            self._prediction_seconds.labels(record.model).observe(record.predict_time_s)
        if record.cost_usd:
            self._spend.labels(record.model).inc(record.cost_usd)

    def command_refused(self, origin: Origin, command: str, reason: FailureKind) -> None:
        self._commands.labels(origin.platform, command, str(reason)).inc()
        self._refusals.labels(origin.platform, command, str(reason)).inc()

    def routes(self) -> list[web.RouteDef]:
        # prometheus_client's own handler: it picks the format from `Accept` (text by default, OpenMetrics when
        # asked) and sets the Content-Type with its charset, which web.Response(content_type=…) would refuse.
        return [web.get(METRICS_PATH, make_aiohttp_handler(self.registry))]


class LiveGauges:
    """Gauges read at scrape time: the core's predictions running and queued, whether it takes commands, and
    each platform's edit budget per scope."""

    def __init__(self) -> None:
        self.core: CoreGauges | None = None
        self.budgets: dict[str, Callable[[], Mapping[str, float]]] = {}

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        families = self._families()
        running, queued, accepting, budget = families
        if self.core is not None:
            running.add_metric([], self.core.running)
            queued.add_metric([], self.core.queued)
            accepting.add_metric([], 1.0 if self.core.accepting else 0.0)
        for platform, left in sorted(self.budgets.items()):
            for scope, tokens in sorted(left().items()):
                budget.add_metric([platform, scope], tokens)
        return list(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(f"{PREFIX}_predictions_running",
                              "Commands holding a prediction slot (at most MAX_CONCURRENT_PREDICTIONS)"),
            GaugeMetricFamily(f"{PREFIX}_predictions_queued", "Commands waiting in line for a prediction slot"),
            GaugeMetricFamily(f"{PREFIX}_accepting_commands", "1 while new commands are taken, 0 once stopping"),
            GaugeMetricFamily(f"{PREFIX}_edit_budget_left",
                              "Interim edits a rate-limit scope may still make now (below 0: overdrawn)",
                              labels=["platform", "scope"]),
        )
