"""The results table: every metric beside its target, PASS/MISS per run, and baseline ÷ bot on Slack.

Targets (the README's benchmark table, for N=200 concurrent /ask with a 2 s model) live in `METRICS`, one row each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    label: str
    read: Callable[[dict[str, Any]], float | None]
    target: str = ""
    limit: float | None = None  # PASS when value <= limit
    unit: str = ""


def _lag(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda run: (run.get("loop_lag") or {}).get(key)


def _leg(run: dict[str, Any], leg: str) -> float | None:
    return ((run.get("timeline") or {}).get(leg) or {}).get("max_ms")


def _per_answer_ms(run: dict[str, Any]) -> float | None:
    cpu, answered = run.get("bot_cpu_s"), run.get("answered")
    return round(cpu * 1000 / answered, 1) if cpu is not None and answered else None


METRICS = [
    Metric("ack latency p50", lambda r: r.get("ack_p50_ms"), unit=" ms"),
    Metric("ack latency p99", lambda r: r.get("ack_p99_ms"), "≤ 50 ms", 50, " ms"),
    Metric("acks later than 3 s (user sees a timeout)", lambda r: r.get("acks_over_3s"), "0", 0),
    Metric("all answers posted ÷ model latency", lambda r: r.get("all_answers_ratio"), "≤ 1.2×", 1.2, "×"),
    Metric("slowest answer ÷ model latency", lambda r: r.get("answer_ratio_max"), unit="×"),
    Metric("median answer ÷ model latency", lambda r: r.get("answer_ratio_p50"), unit="×"),
    Metric("  command sent → create at Replicate (max)", lambda r: _leg(r, "send_to_create"), unit=" ms"),
    Metric("  create → model done (max)", lambda r: _leg(r, "create_to_model_done"), unit=" ms"),
    Metric("  model done → answer posted (max)", lambda r: _leg(r, "model_done_to_posted"), unit=" ms"),
    Metric("answers complete", lambda r: r.get("answered"), unit=""),
    Metric("  commands answered more than once", lambda r: r.get("answered_more_than_once"), "0", 0),
    Metric("  predictions for one command (max)", lambda r: r.get("predictions_per_command_max"), "1", 1),
    Metric("  process killed, s after the load began", lambda r: r.get("killed_after_s"), unit=" s"),
    Metric("  commands the killed process had taken", lambda r: r.get("killed_process_commands")),
    Metric("  … answered by the survivor after the kill", lambda r: r.get("delivered_after_kill")),
    Metric("  … after their prediction ended (p50)", lambda r: r.get("late_after_prediction_p50_s"), unit=" s"),
    Metric("  … after their prediction ended (max)", lambda r: r.get("late_after_prediction_max_s"), unit=" s"),
    Metric("answers visibly streamed (some shown before the final text)", lambda r: r.get("visibly_streamed")),
    Metric("Replicate requests per prediction", lambda r: r.get("replicate_requests_per_prediction"), "≤ 2", 2),
    Metric("  + metrics lookup after the answer (spend)", lambda r: r.get("metrics_lookups_per_prediction")),
    Metric("chat API calls per answer (mean)", lambda r: r.get("chat_calls_per_answer")),
    Metric("chat API calls per answer (max)", lambda r: r.get("chat_calls_max_per_answer")),
    Metric("max edits of one message in 1 s", lambda r: r.get("max_edits_per_s_per_message"), "≤ 1", 1),
    Metric("  edits < 1 s after the previous edit", lambda r: r.get("edits_under_1s_apart")),
    Metric("  … of which the final edit", lambda r: r.get("edits_under_1s_apart_final")),
    Metric("  edits in total", lambda r: r.get("edits_total")),
    Metric("shortest gap between edits of one message", lambda r: r.get("min_edit_gap_ms"), unit=" ms"),
    Metric("bot event-loop lag p99", _lag("p99_ms"), "≤ 20 ms", 20, " ms"),
    Metric("bot event-loop lag max", _lag("max_ms"), unit=" ms"),
    Metric("bot CPU time during the load", lambda r: r.get("bot_cpu_s"), unit=" s"),
    Metric("  … per answer", lambda r: _per_answer_ms(r), unit=" ms"),
    Metric("bot RSS idle", lambda r: r.get("rss_idle_mb"), unit=" MB"),
    Metric("bot RSS peak (N in flight)", lambda r: r.get("rss_peak_mb"), "≤ 150 MB", 150, " MB"),
    Metric("harness event-loop lag p99 (fakes)", lambda r: (r.get("harness_lag") or {}).get("p99_ms"), unit=" ms"),
]


def _cell(metric: Metric, run: dict[str, Any]) -> str:
    value = metric.read(run)
    if value is None:
        return "n/a"
    text = f"{value:g}{metric.unit}"
    if metric.limit is not None:
        text += " PASS" if value <= metric.limit else " MISS"
    return text


def _baseline_ratio(metric: Metric, runs: list[dict[str, Any]]) -> str:
    bot = next((r for r in runs if r.get("platform") == "slack" and r.get("bot") == "bot"), None)
    baseline = next((r for r in runs if r.get("bot") == "baseline"), None)
    if bot is None or baseline is None:
        return ""
    mine, theirs = metric.read(bot), metric.read(baseline)
    if not mine or theirs is None:
        return "n/a"
    return f"{theirs / mine:.2g}×"


def _rows(runs: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["metric", "target"] + [run["label"] for run in runs]
    with_ratio = any(r.get("bot") == "baseline" for r in runs) and any(
        r.get("bot") == "bot" and r.get("platform") == "slack" for r in runs
    )
    if with_ratio:
        header.append("baseline ÷ bot (Slack)")
    rows = []
    for metric in METRICS:
        row = [metric.label, metric.target or "-"] + [_cell(metric, run) for run in runs]
        if with_ratio:
            row.append(_baseline_ratio(metric, runs))
        rows.append(row)
    return header, rows


def _notes(runs: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    channels = f"over {meta['channels']} Slack channels, " if meta.get("channels") else ""
    notes = [f"N={meta['n']} concurrent /ask, {channels}model latency {meta['latency_s']:g} s, "
             f"Slack rate-limit tiers {'enforced' if meta.get('slack_tiers') else 'off'}; {meta['when']}."]
    for run in runs:
        problems = []
        if not run.get("complete"):
            problems.append(f"only {run.get('answered')} of {run.get('n')} answers arrived")
        if run.get("bot_log_errors"):
            problems.append(f"{run['bot_log_errors']} ERROR lines in {run.get('bot_log')}")
        if run.get("fake_errors") or run.get("replicate_errors"):
            problems.append(f"fake errors: {(run.get('fake_errors') or []) + (run.get('replicate_errors') or [])}")
        if run.get("client_errors"):
            problems.append(f"Socket Mode protocol violations by the bot: {run['client_errors']}")
        if run.get("chat_calls_rate_limited"):
            problems.append(f"{run['chat_calls_rate_limited']} chat calls answered 429")
        calls = run.get("chat_calls_by_method")
        detail = f"chat calls by method: {calls}" if calls else ""
        shown = [*problems, detail] if detail else problems
        notes.append(f"{run['label']} ({run.get('run_s')} s): " + "; ".join(shown))
    return notes


def render_table(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """Plain text for the terminal."""
    header, rows = _rows(runs)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) for line in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join([*lines, "", *_notes(runs, meta)])


def render_markdown(runs: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    header, rows = _rows(runs)
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    notes = "\n".join(f"- {note}" for note in _notes(runs, meta))
    return ("# Benchmark results\n\nMade by `bin/bench` (see `bench/README.md`). Numbers from a shared 2-core machine "
            "are noisy; compare runs made on the same machine.\n\n" + "\n".join(table) + "\n\n" + notes + "\n")
