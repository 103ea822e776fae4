"""Governance as users meet it, over the wire on every platform: limits, concurrency, the daily budget, allowed
channels, pause and block, give-back, and the log lines operators read.

Each test starts its own bot per platform (Slack over Socket Mode and over HTTP, Discord, the console) with the
governance settings it needs, against one fake Replicate for the module, so every test begins with empty state.
A refusal must be private (Slack: the ack's text, which only the user sees, and no message in the channel;
Discord: an ephemeral interaction response; console: the `✗` line), must say why, and must create nothing on
Replicate. Admin changes go through the core's `/replicate` (as the console user, an admin), the way an admin's
command reaches the governor on any platform.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import pytest_asyncio

from adapters.console import CONSOLE_ORIGIN, ConsoleAdapter
from bot.core import CommandCore
from bot.factory import create_core
from config.governance import GovernanceSettings, UseLimit, Window, parse_price
from service.bot_service import BotService
from tests.discord_harness import stop_service
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakePrediction, FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack, signed_headers, slash_command_form
from tests.harness_common import (
    ANSWER,
    APPLICATION_ID,
    ASK_MODEL,
    CHANNEL,
    DISCORD_TOKEN,
    GUILD,
    IMAGINE_MODEL,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    bot_settings,
    default_models,
    redirect_snapshot,
    restore_redirect,
)
from tests.test_adapter_contract import (
    CURSOR_TAIL,
    POLICY,
    SIGNING_SECRET,
    ConsoleHandle,
    RecordingOutput,
    Reply,
    SlackHandle,
    console_answer,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT_S = 15.0  # generous: a wait that times out is a failure, never a pass
HUNG_MODEL, BROKEN_MODEL = "test/hung", "test/broken"
MODELS = frozenset({ASK_MODEL, IMAGINE_MODEL, HUNG_MODEL, BROKEN_MODEL})
OTHER_CHANNEL = CHANNEL + 1  # a second Discord channel in the guild
LIMIT_TEXT = re.compile(r"The next one is possible at \d\d:\d\d UTC \(in (\d+ h|\d+ min|\d+ h \d+ min)\)\.")
CONCURRENCY_TEXT = "You already have 1 command running or waiting, the most at once."
BUDGET_TEXT = "The bot has spent today's budget. New commands are possible again at 00:00 UTC"
PAUSED_TEXT = "The bot is paused by its admins."
BLOCKED_TEXT = "An admin has blocked you from using this bot."
CHANNEL_TEXT = "This bot doesn't answer in this channel."
MODEL_ERROR = "CUDA error: out of memory"
_markers = itertools.count()


def governance(**changes: Any) -> GovernanceSettings:
    """Fresh state for one bot; the per-user cap lifted unless the test sets it."""
    state_url = f"sqlite:///{tempfile.mkdtemp(prefix='bot-state-')}/bot.db"
    return GovernanceSettings(**{"state_url": state_url, "max_concurrent_per_user": 1000, **changes})


# --- what a command looked like to its user and to the channel ---------------------------------------


@dataclass
class Sent:
    marker: str  # in the prompt: the command's predictions are the ones whose input holds it
    channel: str
    handle: Any
    before: frozenset[str] = frozenset()  # the channel's messages before it was sent (Slack)


class LogWatch(logging.Handler):
    """The bot's log records (`bot.*` at INFO and above), and a wait for one to arrive."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self._loop = asyncio.get_running_loop()
        self._change = asyncio.Event()
        self._seen: set[str] = set()  # request ids of the command lines `settled` has handed out

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate():
                    await self._change.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} in the log after {WAIT_S}s") from None

    def command_lines(self) -> list[dict[str, Any]]:
        return [json.loads(r.getMessage().removeprefix("command ")) for r in self.records if r.name == "bot.commands"]

    def messages(self, level: int, logger: str | None = None) -> list[str]:
        return [r.getMessage() for r in self.records
                if r.levelno == level and (logger is None or r.name == logger)]

    async def settled(self, sent: Sent) -> dict[str, Any]:
        """The command's log line, written once it is settled (its running slot back, its spend counted): the first
        from its channel not handed out before (the tests wait for their commands in the order they sent them)."""
        def line() -> dict[str, Any] | None:
            return next((entry for entry in self.command_lines() if entry["channel_id"] == sent.channel
                         and entry["request_id"] not in self._seen), None)
        await self.wait_until(lambda: line() is not None, f"command line for {sent.marker}")
        entry = line()
        assert entry is not None
        self._seen.add(entry["request_id"])
        return entry


class WireDriver(Protocol):
    name: str
    platform: str  # the platform's name in user keys and in `ALLOWED_CHANNELS` entries
    user_id: str  # the test's user, as the origin carries it
    channels: tuple[str, ...]  # channels a command can come from (the first is the default)
    core: CommandCore

    async def start(self, replicate: FakeReplicate, settings: GovernanceSettings, workdir: Path) -> None: ...
    async def close(self) -> None: ...
    async def send(self, command: str, prompt: str, *, channel: str | None = None, model: str | None = None,
                   fresh_channel: bool = True) -> Sent:
        """Send and return once the bot has accepted or refused (acknowledged, or, on the console, begun)."""
    def refusal(self, sent: Sent) -> str | None:
        """The private refusal the user read, or None when the command was taken."""
    def public(self, sent: Sent) -> list[str]:
        """What everyone in the channel can see of the command (on Slack: what appeared there since it was sent)."""
    async def final_reply(self, sent: Sent) -> Reply: ...


class WireSlack:
    """Slack over Socket Mode: a refusal is the ack's text (ephemeral); an answer opens a message in the channel."""

    name = platform = "slack"
    user_id = "U0GOVUSER"
    channels = ("C0GOVMAIN", "C0GOVOTHER")

    def settings_overrides(self) -> dict[str, Any]:
        return {}

    async def start(self, replicate: FakeReplicate, settings: GovernanceSettings, workdir: Path) -> None:
        self.slack = await FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN).start()
        self.service = BotService(bot_settings(replicate, self.slack, None, governance=settings,
                                               allowed_models=MODELS, **self.settings_overrides()), POLICY)
        self.core = self.service.core
        await self.service.start()
        if self.service.adapter("slack").socket_mode:  # type: ignore[union-attr]
            await self.slack.wait_for_socket(1, timeout=WAIT_S)

    async def close(self) -> None:
        await self.service.shutdown()
        await self.slack.close()
        assert self.slack.fake_errors == [] and self.slack.socket.client_errors == []

    def _channel(self, marker: str, channel: str | None, fresh_channel: bool) -> str:
        # Each command its own channel unless the test names one: what is public is then the command's own.
        return channel or (f"C0{marker.upper()}" if fresh_channel else self.channels[0])

    async def send(self, command: str, prompt: str, *, channel: str | None = None, model: str | None = None,
                   fresh_channel: bool = True) -> Sent:
        marker = f"m{next(_markers)}x"
        channel = self._channel(marker, channel, fresh_channel)
        text = f"{prompt} {marker}" + (f" --model {model}" if model else "")
        before = self._messages_in(channel)
        envelope = await self.slack.send_slash_command(command=f"/{command}", text=text, channel_id=channel,
                                                       user_id=self.user_id)
        ack = await self.slack.wait_for_ack(envelope, timeout=WAIT_S)
        ack_text = (ack.get("payload") or {}).get("text")
        response_url = self.slack.sent_envelopes[envelope].response_url
        assert response_url is not None
        return Sent(marker, channel, SlackHandle(channel, response_url, [ack_text] if ack_text else []), before)

    def refusal(self, sent: Sent) -> str | None:
        return sent.handle.ack_texts[0] if sent.handle.ack_texts else None

    def public(self, sent: Sent) -> list[str]:
        handle: SlackHandle = sent.handle
        in_channel = [str(body.get("text")) for body in self.slack.response_url_posts(handle.response_url)
                      if body.get("response_type") == "in_channel"]
        new = [m.text for m in self.slack.channel_messages(handle.channel) if m.ts not in sent.before]
        return new + in_channel

    def _messages_in(self, channel: str) -> frozenset[str]:
        return frozenset(m.ts for m in self.slack.channel_messages(channel))

    def _thread(self, handle: SlackHandle) -> list[str]:
        return [reply.markdown or reply.text for parent in self.slack.channel_messages(handle.channel)
                for reply in self.slack.thread(handle.channel, parent.ts)]

    async def final_reply(self, sent: Sent) -> Reply:
        handle: SlackHandle = sent.handle

        def settled() -> bool:
            shown = [text for text in self._thread(handle) if text]
            return (bool(shown) and not any(t.startswith("_⏳") or CURSOR_TAIL.search(t) for t in shown)) or \
                bool(self.slack.response_url_posts(handle.response_url))

        await self.slack.wait_until(settled, WAIT_S, what=f"a settled reply to {sent.marker}")
        posts = [str(body.get("text", "")) for body in self.slack.response_url_posts(handle.response_url)]
        return Reply([text for text in self._thread(handle) if text] + posts)


class WireSlackHttp(WireSlack):
    """Slack in HTTP mode: a refusal is the body of the 200 answering the signed POST."""

    name = "slack-http"

    def settings_overrides(self) -> dict[str, Any]:
        return {"slack_app_token": None, "slack_signing_secret": SIGNING_SECRET}

    async def send(self, command: str, prompt: str, *, channel: str | None = None, model: str | None = None,
                   fresh_channel: bool = True) -> Sent:
        marker = f"m{next(_markers)}x"
        channel = self._channel(marker, channel, fresh_channel)
        text = f"{prompt} {marker}" + (f" --model {model}" if model else "")
        response_url = self.slack.new_response_url()
        before = self._messages_in(channel)
        body = slash_command_form(command=f"/{command}", text=text, channel_id=channel, user_id=self.user_id,
                                  response_url=response_url)
        url = f"http://127.0.0.1:{self.service.http_port}/slack/events"
        async with aiohttp.ClientSession() as session, \
                session.post(url, data=body, headers=signed_headers(SIGNING_SECRET, body)) as response:
            assert response.status == 200
            ack = await response.text()
        return Sent(marker, channel, SlackHandle(channel, response_url, [ack] if ack else []), before)


class WireDiscord:
    """Discord: a refusal is an ephemeral interaction response (type 4, flag 64); an answer defers publicly."""

    name = platform = "discord"
    user_id = "4242"
    channels = (str(CHANNEL), str(OTHER_CHANNEL))

    async def start(self, replicate: FakeReplicate, settings: GovernanceSettings, workdir: Path) -> None:
        self.discord = await FakeDiscord(token=DISCORD_TOKEN, application_id=APPLICATION_ID,
                                         guilds={GUILD: [CHANNEL, OTHER_CHANNEL]}).start()
        self._saved = redirect_snapshot()
        self.service = BotService(bot_settings(replicate, None, self.discord, governance=settings,
                                               allowed_models=MODELS), POLICY)
        self.core = self.service.core
        await self.service.start()
        await self.discord.wait_for_ready(1, timeout=WAIT_S)

    async def close(self) -> None:
        await stop_service(self.service)
        restore_redirect(self._saved)
        await self.discord.close()
        assert self.discord.fake_errors == []

    async def send(self, command: str, prompt: str, *, channel: str | None = None, model: str | None = None,
                   fresh_channel: bool = True) -> Sent:
        marker = f"m{next(_markers)}x"
        channel = channel or self.channels[0]
        options = {"prompt": f"{prompt} {marker}", **({"model": model} if model else {})}
        sent = await self.discord.send_interaction(command, options, channel_id=int(channel),
                                                   user_id=int(self.user_id))
        state = self.discord.interactions[sent.token]
        await self.discord.wait_until(lambda: state.callback_type is not None, WAIT_S,
                                      what=f"the response to {marker}")
        return Sent(marker, channel, sent)

    def _own(self, sent: Sent) -> list[StoredMessage]:
        state = self.discord.interactions[sent.handle.token]
        return [m for m in ([state.original] if state.original else []) + list(state.followups) if not m.deleted]

    def refusal(self, sent: Sent) -> str | None:
        state = self.discord.interactions[sent.handle.token]
        if state.callback_type == 4 and state.original is not None and state.original.ephemeral:
            return state.original.content
        return None

    def public(self, sent: Sent) -> list[str]:
        handle: SentInteraction = sent.handle
        elsewhere = [m for m in self.discord.messages.values()
                     if m.token is None and not m.deleted and f"<@{handle.user_id}>" in m.content]
        return [m.content or "(deferred)" for m in self._own(sent) + elsewhere if not m.ephemeral]

    async def final_reply(self, sent: Sent) -> Reply:
        def settled() -> bool:
            messages = self._own(sent)
            return bool(messages) and not any(m.loading or m.content.startswith("⏳") or CURSOR_TAIL.search(m.content)
                                              for m in messages)

        await self.discord.wait_until(settled, WAIT_S, what=f"a settled reply to {sent.marker}")
        return Reply([m.content for m in self._own(sent) if m.content])


@dataclass
class ConsoleRun:
    handle: ConsoleHandle
    task: asyncio.Task[None]


class WireConsole:
    """The terminal adapter on a governed core: a refusal is a lone `✗` line; there is one user and one channel."""

    name = platform = "console"
    user_id = CONSOLE_ORIGIN.user_id
    channels = (CONSOLE_ORIGIN.channel_id,)

    async def start(self, replicate: FakeReplicate, settings: GovernanceSettings, workdir: Path) -> None:
        self.workdir = workdir
        self.resources = create_core(bot_settings(replicate, None, None, governance=settings,
                                                  allowed_models=MODELS), POLICY)
        self.core = self.resources.core
        await self.resources.open_state()
        await self.resources.load_models()
        self._runs: list[ConsoleRun] = []

    async def close(self) -> None:
        await self.core.drain(0)
        await asyncio.gather(*(run.task for run in self._runs), return_exceptions=True)
        await self.resources.aclose()

    async def send(self, command: str, prompt: str, *, channel: str | None = None, model: str | None = None,
                   fresh_channel: bool = True) -> Sent:
        assert channel in (None, *self.channels), "the console has one channel"
        marker = f"m{next(_markers)}x"
        out = _WatchedOutput()
        handle = ConsoleHandle(out, self.workdir / marker)
        line = f"/{command} {prompt} {marker}" + (f" --model {model}" if model else "")
        task = asyncio.create_task(ConsoleAdapter(self.core, out, handle.image_dir).handle_line(line))
        self._runs.append(ConsoleRun(handle, task))
        task.add_done_callback(lambda _: out.wake())
        # Taken once a status line is printed; a refusal is a lone `✗` line, with the command then over.
        await out.wait_until(lambda: task.done() or "· " in out.getvalue(), f"{marker} begun or refused")
        return Sent(marker, self.channels[0], (handle, task))

    def refusal(self, sent: Sent) -> str | None:
        """(A create Replicate refused reads the same way: the console can't tell them apart, nor can its user.)"""
        handle, task = sent.handle
        lines = handle.out.getvalue().splitlines()
        return lines[0].removeprefix("✗ ") if task.done() and len(lines) == 1 and lines[0].startswith("✗") else None

    def public(self, sent: Sent) -> list[str]:
        return []  # a terminal has no audience but its user

    async def final_reply(self, sent: Sent) -> Reply:
        handle, task = sent.handle
        await asyncio.wait_for(asyncio.shield(task), WAIT_S)
        answer = console_answer(handle.out.getvalue())
        return Reply([answer] if answer else [])


class _WatchedOutput(RecordingOutput):
    """The console's terminal, with a wait for the next write."""

    def __init__(self) -> None:
        super().__init__()
        self._change = asyncio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self.wake()
        return written

    def wake(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT_S):
                while not predicate():
                    await self._change.wait()
        except TimeoutError:
            raise AssertionError(f"no {what} after {WAIT_S}s: {self.getvalue()!r}") from None


DRIVERS: dict[str, type[WireSlack | WireDiscord | WireConsole]] = {
    driver.name: driver for driver in (WireSlack, WireSlackHttp, WireDiscord, WireConsole)
}
PLATFORMS = list(DRIVERS)
CHAT_PLATFORMS = [name for name in PLATFORMS if name != "console"]


# --- fixtures ----------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def replicate() -> AsyncIterator[FakeReplicate]:
    fake = await FakeReplicate(api_token=REPLICATE_TOKEN).start()
    default_models(fake)
    fake.add_model(HUNG_MODEL, TextModel(tokens=["Thinking"], hang=True))
    fake.add_model(BROKEN_MODEL, TextModel(tokens=[], fail_with=MODEL_ERROR))
    yield fake
    await fake.close()
    assert fake.fake_errors == []


@pytest_asyncio.fixture(loop_scope="module")
async def logs() -> AsyncIterator[LogWatch]:
    watch = LogWatch()
    logger = logging.getLogger("bot")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(watch)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


@asynccontextmanager
async def running(platform: str, replicate: FakeReplicate, tmp_path: Path, **changes: Any) -> AsyncIterator[Any]:
    """A bot on `platform` with `governance(**changes)`, stopped at the end."""
    driver = DRIVERS[platform]()
    await driver.start(replicate, governance(**changes), tmp_path)
    try:
        yield driver
    finally:
        await driver.close()


def predictions_of(replicate: FakeReplicate, *sent: Sent) -> list[FakePrediction]:
    return [p for p in replicate.creates if any(s.marker in json.dumps(p.input) for s in sent)]


async def answered(driver: WireDriver, sent: Sent) -> None:
    assert driver.refusal(sent) is None, f"refused: {driver.refusal(sent)}"
    reply = await driver.final_reply(sent)
    assert any(ANSWER in message for message in reply.messages), reply.messages


def assert_refused_privately(driver: WireDriver, sent: Sent, replicate: FakeReplicate, words: str | re.Pattern[str]
                             ) -> str:
    text = driver.refusal(sent)
    assert text is not None, f"{sent.marker} was taken, not refused"
    assert (words.search(text) if isinstance(words, re.Pattern) else words in text), text
    assert driver.public(sent) == [], f"a refusal was shown to the channel: {driver.public(sent)}"
    assert predictions_of(replicate, sent) == [], "a refused command created a prediction"
    return text


# --- 1. limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_command_over_the_limit_is_refused_privately_with_when_and_creates_nothing(
    platform: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    async with running(platform, replicate, tmp_path, limits={"ask": UseLimit(2, Window.DAY)}) as driver:
        first = await driver.send("ask", "first")
        await answered(driver, first)
        second = await driver.send("ask", "second")
        await answered(driver, second)
        third = await driver.send("ask", "third")

        text = assert_refused_privately(driver, third, replicate, LIMIT_TEXT)
        assert "You've used your 2 /ask commands for today." in text
        assert len(predictions_of(replicate, first, second, third)) == 2


# --- 2. concurrency --------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_second_command_while_one_runs_is_refused_privately_then_taken_once_it_ended(
    platform: str, replicate: FakeReplicate, tmp_path: Path, logs: LogWatch
) -> None:
    async with running(platform, replicate, tmp_path, max_concurrent_per_user=1) as driver:
        hung = await driver.send("ask", "think forever", model=HUNG_MODEL)
        assert driver.refusal(hung) is None
        await replicate.wait_until(lambda: any(not p.done for p in predictions_of(replicate, hung)), WAIT_S,
                                   what="the hung prediction running")

        second = await driver.send("ask", "meanwhile")
        assert_refused_privately(driver, second, replicate, CONCURRENCY_TEXT)

        [prediction] = predictions_of(replicate, hung)
        replicate.cancel(prediction)  # ended on Replicate (e.g. from its web page): the command is over
        await driver.final_reply(hung)
        await logs.settled(hung)  # its running slot is back
        third = await driver.send("ask", "now")
        await answered(driver, third)
        assert len(predictions_of(replicate, second, third)) == 1


# --- 3. budget -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_once_todays_budget_is_spent_commands_are_refused_until_midnight_and_the_operator_told_once(
    platform: str, replicate: FakeReplicate, tmp_path: Path, logs: LogWatch
) -> None:
    async with running(platform, replicate, tmp_path, daily_budget_usd=1.0,
                       model_prices={ASK_MODEL: parse_price("1/run")}) as driver:
        first = await driver.send("ask", "spend it")
        await answered(driver, first)
        assert (await logs.settled(first))["cost_usd"] == 1.0

        refused = [await driver.send("ask", "one more"), await driver.send("ask", "and another")]

        for sent in refused:
            assert_refused_privately(driver, sent, replicate, BUDGET_TEXT)
        warnings = [m for m in logs.messages(logging.WARNING) if "DAILY_BUDGET_USD" in m]
        assert len(warnings) == 1, warnings
        assert "$1.00" in warnings[0] and "00:00 UTC" in warnings[0]


# --- 4. allowed channels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_command_outside_the_allowed_channels_is_refused_privately_inside_answered(
    platform: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    chosen = DRIVERS[platform].channels
    allowed, elsewhere = chosen[0], (chosen[1] if len(chosen) > 1 else "elsewhere")
    # Entries as operators write them: qualified by platform for one, bare for the other.
    entries = frozenset({f"{DRIVERS[platform].platform}:{allowed}", "C0SOMEWHEREELSE"})
    async with running(platform, replicate, tmp_path, allowed_channels=entries) as driver:
        inside = await driver.send("ask", "here", channel=allowed)
        await answered(driver, inside)
        if len(chosen) > 1:
            outside = await driver.send("ask", "there", channel=elsewhere)
            assert_refused_privately(driver, outside, replicate, CHANNEL_TEXT)
    if len(chosen) == 1:  # the console has one channel: a bot that answers only elsewhere refuses it
        async with running(platform, replicate, tmp_path, allowed_channels=frozenset({"slack:C0SOMEWHERE"})) as driver:
            outside = await driver.send("ask", "there")
            assert_refused_privately(driver, outside, replicate, CHANNEL_TEXT)


# --- 5. pause and block ----------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_pause_and_block_refuse_privately_with_their_reason_and_resume_and_unblock_restore(
    platform: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    async with running(platform, replicate, tmp_path) as driver:
        user = f"{driver.platform}:{driver.user_id}"

        assert (await driver.core.administer(CONSOLE_ORIGIN, "pause")).startswith("Paused")
        paused = await driver.send("ask", "while paused")
        assert_refused_privately(driver, paused, replicate, PAUSED_TEXT)
        await driver.core.administer(CONSOLE_ORIGIN, "resume")
        await answered(driver, await driver.send("ask", "resumed"))

        assert "is blocked" in await driver.core.administer(CONSOLE_ORIGIN, f"block {user}")
        blocked = await driver.send("ask", "while blocked")
        assert_refused_privately(driver, blocked, replicate, BLOCKED_TEXT)
        await driver.core.administer(CONSOLE_ORIGIN, f"unblock {user}")
        await answered(driver, await driver.send("ask", "unblocked"))


# --- 6. exactness over the wire --------------------------------------------------------------------------

BURST, BURST_LIMIT = 50, 10


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_fifty_commands_at_once_against_a_limit_of_ten_make_exactly_ten_predictions(
    platform: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    async with running(platform, replicate, tmp_path, limits={"ask": UseLimit(BURST_LIMIT, Window.DAY)}) as driver:
        burst = await asyncio.gather(*(driver.send("ask", f"burst {n}") for n in range(BURST)))

        refused = [sent for sent in burst if driver.refusal(sent) is not None]
        taken = [sent for sent in burst if driver.refusal(sent) is None]
        assert (len(taken), len(refused)) == (BURST_LIMIT, BURST - BURST_LIMIT)
        await asyncio.gather(*(answered(driver, sent) for sent in taken))
        for sent in refused:
            assert_refused_privately(driver, sent, replicate, LIMIT_TEXT)
        assert len(predictions_of(replicate, *burst)) == BURST_LIMIT


# --- 7. give-back ----------------------------------------------------------------------------------------


# How Replicate can refuse a create before making anything: invalid input, or throttling past every retry.
CREATE_REFUSALS: dict[str, Callable[[FakeReplicate], None]] = {
    "422": lambda fake: fake.fail("create", 422, detail="- input.prompt: too long for this model"),
    "429": lambda fake: fake.rate_limit("create", times=POLICY.create_attempts, retry_after=None),
}


# Every platform with the 422; the 429 (the same path in the core, and each retry waits about a second) on Slack.
GIVE_BACK_CASES = [*((platform, "422") for platform in PLATFORMS), ("slack", "429")]


@pytest.mark.parametrize(("platform", "refusal"), GIVE_BACK_CASES)
async def test_a_command_replicate_refused_to_create_gives_its_use_back(
    platform: str, refusal: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    async with running(platform, replicate, tmp_path, limits={"ask": UseLimit(1, Window.DAY)}) as driver:
        CREATE_REFUSALS[refusal](replicate)
        rejected = await driver.send("ask", "rejected")
        assert any(mark in message for message in (await driver.final_reply(rejected)).messages for mark in "⚠✗")
        # Taken by the bot: the create reached Replicate, which said no and made nothing.
        assert [r for r in replicate.requests_to("POST", "/v1/models/") if rejected.marker in json.dumps(r.json)]
        assert predictions_of(replicate, rejected) == []

        await answered(driver, await driver.send("ask", "the one that counts"))
        after = await driver.send("ask", "over the limit")
        assert_refused_privately(driver, after, replicate, LIMIT_TEXT)


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_prediction_that_failed_after_replicate_took_it_counts(
    platform: str, replicate: FakeReplicate, tmp_path: Path
) -> None:
    async with running(platform, replicate, tmp_path, limits={"ask": UseLimit(1, Window.DAY)}) as driver:
        broken = await driver.send("ask", "fail please", model=BROKEN_MODEL)
        assert "failed while running" in "\n".join((await driver.final_reply(broken)).messages)
        assert len(predictions_of(replicate, broken)) == 1

        after = await driver.send("ask", "again")
        assert_refused_privately(driver, after, replicate, LIMIT_TEXT)


# --- 8. the log lines ------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_the_command_line_names_user_channel_and_cost_and_a_refusal_is_logged_with_its_reason(
    platform: str, replicate: FakeReplicate, tmp_path: Path, logs: LogWatch
) -> None:
    async with running(platform, replicate, tmp_path, limits={"ask": UseLimit(1, Window.DAY)},
                       model_prices={ASK_MODEL: parse_price("0.25/run")}) as driver:
        sent = await driver.send("ask", "logged", fresh_channel=False)
        await answered(driver, sent)
        line = await logs.settled(sent)
        assert (line["platform"], line["user_id"], line["channel_id"]) == (driver.platform, driver.user_id,
                                                                            driver.channels[0])
        assert line["cost_usd"] == 0.25 and line["outcome"] == "ok"

        refused = await driver.send("ask", "refused", fresh_channel=False)
        assert_refused_privately(driver, refused, replicate, LIMIT_TEXT)
        about = [m for m in logs.messages(logging.INFO) if "Refused" in m]
        assert about == [f"Refused /ask from {driver.platform}:{driver.user_id} in {driver.channels[0]}: "
                         "limit_reached"]
        assert len(logs.command_lines()) == 1, "a refused command has no command line (nothing ran)"
