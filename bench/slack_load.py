"""The Slack run: N `/ask` slash commands over Socket Mode, at once, to a bot in a subprocess.

Command i comes from user U{i} in channel C{i mod channels} (one channel per command unless `--channels` says
fewer); everything the bot does for it (parent post, thread reply, edits, native stream calls, reposts,
deletes) is found by its thread in the fake's call log. The same run drives the bot under test
(`bench.instrumented_bot`) and the seed-style baseline (`bench.baseline_bot`). With `--slack-tiers` the fake
enforces the documented tiers of every method the bot uses and offers native streaming (as to an app with
Slack's AI-app feature); an answer counts as visibly streamed when part of it was shown before its final text.

The follow-up run (`follow_ups=True`) first has N `/ask`s answered, unmeasured, then measures N second turns:
a reply from each asker in their answer's thread (a `message` event), all at once. The bot reads each
conversation from its state store, sends the model both turns and answers in the thread.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

from bench.bot_process import BotProcess
from bench.measure import LoadReading, run_load, wait_for
from bench.summary import Observed, split_replicate_requests, summarise
from bench.timeline import breakdown
from bench.workload import SLACK_POST_BURST, Workload, bot_environment, start_replicate
from tests.fakes.slack_server import FakeSlack, RecordedRequest

WARMUP_CHANNEL = "CWARMUP"
WARMUP = -1  # the warm-up command's key among the answers
SOCKET_TIMEOUT_S = 15.0
CHAT_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral",
                          "chat.startStream", "chat.appendStream", "chat.stopStream"})
_COMMAND = re.compile(r"benchmark question (\d+)")

MessageKey = tuple[str, str]  # (channel, ts)


def channel_of(index: int, workload: Workload) -> str:
    return f"C{index % workload.channel_count:05d}"


class SlackAnswers:
    """Follows, incrementally, what each command's thread shows: when its final answer arrived (the first call
    that made a message show exactly the answer) and when part of it was first shown (a draft, an append)."""

    def __init__(self, slack: FakeSlack, answer: str, first_words: str, *, since_call: int = 0,
                 roots: dict[MessageKey, int] | None = None, by_channel: dict[str, int] | None = None) -> None:
        self._slack = slack
        self._by_channel = by_channel or {}  # when each command has its own channel: a top-level answer's command
        self._answer = answer
        self._first_words = first_words
        self._scanned = since_call  # calls before it are another round's
        self.roots: dict[MessageKey, int] = dict(roots or {})  # a thread's parent → its command (WARMUP too)
        self._root_of: dict[MessageKey, MessageKey] = {}  # a reply → its thread's parent
        self._shown: dict[MessageKey, str] = {}  # what each reply shows, as the calls so far made it
        self.final_at: dict[int, float] = {}
        self.partial_at: dict[int, float] = {}  # first time some, not all, of the answer was shown
        self.chat_calls: dict[int, int] = defaultdict(int)

    def count(self) -> int:
        calls = self._slack.requests
        for call in calls[self._scanned:]:
            if call.method in CHAT_METHODS:
                self._follow(call)
        self._scanned = len(calls)
        return sum(1 for key in self.final_at if key != WARMUP)

    def _follow(self, call: RecordedRequest) -> None:
        params, channel = call.params, str(call.params.get("channel", ""))
        text = str(params.get("text") or "")
        if call.method == "chat.postMessage" and not params.get("thread_ts"):
            key = int(match.group(1)) if (match := _COMMAND.search(text)) else WARMUP if "warm-up" in text else None
            if key is None and text == self._answer and channel in self._by_channel:  # the baseline answers there
                self.chat_calls[self._by_channel[channel]] += 1
                if call.ok:
                    self.final_at.setdefault(self._by_channel[channel], call.at)
            elif key is not None:
                self.chat_calls[key] += 1
                if call.ok:
                    self.roots[(channel, str(call.response.get("ts")))] = key
            return
        if call.method in ("chat.postMessage", "chat.startStream", "chat.postEphemeral"):
            parent: MessageKey = (channel, str(params.get("thread_ts")))
            message = (channel, str(call.response.get("ts") or call.response.get("message_ts")))
            if call.ok and call.method != "chat.postEphemeral":
                self._root_of[message] = parent
            root: MessageKey | None = parent
        else:
            message = (channel, str(params.get("ts")))
            root = self._root_of.get(message)
        key = self.roots.get(root) if root is not None else None
        if key is None:
            return
        self.chat_calls[key] += 1
        if not call.ok or call.method in ("chat.delete", "chat.postEphemeral"):
            return
        added = str(params.get("markdown_text") or "") + "".join(
            str(chunk.get("text", "")) for chunk in params.get("chunks") or [] if isinstance(chunk, dict))
        shown = text if call.method in ("chat.postMessage", "chat.update") else self._shown.get(message, "") + added
        self._shown[message] = shown
        if shown == self._answer:
            self.final_at.setdefault(key, call.at)
        elif self._first_words in shown and key not in self.final_at:
            self.partial_at.setdefault(key, call.at)

    def visibly_streamed(self) -> int:
        """Answers of which some was shown before the final text."""
        return sum(1 for key, at in self.partial_at.items() if key != WARMUP and at < self.final_at.get(key, 1e18))


async def run_slack(workload: Workload, *, baseline: bool, follow_ups: bool = False) -> dict[str, Any]:
    replicate = await start_replicate(workload)
    slack = FakeSlack(bot_token="xoxb-bench", app_token="xapp-bench")
    await slack.start()
    if workload.slack_tiers:
        slack.enforce_tiers(post_message_burst=SLACK_POST_BURST)
        slack.allow_streaming()
    env = {**bot_environment(replicate, workload), "SLACK_BOT_TOKEN": slack.bot_token,
           "SLACK_APP_TOKEN": slack.app_token, "SLACK_API_URL": slack.api_url}
    module = "bench.baseline_bot" if baseline else "bench.instrumented_bot"
    bot = BotProcess(
        module, env, "baseline-slack" if baseline else "bot-slack", profile=workload.profile and not baseline
    )
    by_channel = {channel_of(index, workload): index for index in range(workload.n)} \
        if workload.channel_count == workload.n else {}
    answers = SlackAnswers(slack, workload.answer, workload.tokens[0].strip(),
                           by_channel={**by_channel, WARMUP_CHANNEL: WARMUP})
    try:
        await bot.start()
        await wait_for(lambda: slack.socket.ready_count >= 1, SOCKET_TIMEOUT_S, "Socket Mode connection")
        await slack.send_slash_command("/ask", text="warm-up", channel_id=WARMUP_CHANNEL)
        await wait_for(lambda: answers.count() >= 0 and WARMUP in answers.final_at,
                       workload.answer_timeout_s, "warm-up answer")
        envelopes: dict[int, str] = {}

        async def send(index: int) -> None:
            envelopes[index] = await slack.send_slash_command(
                "/ask", text=workload.prompt(index), channel_id=channel_of(index, workload), user_id=f"U{index:05d}")

        if follow_ups:
            await asyncio.gather(*(send(index) for index in range(workload.n)))
            await wait_for(lambda: answers.count() >= workload.n, workload.answer_timeout_s, "the first turns")
            # Measured alone: the first turns' bookkeeping (each one's metrics lookup, after its answer) is over.
            await wait_for(lambda: split_replicate_requests(replicate.requests)[1] > workload.n,
                           workload.answer_timeout_s, "the first turns' metrics lookups")
            threads = {index: root for root, index in answers.roots.items() if index != WARMUP}
            answers = SlackAnswers(slack, workload.answer, workload.tokens[0].strip(), since_call=len(slack.requests),
                                   roots={root: index for index, root in threads.items()})
            envelopes.clear()

            async def send_follow_up(index: int) -> None:
                channel, thread_ts = threads[index]
                event = slack.message_event(f"and a follow-up to {index}", user_id=f"U{index:05d}",
                                            channel_id=channel, thread_ts=thread_ts)
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
        final_at = {index: at for index, at in answers.final_at.items() if index != WARMUP}
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
    answered = [index for index in range(workload.n) if index in answers.final_at]
    per_command = [answers.final_at[index] - reading.sent_at[index] for index in answered]
    finals = [answers.final_at[index] for index in answered]
    edits: dict[tuple[str, str], list[tuple[float, bool]]] = defaultdict(list)
    by_method: dict[str, int] = defaultdict(int)
    rate_limited = 0
    for call in calls:
        channel = str(call.params.get("channel", ""))
        if call.method not in CHAT_METHODS or not channel.startswith("C0"):
            continue
        by_method[call.method] += 1
        rate_limited += call.status == 429
        if call.method == "chat.update" and call.ok:
            edits[(channel, str(call.params.get("ts")))].append((call.at, call.params.get("text") == workload.answer))
    chat_calls = [count for key, count in answers.chat_calls.items() if key != WARMUP]
    seen = Observed(acks=ack_latencies, per_command=per_command, finals=finals,
                    replicate_requests=replicate_requests[0], metrics_lookups=replicate_requests[1],
                    creates=creates, chat_calls_per_answer=chat_calls, chat_calls_by_method=by_method,
                    rate_limited=rate_limited, edits=edits)
    return {
        **summarise(workload, reading, seen),
        "channels": workload.channel_count,
        "visibly_streamed": answers.visibly_streamed(),
        "fake_errors": list(slack.fake_errors),
        "client_errors": list(slack.socket.client_errors),  # the bot's Socket Mode protocol violations
    }
