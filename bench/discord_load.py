"""The Discord run: N `/ask` interactions dispatched over the gateway at once, to a bot in a subprocess.

Each interaction has its own token, so everything the bot does for it (defer callback, edits of the
original response, follow-ups) is found by token in the fake's records.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from bench.bot_process import BotProcess
from bench.measure import LoadReading, run_load, wait_for
from bench.stats import close_edits, max_events_in_window, min_gap, percentile
from bench.timeline import breakdown
from bench.workload import PLATFORM_ACK_DEADLINE_S, Workload, bot_environment, start_replicate
from tests.fakes.discord_server import FakeDiscord, SentInteraction

APPLICATION_ID = 111
GUILD, CHANNEL = 222, 333
READY_TIMEOUT_S = 30.0
_ID = re.compile(r"\d{6,}")


class DiscordAnswers:
    """Finds, incrementally, when each interaction's messages first carried the final answer."""

    def __init__(self, discord: FakeDiscord, answer: str) -> None:
        self._discord = discord
        self._answer = answer
        self._scanned = 0
        self.final_at: dict[str, float] = {}  # interaction token → time of the create/edit with the final text
        self._token_of: dict[int, str] = {}  # message id → interaction token

    def count(self) -> int:
        ops = self._discord.message_ops
        for op in ops[self._scanned:]:
            message = self._discord.messages.get(op.message_id)
            if message is None or message.token is None:
                continue
            if op.kind in ("create", "edit") and op.payload.get("content") == self._answer:
                self.final_at.setdefault(message.token, op.at)
        self._scanned = len(ops)
        return len(self.final_at)


async def run_discord(workload: Workload) -> dict[str, Any]:
    replicate = await start_replicate(workload)
    discord = FakeDiscord(token="bench-discord-token", application_id=APPLICATION_ID, bot_user_id=APPLICATION_ID,
                          guilds={GUILD: [CHANNEL]})
    await discord.start()
    env = {**bot_environment(replicate, workload), "DISCORD_TOKEN": discord.token, "DISCORD_API_URL": discord.api_url,
           "DISCORD_GATEWAY_URL": discord.gateway_url, "DISCORD_GUILD_IDS": str(GUILD)}
    bot = BotProcess("bench.instrumented_bot", env, "bot-discord", profile=workload.profile)
    answers = DiscordAnswers(discord, workload.answer)
    try:
        await bot.start()
        await wait_for(lambda: discord.ready_count >= 1 and bool(discord.commands(GUILD)), READY_TIMEOUT_S,
                       "gateway READY and /ask registered")
        warmup = await discord.send_interaction("ask", {"prompt": "warm-up"}, guild_id=GUILD, channel_id=CHANNEL)
        await wait_for(lambda: answers.count() >= 0 and warmup.token in answers.final_at,
                       workload.answer_timeout_s, "warm-up answer")
        first_request, first_create = len(discord.requests), len(replicate.creates)
        first_replicate_request = len(replicate.requests)
        sent: dict[int, SentInteraction] = {}

        async def send(index: int) -> None:
            sent[index] = await discord.send_interaction("ask", {"prompt": workload.prompt(index)}, guild_id=GUILD,
                                                         channel_id=CHANNEL, user_id=1000 + index)

        reading = await run_load(bot, workload.n, send, lambda: answers.count() - 1, workload.answer_timeout_s,
                                 instrumented=True)
        result = _analyse(workload, reading, discord, answers, sent, first_request,
                          len(replicate.requests) - first_replicate_request, len(replicate.creates) - first_create)
        final_at = {index: answers.final_at[s.token] for index, s in sent.items() if s.token in answers.final_at}
        result["timeline"] = breakdown(reading.sent_at, final_at, replicate.creates[first_create:])
        result["replicate_errors"] = list(replicate.errors)
    finally:
        exit_status = await bot.stop()
        await discord.close()
        await replicate.close()
    result.update(platform="discord", bot="bot", exit_status=exit_status, bot_log=str(bot.log_path),
                  bot_log_errors=bot.log_count(" ERROR "), profile=str(bot.profile_path) if bot.profile_path else None)
    return result


def _analyse(workload: Workload, reading: LoadReading, discord: FakeDiscord, answers: DiscordAnswers,
             sent: dict[int, SentInteraction], first_request: int, replicate_requests: int,
             creates: int) -> dict[str, Any]:
    answers.count()
    tokens = {s.token: index for index, s in sent.items()}
    created = {token: discord.interactions[token].created for token in tokens}
    acks = [callback.at - created[callback.token] for callback in discord.callbacks if callback.token in tokens]
    per_command = [answers.final_at[s.token] - reading.sent_at[index]
                   for index, s in sent.items() if s.token in answers.final_at]
    finals = [answers.final_at[token] for token in tokens if token in answers.final_at]
    calls: dict[str, int] = defaultdict(int)
    by_route: dict[str, int] = defaultdict(int)
    rate_limited = 0
    for request in discord.requests[first_request:]:
        token = next((t for t in request.path.split("/") if t in tokens), None)
        if token is None:
            continue
        calls[token] += 1
        route = request.path.replace(token, "{token}")
        by_route[f"{request.method} {_ID.sub('{id}', route)}"] += 1
        rate_limited += request.status == 429
    edit_times: dict[int, list[float]] = defaultdict(list)
    edits: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for message in discord.messages.values():
        if message.token in tokens:
            edit_times[message.id] = [op.at for op in message.history if op.kind == "edit"]
            edits[message.id] = [(op.at, op.payload.get("content") == workload.answer)
                                 for op in message.history if op.kind == "edit"]
    gaps = [gap for times in edit_times.values() if (gap := min_gap(times)) is not None]
    close = [close_edits(message_edits) for message_edits in edits.values()]
    per_answer = list(calls.values())
    return {
        "n": workload.n,
        "latency_s": workload.latency_s,
        "acks": len(acks),
        "ack_p50_ms": _ms(percentile(acks, 0.5)),
        "ack_p99_ms": _ms(percentile(acks, 0.99)),
        "ack_max_ms": _ms(max(acks) if acks else None),
        "acks_over_3s": sum(1 for latency in acks if latency > PLATFORM_ACK_DEADLINE_S) + workload.n - len(acks),
        "answered": len(per_command),
        "complete": reading.complete,
        "answer_ratio_p50": _ratio(percentile(per_command, 0.5), workload),
        "answer_ratio_max": _ratio(max(per_command) if per_command else None, workload),
        "all_answers_ratio": _ratio(max(finals) - reading.started_at if finals else None, workload),
        "replicate_requests": replicate_requests,
        "predictions": creates,
        "replicate_requests_per_prediction": round(replicate_requests / creates, 2) if creates else None,
        "chat_calls_per_answer": round(sum(per_answer) / len(per_answer), 2) if per_answer else None,
        "chat_calls_max_per_answer": max(per_answer) if per_answer else None,
        "chat_calls_by_method": dict(by_route),
        "chat_calls_rate_limited": rate_limited,
        "max_edits_per_s_per_message": max((max_events_in_window(t) for t in edit_times.values()), default=0),
        "min_edit_gap_ms": _ms(min(gaps) if gaps else None),
        "edits_under_1s_apart": sum(pair[0] for pair in close),
        "edits_under_1s_apart_final": sum(pair[1] for pair in close),
        "edits_total": sum(len(message_edits) for message_edits in edits.values()),
        "loop_lag": reading.bot_lag,
        "harness_lag": reading.harness_lag,
        "bot_cpu_s": _round(reading.bot_cpu_s),
        "load_wall_s": _round(reading.finished_at - reading.started_at),
        "rss_idle_mb": _round(reading.idle_rss_mb),
        "rss_peak_mb": _round(reading.peak_rss_mb),
        "fake_errors": [repr(error) for error in discord.server_errors],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ratio(seconds: float | None, workload: Workload) -> float | None:
    return None if seconds is None else round(seconds / workload.latency_s, 3)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
