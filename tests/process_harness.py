"""The real bot process (`python -m bot`, as operators run it) against the fakes: start one or several on the
same fakes, wait for what they write, kill them. Shared by the lifecycle, restart and several-instance tests."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bot_harness import started_fakes
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack
from tests.harness_common import (
    ASK_MODEL,
    DISCORD_TOKEN,
    GUILD,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    WAIT_S,
)

ROOT = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "harness-signing-secret-0123456789"
HUNG_MODEL, BROKEN_MODEL = "test/hung", "test/broken"
RESTARTING = "The bot is restarting. Try again in a moment."
SHUTDOWN_GRACE_S = 2.0
START_TIMEOUT_S = 30.0  # a cold interpreter importing discord.py, bolt and replicate on a busy machine
COMMAND_LOG = re.compile(r"bot\.commands: command (\{.*\})$")
QUICK_TOKENS = ["Quick ", "answer"]


# --- the real process ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class BotProcess:
    """`python -m bot` as an operator runs it; every line it writes is kept, and can be waited for."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _change: asyncio.Event = field(default_factory=asyncio.Event)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    def read(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            self._readers.append(asyncio.create_task(self._pump(stream)))

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._change.set()
            self._change = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        """Until `predicate()` holds, re-checked at every line the process writes."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    if self.process.returncode is not None:
                        raise AssertionError(f"the bot exited before {what}:\n{self.output}")
                    await self._change.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} after {timeout}s:\n{self.output[-4000:]}") from None

    async def wait_for_line(self, needle: str, timeout: float = WAIT_S) -> None:
        await self.wait_until(lambda: any(needle in line for line in self.lines), f"line {needle!r}", timeout)

    async def exit_status(self, timeout: float = WAIT_S) -> int:
        status = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.gather(*self._readers)  # everything it wrote, to the last line
        return status

    async def kill(self) -> None:
        """SIGKILL (if still running), then every line it wrote."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def command_records(self) -> list[dict[str, Any]]:
        return [json.loads(match.group(1)) for line in self.lines if (match := COMMAND_LOG.search(line))]


def process_env(replicate: FakeReplicate, slack: FakeSlack, discord: FakeDiscord, port: int) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "SSL_CERT_FILE": replicate.ca_bundle,  # trust the fake's HTTPS file server
        "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
        "SLACK_APP_TOKEN": SLACK_APP_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "DISCORD_TOKEN": DISCORD_TOKEN,
        "DISCORD_API_URL": discord.api_url,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        "DISCORD_GUILD_IDS": str(GUILD),
        "DISCORD_MESSAGE_CONTENT": "1",  # as the harness's bots (tests.harness_common.bot_settings)
        "ALLOWED_MODELS": f"{HUNG_MODEL},{BROKEN_MODEL}",
        "SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S),
        "PREDICTION_TIMEOUT": "30",
        "PORT": str(port),
        "LOG_LEVEL": "DEBUG",
    }


@dataclass
class Process:
    bot: BotProcess
    replicate: FakeReplicate
    slack: FakeSlack
    discord: FakeDiscord
    http_port: int


async def launch_bot(
    cwd: Path, replicate: FakeReplicate, slack: FakeSlack, discord: FakeDiscord, **settings: str
) -> tuple[BotProcess, int]:
    """`python -m bot` in `cwd`, connected to the fakes; returns it and its HTTP port once it said it runs.

    Several may run at once on the same fakes (give them the same `STATE_URL` to make them one bot); each
    one's Slack socket and Discord sessions (one per shard it runs: DISCORD_SHARD_IDS, else DISCORD_SHARD_COUNT,
    else one) come on top of those already open. A setting given as "" is left out of the environment
    (`SLACK_APP_TOKEN=""`: Slack's HTTP mode, no socket to wait for)."""
    port = int(settings.pop("PORT", free_port()))
    env = {**process_env(replicate, slack, discord, port), **settings}  # STATE_URL: its default, under cwd
    env = {name: value for name, value in env.items() if value != ""}
    sockets, sessions = slack.socket.ready_count, discord.ready_count
    shards = settings.get("DISCORD_SHARD_IDS")
    discord_sessions = len(shards.split(",")) if shards else int(settings.get("DISCORD_SHARD_COUNT", "1"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    bot = BotProcess(process)
    bot.read()
    try:
        await bot.wait_for_line("Bot running:", START_TIMEOUT_S)
        if env.get("SLACK_APP_TOKEN"):
            await slack.wait_for_socket(sockets + 1, WAIT_S)
        await discord.wait_for_ready(sessions + discord_sessions, WAIT_S)
    except BaseException:
        await bot.kill()
        raise
    return bot, port


def add_process_models(replicate: FakeReplicate) -> None:
    """The models every process test uses: a quick /ask, one that never answers, one that fails."""
    replicate.add_model(ASK_MODEL, TextModel(tokens=QUICK_TOKENS, token_interval_s=0.3))
    replicate.add_model(HUNG_MODEL, TextModel(tokens=["Thinking"], hang=True))
    replicate.add_model(BROKEN_MODEL, TextModel(tokens=[], fail_with="CUDA out of memory"))


@asynccontextmanager
async def bot_process(
    tmp_path: Path, *, arrange: Callable[[FakeReplicate], None] = lambda _: None, **settings: str
) -> AsyncIterator[Process]:
    """The fakes, and the real bot process connected to all three (Socket Mode and the gateway are up).

    `arrange` scripts the fake Replicate after the default models; `settings` are extra environment variables."""
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        add_process_models(replicate)
        arrange(replicate)
        bot, port = await launch_bot(tmp_path, replicate, slack, discord, **settings)
        try:
            yield Process(bot, replicate, slack, discord, port)
        finally:
            await bot.kill()


def slack_replies(slack: FakeSlack, channel: str) -> list[str]:
    return [reply.text for parent in slack.channel_messages(channel) for reply in slack.thread(channel, parent.ts)]


def discord_contents(discord: FakeDiscord, sent: SentInteraction) -> list[str]:
    state = discord.interactions[sent.token]
    messages = ([state.original] if state.original else []) + list(state.followups)
    return [message.content for message in messages if not message.deleted]


async def ask_slack(running: Process, channel: str, text: str) -> str:
    envelope = await running.slack.send_slash_command(command="/ask", text=text, channel_id=channel)
    await running.slack.wait_for_ack(envelope)
    return envelope
