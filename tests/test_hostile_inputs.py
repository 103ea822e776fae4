"""Hostile inputs (and hostile model outputs) through every adapter get one clear reply each.

The corpus is `tests/hostile_corpus.py`. Each adapter runs once per module: one bot against its fakes takes the
whole corpus at once (a Slack channel per command, a Discord interaction per command, one console process with
a line per command), and then one test per case reads what the fakes received for it. Every case must get one
clear reply; nothing may crash (no error logged, no traceback, no refused request); nothing may ping.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from adapters.console import HELP_TEXT
from bot.text import split_message
from config.models import DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL
from service.bot_service import BotService
from tests.discord_harness import NO_MENTIONS, DiscordBot, bodies_with_content, fakes, running_bot
from tests.fakes.discord_server import SentInteraction
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import FakeSlack, Message
from tests.harness_common import FAST_POLICY, PNG, bot_settings
from tests.hostile_corpus import INPUTS, OUTPUTS, Expect, HostileInput, HostileOutput

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parent.parent
ANSWER_TOKENS = ["Fine", "."]
ANSWER = "".join(ANSWER_TOKENS)
ALLOWED_MODELS = frozenset({DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL, *(case.model for case in OUTPUTS)})
SLACK_USER = "U0USER"
SLACK_MAX_CHARS = 4000  # chat.update's limit (msg_too_long, api.slack.com/methods/chat.update): the longest reply
DISCORD_MAX_CHARS = 2000  # a Discord message's content (discord.com/developers/docs/resources/message)
CLEAR_ERROR_MAX_CHARS = 2000  # an error names the problem; it doesn't echo 100 KB of input back
EPHEMERAL = 64
SETTLE_TIMEOUT_S = 20.0
SLACK_MENTION = re.compile(r"<[!@#]")  # what Slack turns into a ping, a user or a channel link
PLATFORMS = ("slack", "discord", "console")

# Known bugs: (platform, case id) → what goes wrong. Each such case is a strict xfail.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Command:
    """One corpus entry as a command: a hostile input, or a plain question answered by a hostile model."""

    key: str
    command: str
    text: str
    expect: Expect
    names: str = ""
    output: HostileOutput | None = None


def input_command(case: HostileInput, text: str | None = None) -> Command:
    return Command(f"input:{case.id}", case.command, case.text if text is None else text, case.expect, case.names)


def output_command(case: HostileOutput) -> Command:
    return Command(f"output:{case.id}", "ask", f"repeat after me --model {case.model}", Expect.ANSWERED, output=case)


def markdown_escaped(text: str) -> str:
    """Model Markdown as a Slack markdown block shows it literally: `<` and `>` escaped (a bare `&` cannot form
    a mention, and escaping it would break links' query strings)."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def printable(text: str) -> str:
    """What a terminal may be sent: no control characters but line breaks and tabs."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def add_models(replicate: FakeReplicate) -> None:
    replicate.add_model(DEFAULT_ASK_MODEL, TextModel(tokens=ANSWER_TOKENS))
    replicate.add_model(DEFAULT_IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]))
    for case in OUTPUTS:
        replicate.add_model(case.model, TextModel(tokens=list(case.tokens)))


def with_known_bugs(platform: str, cases: tuple[Any, ...]) -> list[Any]:
    params = []
    for case in cases:
        reason = KNOWN_BUGS.get((platform, case.id))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


@contextmanager
def logged_errors() -> Iterator[list[str]]:
    """Every record at ERROR or above while the bot runs: a crashed task or handler logs one."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(f"{record.name}: {record.getMessage()[:300]}")

    handler = Collect(level=logging.ERROR)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


async def wait_for_answers(service: BotService, deadline: float) -> bool:
    """Until every answer task the adapters spawned has finished (an event wait, not a sleep)."""
    while len(service.tasks) and time.monotonic() < deadline:
        await service.tasks.wait(deadline - time.monotonic())
    return len(service.tasks) == 0 and service.core.in_flight == 0


# --- Slack ------------------------------------------------------------------------------------------------


@dataclass
class SlackRun:
    slack: FakeSlack
    replicate: FakeReplicate
    commands: dict[str, Command]
    envelopes: dict[str, str]  # command key → envelope id
    channels: dict[str, str]  # command key → its own channel
    errors: list[str]
    settled: bool

    def ack(self, key: str) -> dict[str, Any] | None:
        return self.slack.sent_envelopes[self.envelopes[key]].ack

    def parents(self, key: str) -> list[Message]:
        return self.slack.channel_messages(self.channels[key])

    def replies(self, key: str) -> list[Message]:
        """The text replies in the command's thread (file messages left out)."""
        parents = self.parents(key)
        if not parents:
            return []
        return [m for m in self.slack.thread(self.channels[key], parents[0].ts) if not m.files]

    def everything_posted(self, key: str) -> list[Message]:
        channel = self.channels[key]
        return [m for m in list(self.slack.messages.values()) + self.slack.deleted if m.channel == channel]

    def started(self, key: str) -> bool:
        """Acknowledged, and (if it was taken on) its answer has begun: the parent message was posted."""
        ack = self.ack(key)
        if ack is None:
            return False
        if (ack.get("payload") or {}).get("text"):
            return True
        channel = self.channels[key]
        return any(call.params.get("channel") == channel for call in self.slack.requests_to("chat.postMessage"))


def slack_commands() -> list[Command]:
    return [input_command(case) for case in INPUTS] + [output_command(case) for case in OUTPUTS]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def slack_run() -> AsyncIterator[SlackRun]:
    with logged_errors() as errors:
        async with FakeReplicate() as replicate, FakeSlack() as slack:
            add_models(replicate)
            settings = bot_settings(replicate, slack, allowed_models=ALLOWED_MODELS)
            service = BotService(settings, FAST_POLICY)
            await service.start()
            replicate.take_requests()  # the start-up model look-ups are not what a command costs
            try:
                await slack.wait_for_socket(1)
                commands = {command.key: command for command in slack_commands()}
                channels = {key: f"CHOSTILE{index:03d}" for index, key in enumerate(commands)}
                envelopes = {}
                for key, command in commands.items():
                    envelopes[key] = await slack.send_slash_command(
                        command=f"/{command.command}", text=command.text, user_id=SLACK_USER, channel_id=channels[key]
                    )
                run = SlackRun(slack, replicate, commands, envelopes, channels, errors, settled=False)
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                try:
                    await slack.wait_until(lambda: all(run.started(key) for key in commands), SETTLE_TIMEOUT_S,
                                           what="every command acknowledged and begun")
                    run.settled = await wait_for_answers(service, deadline)
                except TimeoutError:
                    run.settled = False
                yield run
            finally:
                await service.shutdown()


@pytest.mark.parametrize("case", with_known_bugs("slack", INPUTS))
async def test_slack_hostile_input_gets_one_clear_reply(slack_run: SlackRun, case: HostileInput) -> None:
    run, command = slack_run, input_command(case)
    ack = run.ack(command.key)
    assert ack is not None, "never acknowledged"
    private = (ack.get("payload") or {}).get("text", "")
    posted = run.everything_posted(command.key)
    if command.expect is Expect.USAGE:
        assert private.startswith(f"Usage: `/{command.command}"), private[:200]
    elif command.expect is Expect.REFUSED:
        assert command.names in private, private[:200]
        assert len(private) <= CLEAR_ERROR_MAX_CHARS, f"a {len(private):,}-character error"
    if command.expect is not Expect.ANSWERED:
        assert posted == [], "refused privately, yet something was posted in the channel"
        return
    assert not private, f"refused: {private[:200]}"
    [parent] = run.parents(command.key)
    header = f"<@{SLACK_USER}> used /{command.command} with `"
    assert parent.text.startswith(header)
    assert not SLACK_MENTION.search(parent.text[len(header) :]), parent.text[:300]
    assert len(parent.text) <= SLACK_MAX_CHARS
    replies = run.replies(command.key)
    if command.command == "ask":
        assert [reply.text for reply in replies] == [ANSWER]
    else:
        [caption] = replies
        assert caption.text.startswith("🖼") and "*seed:*" in caption.text, caption.text[:300]
        assert not SLACK_MENTION.search(caption.text), caption.text[:300]
        uploads = [u for u in run.slack.uploads.values() if u.channel_id == run.channels[command.key] and u.completed]
        assert [u.bytes for u in uploads] == [PNG]
    for message in posted:
        for text in message.history:
            shown = text[len(header) :] if text.startswith(header) else text
            assert not SLACK_MENTION.search(shown), shown[:300]


@pytest.mark.parametrize("case", with_known_bugs("slack", OUTPUTS))
async def test_slack_hostile_model_output_pings_nobody(slack_run: SlackRun, case: HostileOutput) -> None:
    run, command = slack_run, output_command(case)
    ack = run.ack(command.key)
    assert ack is not None and not (ack.get("payload") or {}).get("text"), ack
    [_] = run.parents(command.key)
    replies = [reply.markdown for reply in run.replies(command.key)]  # answers are markdown blocks
    if case.answers:
        assert replies == split_message(markdown_escaped(case.text), SLACK_MAX_CHARS)
    else:
        [failure] = replies
        assert failure is not None and failure.startswith("⚠️")
    for message in run.everything_posted(command.key):
        if message.is_reply:
            for text in message.history + [shown for shown in message.markdown_history if shown is not None]:
                assert "<" not in text and ">" not in text, text[:300]  # escaped: no mention, link or ping
                assert len(text) <= SLACK_MAX_CHARS


async def test_slack_took_every_command_and_crashed_nowhere(slack_run: SlackRun) -> None:
    assert slack_run.settled, "some command never got its answer"
    assert slack_run.errors == []
    assert slack_run.slack.fake_errors == [] and slack_run.replicate.fake_errors == []
    refused = [call for call in slack_run.slack.requests if call.status != 200 or not call.ok]
    assert [(call.method, call.error) for call in refused] == []
    assert slack_run.slack.ephemerals == [] and slack_run.slack.responses == []


async def test_slack_never_asks_for_mentions_to_be_parsed(slack_run: SlackRun) -> None:
    sends = [call for call in slack_run.slack.requests if call.method in ("chat.postMessage", "chat.update")]
    assert sends
    assert [call.params for call in sends if call.params.get("link_names") not in (None, False, "false", "0", 0)] == []
    assert [call.params for call in sends if call.params.get("parse") == "full"] == []


async def test_slack_creates_one_prediction_per_answered_command_and_none_for_refused_ones(
    slack_run: SlackRun,
) -> None:
    answered = [key for key in slack_run.commands if slack_run.parents(key)]
    assert len(slack_run.replicate.creates) == len(answered)
    check_prompts_sent(slack_run.replicate)


def check_prompts_sent(replicate: FakeReplicate) -> None:
    """What reached the model: no control characters (terminal escapes, NUL), within the prompt limit."""
    prompts = [prediction.input["prompt"] for prediction in replicate.creates]
    assert prompts
    assert [repr(p[:80]) for p in prompts if printable(p) != p or len(p) > 4000 or p != p.strip()] == []


# --- Discord ----------------------------------------------------------------------------------------------


@dataclass
class DiscordRun:
    bot: DiscordBot
    commands: dict[str, Command]
    sent: dict[str, SentInteraction]
    errors: list[str]
    settled: bool

    def started(self, key: str) -> bool:
        """Answered privately, refused by Discord, or deferred with the answer begun (a webhook request)."""
        sent = self.sent[key]
        requests = self.bot.requests_for(sent)
        if any(request.status >= 400 for request in requests):
            return True
        callbacks = self.bot.callbacks(sent)
        if not callbacks:
            return False
        return callbacks[0].type == 4 or any(request.path.startswith("/webhooks/") for request in requests)


def discord_commands() -> list[Command]:
    return [input_command(case, case.for_discord) for case in INPUTS] + [output_command(case) for case in OUTPUTS]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def discord_run() -> AsyncIterator[DiscordRun]:
    with logged_errors() as errors:
        async with fakes() as (discord_fake, replicate):
            add_models(replicate)
            async with running_bot(discord_fake, replicate, allowed_models=ALLOWED_MODELS) as service:
                bot = DiscordBot(discord_fake, replicate, service,
                                 bot_settings(replicate, discord=discord_fake, allowed_models=ALLOWED_MODELS))
                commands = {command.key: command for command in discord_commands()}
                sent = {key: await bot.interact(command.command, {"prompt": command.text})
                        for key, command in commands.items()}
                run = DiscordRun(bot, commands, sent, errors, settled=False)
                deadline = time.monotonic() + SETTLE_TIMEOUT_S
                try:
                    await bot.until(lambda: all(run.started(key) for key in commands), "every command begun",
                                    timeout=SETTLE_TIMEOUT_S)
                    run.settled = await wait_for_answers(service, deadline)
                except TimeoutError:
                    run.settled = False
                yield run


def check_discord_sends(run: DiscordRun, sent: SentInteraction) -> None:
    """Nothing refused, every text sent with mentions parsed for nobody, nothing that pings, nothing too long."""
    requests = run.bot.requests_for(sent)
    assert [(r.method, r.path[-30:], r.status) for r in requests if r.status >= 400] == []
    sends = bodies_with_content(requests)
    assert [(r.method, body.get("allowed_mentions"))
            for r, body in sends if body.get("allowed_mentions") != NO_MENTIONS] == []
    assert [len(body["content"]) for _, body in sends if len(body["content"]) > DISCORD_MAX_CHARS] == []
    assert [m.content[:100] for m in run.bot.messages(sent) if m.pings] == []


@pytest.mark.parametrize("case", with_known_bugs("discord", INPUTS))
async def test_discord_hostile_input_gets_one_clear_reply(discord_run: DiscordRun, case: HostileInput) -> None:
    run, command = discord_run, input_command(case, case.for_discord)
    sent = run.sent[command.key]
    check_discord_sends(run, sent)
    callbacks = run.bot.callbacks(sent)
    assert len(callbacks) == 1, "no reply at all" if not callbacks else callbacks
    [callback] = callbacks
    if command.expect is not Expect.ANSWERED:
        assert callback.type == 4 and callback.data.get("flags", 0) & EPHEMERAL, callback
        content = callback.data["content"]
        if command.expect is Expect.USAGE:
            assert content.startswith(f"Usage: `/{command.command}"), content[:200]
        else:
            assert command.names in content, content[:200]
            assert len(content) <= CLEAR_ERROR_MAX_CHARS
        assert [r.path for r in run.bot.requests_for(sent) if r.path.startswith("/webhooks/")] == []
        return
    assert callback.type == 5 and not callback.data.get("flags", 0) & EPHEMERAL, callback
    [answer] = run.bot.visible(sent)
    assert answer is run.bot.original(sent) and not answer.ephemeral and not answer.loading
    if command.command == "ask":
        assert answer.content == ANSWER
    else:
        assert [a.data for a in answer.attachments] == [PNG]
        assert "**seed:**" in answer.content, answer.content[:300]


@pytest.mark.parametrize("case", with_known_bugs("discord", OUTPUTS))
async def test_discord_hostile_model_output_pings_nobody(discord_run: DiscordRun, case: HostileOutput) -> None:
    run, command = discord_run, output_command(case)
    sent = run.sent[command.key]
    check_discord_sends(run, sent)
    assert [c.type for c in run.bot.callbacks(sent)] == [5]
    visible = run.bot.visible(sent)
    if case.answers:
        assert [m.content for m in visible] == split_message(case.text, DISCORD_MAX_CHARS)
        assert not any(m.ephemeral for m in visible)
    else:
        assert [(m.ephemeral, m.content[:2]) for m in visible] == [(True, "⚠️")], \
            [(m.ephemeral, m.content[:120]) for m in visible]


async def test_discord_took_every_command_and_crashed_nowhere(discord_run: DiscordRun) -> None:
    assert discord_run.settled, "some command never got its answer"
    assert discord_run.errors == []
    assert discord_run.bot.discord.fake_errors == [] and discord_run.bot.replicate.fake_errors == []
    assert [m.content[:100] for m in discord_run.bot.discord.messages.values() if m.pings] == []


async def test_discord_creates_one_prediction_per_deferred_command_and_none_for_refused_ones(
    discord_run: DiscordRun,
) -> None:
    deferred = [key for key, sent in discord_run.sent.items()
                if [c.type for c in discord_run.bot.callbacks(sent)] == [5]]
    assert len(discord_run.bot.replicate.creates) == len(deferred)
    check_prompts_sent(discord_run.bot.replicate)


# --- console ----------------------------------------------------------------------------------------------


@dataclass
class ConsoleRun:
    code: int
    stderr: str
    blocks: dict[str, str]  # command key → everything printed for it
    creates: int


def console_commands() -> list[Command]:
    inputs = [input_command(case) for case in INPUTS if case.on_console]
    return inputs + [output_command(case) for case in OUTPUTS]


CONSOLE_INPUTS = tuple(case for case in INPUTS if case.on_console)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def console_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ConsoleRun]:
    """One `python -m bot console` reads every command, each followed by `/help`, whose text separates the
    output of one command from the next."""
    workdir = tmp_path_factory.mktemp("console")
    commands = console_commands()
    stdin = "".join(f"/{command.command} {command.text}\n/help\n" for command in commands)
    async with FakeReplicate() as replicate:
        add_models(replicate)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "REPLICATE_API_TOKEN": "r8_test_token",
            "REPLICATE_BASE_URL": replicate.base_url,
            "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
            "IMAGE_DIR": str(workdir / "images"),
            "ALLOWED_MODELS": ",".join(sorted(ALLOWED_MODELS)),
            "PREDICTION_TIMEOUT": "10",
            "SSL_CERT_FILE": replicate.ca_bundle,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "console",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=workdir,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
        stdout = out.decode(errors="replace")
        pieces = stdout.split(HELP_TEXT + "\n")
        assert len(pieces) == len(commands) + 1, f"{len(pieces) - 1} blocks for {len(commands)} commands"
        yield ConsoleRun(process.returncode or 0, err.decode(errors="replace"),
                         {command.key: piece for command, piece in zip(commands, pieces[:-1], strict=True)},
                         len(replicate.creates))


@pytest.mark.parametrize("case", with_known_bugs("console", CONSOLE_INPUTS))
async def test_console_hostile_input_gets_one_clear_reply(console_run: ConsoleRun, case: HostileInput) -> None:
    command = input_command(case)
    block = console_run.blocks[command.key]
    assert printable(block) == block, repr(block[:200])
    if command.expect is Expect.USAGE:
        assert block.startswith(f"✗ Usage: `/{command.command}"), block[:200]
    elif command.expect is Expect.REFUSED:
        assert block.startswith("✗ ") and command.names in block, block[:200]
        assert len(block) <= CLEAR_ERROR_MAX_CHARS, f"a {len(block):,}-character error"
    elif command.command == "ask":
        assert "✗" not in block and block.endswith(ANSWER + "\n"), block[:200]
    else:
        assert "✗" not in block and "🖼  saved" in block and "seed:" in block, block[:200]
    if command.expect is not Expect.ANSWERED:
        assert block.count("✗") == 1, block[:300]


@pytest.mark.parametrize("case", with_known_bugs("console", OUTPUTS))
async def test_console_hostile_model_output_is_printed_without_control_characters(
    console_run: ConsoleRun, case: HostileOutput
) -> None:
    block = console_run.blocks[output_command(case).key]
    assert printable(block) == block, repr(block[:200])
    if case.answers:
        assert printable(case.text) in block and "✗" not in block, repr(block[:300])
    else:
        assert block.count("✗") == 1, repr(block[:300])


async def test_console_exits_0_without_a_traceback_and_runs_only_what_it_took(console_run: ConsoleRun) -> None:
    assert console_run.code == 0
    assert "Traceback" not in console_run.stderr and "ERROR" not in console_run.stderr, console_run.stderr[-2000:]
    refused = [key for key, block in console_run.blocks.items() if block.startswith("✗ ")]
    assert console_run.creates == len(console_run.blocks) - len(refused)
