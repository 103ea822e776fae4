"""Several instances: N `/ask`s split over two bot processes that share one Redis, and the same with one of them
killed (SIGKILL) while its predictions run.

Each process holds its own Socket Mode connection, and Slack sends each envelope to one of an app's connections:
command i goes to connection (i mod 2) + 1. Both processes get `STATE_URL` pointing at one `redis-server` the run
starts (tests/redis_server.py, on a Unix socket). Measured from what the fakes recorded: every command answered
exactly once (one message in its thread shows the final answer, and Replicate made one prediction for it), the
acks, and the last answer ÷ model latency. The kill run kills the first process as soon as Replicate has every
prediction, leaves the second at the default `HEARTBEAT_TIMEOUT`, and reports how many answers the survivor
delivered after the kill and how late (from when their prediction finished).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.bot_process import BotProcess
from bench.measure import wait_for
from bench.slack_load import SOCKET_TIMEOUT_S, WARMUP, SlackAnswers, channel_of
from bench.stats import percentile
from bench.summary import as_ms, as_ratio, rounded
from bench.workload import Workload, bot_environment, start_replicate
from tests.fakes.slack_server import FakeSlack
from tests.redis_server import start_redis_server, stop_redis_server

INSTANCES = 2
HEARTBEAT_TIMEOUT_S = 30.0  # the bot's default: how long the survivor waits before it takes up the dead one's work
_INDEX = re.compile(r"benchmark question (\d+)$")


async def run_instances(workload: Workload, *, kill: bool) -> dict[str, Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (bin/test does this)")
    redis = await asyncio.to_thread(start_redis_server, Path(tempfile.mkdtemp(prefix="bench-redis-")), binary)
    replicate = await start_replicate(workload)
    slack = FakeSlack(bot_token="xoxb-bench", app_token="xapp-bench")
    await slack.start()
    env = {**bot_environment(replicate, workload), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": slack.app_token, "SLACK_API_URL": slack.api_url, "STATE_URL": redis.url()}
    bots = [BotProcess("bench.instrumented_bot", env, f"bot-slack-{number}") for number in range(1, INSTANCES + 1)]
    warmups = [f"CWARMUP{number}" for number in range(1, INSTANCES + 1)]
    answers = SlackAnswers(slack, workload.answer, workload.tokens[0].strip())

    def answered() -> int:
        answers.count()
        return sum(1 for key in answers.final_at if key != WARMUP)

    result: dict[str, Any] = {}
    try:
        for number, bot in enumerate(bots, start=1):  # in order: bot k holds Socket Mode connection k
            await bot.start()
            await _sockets_ready(slack, number)
        for number, channel in enumerate(warmups, start=1):
            await slack.send_slash_command_on(number, "/ask", text="warm-up", channel_id=channel)
        await wait_for(lambda: all(_shows_answer(slack, channel, workload.answer) for channel in warmups),
                       workload.answer_timeout_s, "warm-up answers")
        first_create = len(replicate.creates)
        envelopes: dict[int, str] = {}
        sent_at: dict[int, float] = {}

        async def send(index: int) -> None:
            sent_at[index] = time.monotonic()
            envelopes[index] = await slack.send_slash_command_on(
                index % INSTANCES + 1, "/ask", text=workload.prompt(index), channel_id=channel_of(index, workload),
                user_id=f"U{index:05d}")

        started_at = time.monotonic()
        await asyncio.gather(*(send(index) for index in range(workload.n)))
        killed_at = None
        timeout_s = workload.answer_timeout_s + (HEARTBEAT_TIMEOUT_S * 2 if kill else 0)
        if kill:
            await wait_for(lambda: len(replicate.creates) - first_create >= workload.n, timeout_s, "every create")
            await bots[0].kill()
            killed_at = time.monotonic()
        try:
            await wait_for(lambda: answered() >= workload.n, timeout_s, "every answer")
        except TimeoutError:
            pass  # reported as unanswered
        result = _analyse(workload, slack, replicate.creates[first_create:], answers, envelopes, sent_at,
                          started_at, killed_at)
        result["replicate_errors"] = list(replicate.fake_errors)
    finally:
        statuses = [await bot.stop() for bot in bots]
        await slack.close()
        await replicate.close()
        await asyncio.to_thread(stop_redis_server, redis)
    result.update(platform="slack", bot=f"{INSTANCES} instances", exit_status=statuses[-1],
                  bot_log=" ".join(str(bot.log_path) for bot in bots),
                  bot_log_errors=sum(bot.log_count(" ERROR ") for bot in bots))
    return result


def _analyse(workload: Workload, slack: FakeSlack, creates: list[Any], answers: SlackAnswers,
             envelopes: dict[int, str], sent_at: dict[int, float], started_at: float,
             killed_at: float | None) -> dict[str, Any]:
    answers.count()
    acks = [latency for envelope in envelopes.values()
            if (latency := slack.sent_envelopes[envelope].ack_latency) is not None]
    per_command = [answers.final_at[index] - sent_at[index] for index in range(workload.n) if index in answers.final_at]
    finals = [answers.final_at[index] for index in range(workload.n) if index in answers.final_at]
    shown = _answers_shown(slack, workload)
    predictions = Counter(int(match.group(1)) for prediction in creates
                          if (match := _INDEX.match(str(prediction.input.get("prompt", "")))))
    result: dict[str, Any] = {
        "n": workload.n,
        "latency_s": workload.latency_s,
        "acks": len(acks),
        "ack_p50_ms": as_ms(percentile(acks, 0.5)),
        "ack_p99_ms": as_ms(percentile(acks, 0.99)),
        "ack_max_ms": as_ms(max(acks) if acks else None),
        "acks_over_3s": sum(1 for latency in acks if latency > 3.0) + workload.n - len(acks),
        "answered": len(per_command),
        "complete": len(per_command) == workload.n,
        "answer_ratio_p50": as_ratio(percentile(per_command, 0.5), workload),
        "answer_ratio_max": as_ratio(max(per_command) if per_command else None, workload),
        "all_answers_ratio": as_ratio(max(finals) - started_at if finals else None, workload),
        "answered_more_than_once": sum(1 for index in range(workload.n) if shown[index] > 1),
        "unanswered": sum(1 for index in range(workload.n) if shown[index] == 0),
        "predictions": sum(predictions.values()),
        "predictions_per_command_max": max(predictions.values(), default=0),
    }
    if killed_at is not None:
        completed = {int(match.group(1)): prediction.completed_at for prediction in creates
                     if (match := _INDEX.match(str(prediction.input.get("prompt", ""))))
                     and prediction.completed_at is not None}
        # The killed process held connection 1: the commands sent there (i mod 2 == 0) were its to answer.
        after = {index: at for index, at in answers.final_at.items()
                 if index >= 0 and index % INSTANCES == 0 and at > killed_at}
        late = [at - completed[index] for index, at in after.items() if index in completed]
        result.update(killed_after_s=round(killed_at - started_at, 2), killed_process_commands=len(
                          [index for index in range(workload.n) if index % INSTANCES == 0]),
                      delivered_after_kill=len(after),
                      late_after_prediction_p50_s=rounded(percentile(late, 0.5)),
                      late_after_prediction_max_s=rounded(max(late) if late else None))
    return result


async def _sockets_ready(slack: FakeSlack, count: int) -> None:
    await wait_for(lambda: slack.socket.ready_count >= count, SOCKET_TIMEOUT_S, "Socket Mode connection")


def _shows_answer(slack: FakeSlack, channel: str, answer: str) -> bool:
    return any(reply.text == answer for parent in slack.channel_messages(channel)
               for reply in slack.thread(channel, parent.ts))


def _answers_shown(slack: FakeSlack, workload: Workload) -> Counter[int]:
    """How many messages in each command's thread show its final answer (exactly one each when all is well)."""
    shown: Counter[int] = Counter(dict.fromkeys(range(workload.n), 0))
    for channel in {channel_of(index, workload) for index in range(workload.n)}:
        for parent in slack.channel_messages(channel):
            match = re.search(r"benchmark question (\d+)", parent.text)
            if match is None:
                continue
            shown[int(match.group(1))] += sum(1 for reply in slack.thread(channel, parent.ts)
                                              if reply.text == workload.answer)
    return shown
