"""The Slack run: N `/ask` slash commands over Socket Mode, at once, to a bot in a subprocess.

Command i comes from user U{i} in channel C{i}, so everything the bot does for it (parent post, thread
reply, edits, reposts, deletes) is found by channel in the fake's call log. The same run drives the bot
under test (`bench.instrumented_bot`) and the seed-style baseline (`bench.baseline_bot`).

The follow-up run (`follow_ups=True`) first has N `/ask`s answered, unmeasured, then measures N second turns:
a reply from each asker in their answer's thread (a `message` event), all at once. The bot reads each
conversation from its state store, sends the model both turns and answers in the thread.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from bench.bot_process import BotProcess
from bench.measure import LoadReading, run_load, wait_for
from bench.summary import Observed, split_replicate_requests, summarise
from bench.timeline import breakdown
from bench.workload import Workload, bot_environment, start_replicate
from tests.fakes.slack_server import FakeSlack, RecordedRequest

WARMUP_CHANNEL = "CWARMUP"
SOCKET_TIMEOUT_S = 15.0
CHAT_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral"})


def channel_of(index: int) -> str:
    return f"C{index:05d}"


class SlackAnswers:
    """Finds, incrementally, the first call that put the final answer into each channel."""

    def __init__(self, slack: FakeSlack, answer: str, *, since_call: int = 0) -> None:
        self._slack = slack
        self._answer = answer
        self._scanned = since_call  # calls before it are another round's
        self.final_at: dict[str, float] = {}  # channel → arrival time of the call carrying the final text

    def count(self, prefix: str = "C0") -> int:
        calls = self._slack.requests
        for call in calls[self._scanned:]:
            if call.method in ("chat.postMessage", "chat.update") and call.ok and \
                    call.params.get("text") == self._answer:
                self.final_at.setdefault(str(call.params.get("channel")), call.at)
        self._scanned = len(calls)
        return sum(1 for channel in self.final_at if channel.startswith(prefix))


async def run_slack(workload: Workload, *, baseline: bool, follow_ups: bool = False) -> dict[str, Any]:
    replicate = await start_replicate(workload)
    slack = FakeSlack(bot_token="xoxb-bench", app_token="xapp-bench")
    await slack.start()
    if workload.slack_tiers:
        slack.enforce_tiers()
    env = {**bot_environment(replicate, workload), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": slack.app_token, "SLACK_API_URL": slack.api_url}
    module = "bench.baseline_bot" if baseline else "bench.instrumented_bot"
    bot = BotProcess(
        module, env, "baseline-slack" if baseline else "bot-slack", profile=workload.profile and not baseline
    )
    answers = SlackAnswers(slack, workload.answer)
    try:
        await bot.start()
        await wait_for(lambda: slack.socket.ready_count >= 1, SOCKET_TIMEOUT_S, "Socket Mode connection")
        await slack.send_slash_command("/ask", text="warm-up", channel_id=WARMUP_CHANNEL)
        await wait_for(lambda: answers.count() >= 0 and WARMUP_CHANNEL in answers.final_at,
                       workload.answer_timeout_s, "warm-up answer")
        envelopes: dict[int, str] = {}

        async def send(index: int) -> None:
            envelopes[index] = await slack.send_slash_command(
                "/ask", text=workload.prompt(index), channel_id=channel_of(index), user_id=f"U{index:05d}")

        if follow_ups:
            await asyncio.gather(*(send(index) for index in range(workload.n)))
            await wait_for(lambda: answers.count() >= workload.n, workload.answer_timeout_s, "the first turns")
            # Measured alone: the first turns' bookkeeping (each one's metrics lookup, after its answer) is over.
            await wait_for(lambda: split_replicate_requests(replicate.requests)[1] > workload.n,
                           workload.answer_timeout_s, "the first turns' metrics lookups")
            threads = {index: slack.channel_messages(channel_of(index))[0].ts for index in range(workload.n)}
            answers = SlackAnswers(slack, workload.answer, since_call=len(slack.requests))
            envelopes.clear()

            async def send_follow_up(index: int) -> None:
                event = slack.message_event(f"and a follow-up to {index}", user_id=f"U{index:05d}",
                                            channel_id=channel_of(index), thread_ts=threads[index])
                envelopes[index] = await slack.send_event(event)

            send = send_follow_up
        first_call, first_request = len(slack.requests), len(replicate.requests)
        first_create = len(replicate.creates)

        timeout_s = workload.baseline_timeout_s if baseline else workload.answer_timeout_s
        reading = await run_load(bot, workload.n, send, answers.count, timeout_s, instrumented=not baseline)
        result = _analyse(workload, reading, slack, answers, envelopes, slack.requests[first_call:],
                          split_replicate_requests(replicate.requests[first_request:]),
                          len(replicate.creates) - first_create)
        result["replicate_errors"] = list(replicate.fake_errors)
        final_at = {index: answers.final_at[channel_of(index)] for index in range(workload.n)
                    if channel_of(index) in answers.final_at}
        result["timeline"] = breakdown(reading.sent_at, final_at, replicate.creates[first_create:])
    finally:
        result_status = await bot.stop()
        await slack.close()
        await replicate.close()
    result.update(platform="slack", bot="baseline" if baseline else "bot", exit_status=result_status,
                  bot_log=str(bot.log_path), bot_log_errors=bot.log_count(" ERROR "),
                  profile=str(bot.profile_path) if bot.profile_path else None)
    return result


def _analyse(workload: Workload, reading: LoadReading, slack: FakeSlack, answers: SlackAnswers,
             envelopes: dict[int, str], calls: list[RecordedRequest], replicate_requests: tuple[int, int],
             creates: int) -> dict[str, Any]:
    answers.count()
    acks = [slack.sent_envelopes[envelope].ack_latency for envelope in envelopes.values()]
    ack_latencies = [latency for latency in acks if latency is not None]
    per_command = [answers.final_at[channel_of(index)] - reading.sent_at[index]
                   for index in range(workload.n) if channel_of(index) in answers.final_at]
    finals = [
        answers.final_at[channel_of(index)] for index in range(workload.n) if channel_of(index) in answers.final_at
    ]
    chat_calls: dict[str, int] = defaultdict(int)
    edits: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    by_method: dict[str, int] = defaultdict(int)
    rate_limited = 0
    for call in calls:
        channel = str(call.params.get("channel", ""))
        if call.method not in CHAT_METHODS or not channel.startswith("C0"):
            continue
        chat_calls[channel] += 1
        by_method[call.method] += 1
        rate_limited += call.status == 429
        if call.method == "chat.update" and call.ok:
            edits[(channel, str(call.params.get("ts")))].append((call.at, call.params.get("text") == workload.answer))
    seen = Observed(acks=ack_latencies, per_command=per_command, finals=finals,
                    replicate_requests=replicate_requests[0], metrics_lookups=replicate_requests[1],
                    creates=creates, chat_calls_per_answer=list(chat_calls.values()), chat_calls_by_method=by_method,
                    rate_limited=rate_limited, edits=edits)
    return {
        **summarise(workload, reading, seen),
        "fake_errors": list(slack.fake_errors),
        "client_errors": list(slack.socket.client_errors),  # the bot's Socket Mode protocol violations
    }
