"""One run's numbers, the same for every platform: what the fakes recorded, reduced to the reported metrics."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bench.measure import LoadReading
from bench.stats import close_edits, max_events_in_window, min_gap, percentile
from bench.workload import PLATFORM_ACK_DEADLINE_S, Workload
from tests.fakes.replicate_server import RecordedRequest

_PREDICTION_PATH = re.compile(r"/v1/predictions/[^/]+")
MessageKey = TypeVar("MessageKey", bound=Hashable)  # how a platform names a message: Slack (channel, ts), Discord id


@dataclass(frozen=True)
class Observed(Generic[MessageKey]):
    """What a platform's run saw, already sorted out by the platform's own code."""

    acks: list[float]  # seconds from each command's delivery to its acknowledgement
    per_command: list[float]  # seconds from sending each answered command to its final answer
    finals: list[float]  # when each final answer arrived (monotonic)
    replicate_requests: int  # what a prediction's answer needed (create, stream or polls)
    metrics_lookups: int  # GETs of finished predictions, after their answers, for the spend estimate
    creates: int
    chat_calls_per_answer: list[int]
    chat_calls_by_method: Mapping[str, int]
    rate_limited: int  # chat calls answered 429
    edits: Mapping[MessageKey, list[tuple[float, bool]]]  # per message: (when, whether it set the final text)


def split_replicate_requests(requests: Sequence[RecordedRequest]) -> tuple[int, int]:
    """(requests on the way to the answers, metrics lookups after them). The bench's streamed text model is never
    polled, so a GET of one prediction is the bot reading its billing metrics once the answer went out."""
    lookups = sum(1 for r in requests if r.method == "GET" and _PREDICTION_PATH.fullmatch(r.path))
    return len(requests) - lookups, lookups


def summarise(workload: Workload, reading: LoadReading, seen: Observed[MessageKey]) -> dict[str, Any]:
    edit_times = {message: [at for at, _ in message_edits] for message, message_edits in seen.edits.items()}
    gaps = [gap for times in edit_times.values() if (gap := min_gap(times)) is not None]
    close = [close_edits(message_edits) for message_edits in seen.edits.values()]
    calls = seen.chat_calls_per_answer
    return {
        "n": workload.n,
        "latency_s": workload.latency_s,
        "acks": len(seen.acks),
        "ack_p50_ms": as_ms(percentile(seen.acks, 0.5)),
        "ack_p99_ms": as_ms(percentile(seen.acks, 0.99)),
        "ack_max_ms": as_ms(max(seen.acks) if seen.acks else None),
        "acks_over_3s": (
            sum(1 for latency in seen.acks if latency > PLATFORM_ACK_DEADLINE_S) + workload.n - len(seen.acks)
        ),
        "answered": len(seen.per_command),
        "complete": reading.complete,
        "answer_ratio_p50": as_ratio(percentile(seen.per_command, 0.5), workload),
        "answer_ratio_max": as_ratio(max(seen.per_command) if seen.per_command else None, workload),
        "all_answers_ratio": as_ratio(max(seen.finals) - reading.started_at if seen.finals else None, workload),
        "replicate_requests": seen.replicate_requests,
        "predictions": seen.creates,
        "replicate_requests_per_prediction": round(seen.replicate_requests / seen.creates, 2) if seen.creates else None,
        "metrics_lookups_per_prediction": round(seen.metrics_lookups / seen.creates, 2) if seen.creates else None,
        "chat_calls_per_answer": round(sum(calls) / len(calls), 2) if calls else None,
        "chat_calls_max_per_answer": max(calls) if calls else None,
        "chat_calls_by_method": dict(seen.chat_calls_by_method),
        "chat_calls_rate_limited": seen.rate_limited,
        "max_edits_per_s_per_message": max((max_events_in_window(t) for t in edit_times.values()), default=0),
        "min_edit_gap_ms": as_ms(min(gaps) if gaps else None),
        "edits_under_1s_apart": sum(pair[0] for pair in close),
        "edits_under_1s_apart_final": sum(pair[1] for pair in close),
        "edits_total": sum(len(message_edits) for message_edits in seen.edits.values()),
        "loop_lag": reading.bot_lag,
        "harness_lag": reading.harness_lag,
        "bot_cpu_s": rounded(reading.bot_cpu_s),
        "load_wall_s": rounded(reading.finished_at - reading.started_at),
        "rss_idle_mb": rounded(reading.idle_rss_mb),
        "rss_peak_mb": rounded(reading.peak_rss_mb),
    }


def as_ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def as_ratio(seconds: float | None, workload: Workload) -> float | None:
    return None if seconds is None else round(seconds / workload.latency_s, 3)


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
