"""One structured log line per command when it ends: what ran, how it ended, and how fast.

Operators grep and chart these; the fields are stable. No prompt text (it may be private) and no secret.

`user_id` and `channel_id` are the platform's own ids (operators need them to find who spent what). `predict_time_s`
is Replicate's billed compute time and `cost_usd` the estimate of what the prediction cost (`bot.pricing`), both
from the finished prediction's `metrics`; a streamed answer's are looked up with one GET after the answer went
out (the stream carries none). Both are null when no prediction ran.

A `CommandObserver` (the service's metrics) hears of the same ends, plus the commands refused before they ran
(which have no log line of their own here: the core logs each refusal as it makes it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from bot.errors import FailureKind
from bot.logs import structured
from bot.pricing import MICRO_USD_PER_USD
from bot.replies import Failure, Images, ReplyEvent, RunInfo, TextDelta, TextDone
from bot.requests import CommandRequest, Origin

log = logging.getLogger("bot.commands")
COMMAND_LOG_SUMMARY = "command"  # a JSON log line's `message`; its fields stand beside it


@dataclass
class CommandRecord:
    platform: str
    user_id: str
    channel_id: str
    command: str
    model: str
    request_id: str
    prediction_id: str | None = None
    outcome: str = "unfinished"
    ack_latency_ms: float | None = None
    first_token_ms: float | None = None
    total_ms: float | None = None
    predict_time_s: float | None = None
    cost_usd: float | None = None
    _clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _started: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._started = self._clock()

    @classmethod
    def start(
        cls, request: CommandRequest, ack_latency_s: float | None, *, clock: Callable[[], float] = time.monotonic
    ) -> CommandRecord:
        return cls(
            platform=request.origin.platform,
            user_id=request.origin.user_id,
            channel_id=request.origin.channel_id,
            command=str(request.command),
            model=request.model,
            request_id=request.request_id,
            ack_latency_ms=_ms(ack_latency_s),
            _clock=clock,
        )

    def observe(self, event: ReplyEvent) -> None:
        elapsed = self._clock() - self._started
        if isinstance(event, TextDelta) and self.first_token_ms is None:
            self.first_token_ms = _ms(elapsed)
        elif isinstance(event, (TextDone, Images)):
            self.outcome = "ok"
            self.prediction_id = event.run.prediction_id
            self.predict_time_s = event.run.predict_time_s
        elif isinstance(event, Failure):
            self.outcome = str(event.kind)
            self.prediction_id = event.prediction_id
        if isinstance(event, (TextDone, Images, Failure)):
            self.total_ms = _ms(elapsed)

    def settled(self, run: RunInfo | None, cost_micro_usd: int | None) -> None:
        """What the prediction used and probably cost, known once it has finished (after the answer)."""
        if run is not None:
            self.predict_time_s = run.predict_time_s
        self.cost_usd = None if cost_micro_usd is None else cost_micro_usd / MICRO_USD_PER_USD

    def emit(self) -> None:
        fields = {key: value for key, value in asdict(self).items() if not key.startswith("_")}
        log.info("command %s", json.dumps(fields, separators=(",", ":")),
                 extra=structured(COMMAND_LOG_SUMMARY, fields))


class CommandObserver(Protocol):
    """Told of every command as it ends, on the event loop: it must return at once and never raise."""

    def command_ended(self, record: CommandRecord) -> None:
        """A command that was admitted is over (answered, failed, stopped); `record` is complete."""

    def command_refused(self, origin: Origin, command: str, reason: FailureKind) -> None:
        """A command was turned away before it ran (invalid input, a limit, the budget, a full queue…)."""


class NoObserver:
    """Nobody listening (the console, tests of the core alone)."""

    def command_ended(self, record: CommandRecord) -> None:
        pass

    def command_refused(self, origin: Origin, command: str, reason: FailureKind) -> None:
        pass


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
