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
from bench.summary import Observed, split_replicate_requests, summarise
from bench.timeline import breakdown
from bench.workload import Workload, bot_environment, start_replicate
from tests.fakes.discord_server import FakeDiscord, SentInteraction

APPLICATION_ID = 111
GUILD, CHANNEL = 222, 333
READY_TIMEOUT_S = 30.0
_ID = re.compile(r"\d{6,}")


def is_final(content: object, answer: str) -> bool:
    """The answer's whole text, alone or followed by the bot's line on how to continue the conversation (a
    `-# …` subtext line, added when the bot can't read replies without a mention)."""
    return isinstance(content, str) and (content == answer or content.startswith(answer + "\n\n-# "))


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
            if op.kind in ("create", "edit") and is_final(op.payload.get("content"), self._answer):
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
                          split_replicate_requests(replicate.requests[first_replicate_request:]),
                          len(replicate.creates) - first_create)
        final_at = {index: answers.final_at[s.token] for index, s in sent.items() if s.token in answers.final_at}
        result["timeline"] = breakdown(reading.sent_at, final_at, replicate.creates[first_create:])
        result["replicate_errors"] = list(replicate.fake_errors)
    finally:
        exit_status = await bot.stop()
        await discord.close()
        await replicate.close()
    result.update(platform="discord", bot="bot", exit_status=exit_status, bot_log=str(bot.log_path),
                  bot_log_errors=bot.log_count(" ERROR "), profile=str(bot.profile_path) if bot.profile_path else None)
    return result


def _analyse(workload: Workload, reading: LoadReading, discord: FakeDiscord, answers: DiscordAnswers,
             sent: dict[int, SentInteraction], first_request: int, replicate_requests: tuple[int, int],
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
    edits: dict[int, list[tuple[float, bool]]] = {}
    for message in discord.messages.values():
        if message.token in tokens:
            edits[message.id] = [(op.at, is_final(op.payload.get("content"), workload.answer))
                                 for op in message.history if op.kind == "edit"]
    seen = Observed(acks=acks, per_command=per_command, finals=finals, replicate_requests=replicate_requests[0],
                    metrics_lookups=replicate_requests[1],
                    creates=creates, chat_calls_per_answer=list(calls.values()), chat_calls_by_method=by_route,
                    rate_limited=rate_limited, edits=edits)
    return {
        **summarise(workload, reading, seen),
        "fake_errors": list(discord.fake_errors),
    }
