"""The adapter contract: the same scripted model runs, fed to every adapter, keep the same promises on each.

Each scenario scripts the fake Replicate once and sends one command on every platform at once (Slack over
Socket Mode and over HTTP, Discord, the console); the bots are real `BotService`s (the console a real
`ConsoleAdapter`) against the fakes, started once for the module. Each promise is then a test per scenario and
platform, reading what that platform's fake received:

- exactly one final reply per command: the answer or one clear error, never both, never none;
- every message within the platform's limit, and the code fences of each final message balanced;
- the final text is the model's text (modulo the platform's escaping), an error shows Replicate's words literally;
- nothing pings anyone (Slack: no live `<!…>`/`<@…>`/`<#…>`; Discord: `allowed_mentions` parses nothing and the
  fake resolves no ping; console: no control characters reach the terminal);
- nothing is left running on Replicate.

A platform is one `PlatformDriver`; adding one to `DRIVERS` runs every scenario and promise on it.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp
import pytest
import pytest_asyncio

from adapters.console import ConsoleAdapter
from bot.factory import CoreResources, create_core
from bot.runner import RunPolicy
from service.bot_service import BotService
from tests.discord_harness import NO_MENTIONS, bodies_with_content, fence_lines, stop_service
from tests.fakes.discord_gateway import StoredMessage
from tests.fakes.discord_server import FakeDiscord, SentInteraction
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import (
    FakeSlack,
    Message,
    signed_headers,
    slash_command_form,
)
from tests.harness_common import (
    APPLICATION_ID,
    ASK_MODEL,
    CHANNEL,
    DISCORD_TOKEN,
    GUILD,
    IMAGINE_MODEL,
    PNG,
    PRIVILEGED_INTENTS,
    REPLICATE_TOKEN,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    bot_settings,
    default_models,
    redirect_snapshot,
    restore_redirect,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# A prediction may run this long (the hanging model's scenario waits it out); the streamed answer takes ~3 s.
POLICY = RunPolicy(timeout_s=5.0, poll_interval_s=0.05, base_backoff_s=0.05, create_wait_s=1, cancel_timeout_s=2.0)
WAIT_S = 15.0  # generous: a wait that times out is a failure, never a pass
SIGNING_SECRET = "contract-signing-secret"
SLACK_ASKER = "U0ASKER"
STATUS_WORDS = "Starting the model"  # `Status(Phase.STARTING).text`, however each platform dresses it
CURSOR_TAIL = re.compile(r"\s*▍$")
FENCE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})")

# --- scenarios --------------------------------------------------------------------------------------

STREAMED_TOKENS = [f"word{index} " for index in range(20)]


def long_answer() -> str:
    """~9,400 characters: prose (with mentions, so escaped text is split too), a 5,600-character code block
    (past both platforms' limits, so a split must close and reopen it), prose. No fence line is next to another,
    so a split's own fences are recognisable."""
    prose = [f"Paragraph {n}, for <@U1> and <!here> and @everyone: "
             + "the quick brown fox jumps over the lazy dog. " * 9
             for n in range(8)]
    code = ["```python"]
    code += [f"value_{n:03d} = compute({n}, scale=2)  # step {n} of the long listing" for n in range(90)]
    code += ["```"]
    return "\n\n".join(prose[:4]) + "\n\n" + "\n".join(code) + "\n\n" + "\n\n".join(prose[4:])


LONG_TEXT = long_answer()
HOSTILE_TEXT = ("Ping @everyone and @here, <!here> <!channel> <!subteam^S1>, user <@U1> <@!42>, role <@&123>, "
                "channel <#C1>; [click me](https://evil.example/a?x=1&y=2) <https://evil.example|label> "
                "and a terminal trick \x1b[2J\x07 done.")
REJECTED_DETAIL = "- input.prompt: <!channel> @everyone <@U123> is not allowed"
PARTIAL_TOKENS = ["Here is the start", " of an answer that", " never finishes"]
CODE_PARTIAL_TOKENS = ["Here is the code:\n\n", "```python\n", "def answer():\n", "    return 42\n"]  # never closed

Expect = Literal["answer", "images", "error", "text_then_error"]


@dataclass(frozen=True)
class Scenario:
    name: str
    command: str
    expect: Expect
    model_text: str  # what the model wrote (the whole answer, or what streamed before the failure)
    arrange: Callable[[FakeReplicate, int], None]  # (fake, how many commands will be sent)
    error_quote: str = ""  # words from Replicate the error must show literally


def text_model(**behaviour: Any) -> Callable[[FakeReplicate, int], None]:
    return lambda replicate, _: replicate.add_model(ASK_MODEL, TextModel(**behaviour))


def rejected(replicate: FakeReplicate, commands: int) -> None:
    replicate.add_model(ASK_MODEL, TextModel(tokens=["unused"]))
    replicate.fail("create", 422, times=commands, detail=REJECTED_DETAIL)


# A cold start shown first, then text while the model writes (over two edit intervals), then the whole answer.
STREAMED = Scenario("streamed", "ask", "answer", "".join(STREAMED_TOKENS).strip(),
                    text_model(tokens=STREAMED_TOKENS, token_interval_s=0.1, boot_s=1.0))
SCENARIOS = [
    STREAMED,
    Scenario("long", "ask", "answer", LONG_TEXT,
             text_model(tokens=[line + "\n" for line in LONG_TEXT.split("\n")], token_interval_s=0.02)),
    Scenario("images", "imagine", "images", "",
             lambda replicate, _: replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]))),
    Scenario("model_failure", "ask", "error", "", text_model(tokens=[], fail_with="CUDA error: out of memory")),
    Scenario("failure_after_text", "ask", "text_then_error", "".join(PARTIAL_TOKENS),
             text_model(tokens=PARTIAL_TOKENS, token_interval_s=0.05, fail_with="CUDA error: out of memory")),
    Scenario("failure_in_code_block", "ask", "text_then_error", "".join(CODE_PARTIAL_TOKENS),
             text_model(tokens=CODE_PARTIAL_TOKENS, token_interval_s=0.05, fail_with="CUDA error: out of memory")),
    Scenario("rejected_input", "ask", "error", "", rejected, error_quote="<!channel> @everyone <@U123>"),
    Scenario("hostile_text", "ask", "answer", HOSTILE_TEXT, text_model(tokens=[HOSTILE_TEXT[:40], HOSTILE_TEXT[40:]])),
    Scenario("timed_out", "ask", "text_then_error", "Thinking it over",
             text_model(tokens=["Thinking it over"], hang=True)),
]


# --- what a platform showed ------------------------------------------------------------------------


@dataclass
class Reply:
    """A command's final reply as its user reads it: message texts (platform escaping undone) and images."""

    messages: list[str]
    images: list[bytes] = field(default_factory=list)


class PlatformDriver(Protocol):
    """One chat platform: start its bot against the fakes, send a command, read back what the fake received."""

    name: str
    limit: int | None  # characters per message (None: a terminal has no messages)
    error_mark: str  # how the platform begins an error reply

    async def start(self, replicate: FakeReplicate, workdir: Path) -> None: ...
    async def close(self) -> None: ...
    async def send(self, command: str, prompt: str, key: str) -> Any: ...
    async def final_reply(self, handle: Any) -> Reply: ...
    def sent_texts(self, handle: Any) -> list[str]:
        """Every text the platform received for the command, interim edits included, as sent."""
    def views(self, handle: Any) -> list[str]:
        """The answer as its reader saw it over time (escaping undone, streaming cursor removed)."""
    def shown(self, model_text: str) -> str:
        """`model_text` as the platform can show it at best (the console drops control characters)."""
    def assert_mention_safe(self, handle: Any) -> None: ...
    def errors(self) -> list[Any]:
        """Exceptions inside the platform's fake (should stay empty)."""


def unescape_slack(text: str, *, markdown: bool) -> str:
    text = text.replace("&lt;", "<").replace("&gt;", ">")
    return text if markdown else text.replace("&amp;", "&")


async def await_answer_tasks(service: BotService) -> None:
    """Until every command task of `service` has ended: nothing it sends later can change the reply."""
    running = service.tasks.snapshot()
    if running:
        _, pending = await asyncio.wait(running, timeout=WAIT_S)
        assert not pending, f"{len(pending)} answer task(s) still running after {WAIT_S}s"


@dataclass
class SlackHandle:
    channel: str
    response_url: str
    ack_texts: list[str]


class SlackDriver:
    """Slack over Socket Mode: slash commands as envelopes, answers in a thread under a parent message."""

    name = "slack"
    limit: int | None = 4000  # chat.update's `text`, and what the adapter puts in one markdown block
    error_mark = "⚠️"

    def __init__(self) -> None:
        self.slack: FakeSlack
        self.service: BotService

    def settings_overrides(self) -> dict[str, Any]:
        return {}

    async def start(self, replicate: FakeReplicate, workdir: Path) -> None:
        self.slack = await FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN).start()
        self.service = BotService(bot_settings(replicate, self.slack, None, **self.settings_overrides()), POLICY)
        await self.service.start()
        if self.service.adapter("slack").socket_mode:  # type: ignore[union-attr]
            await self.slack.wait_for_socket(1, timeout=WAIT_S)

    async def close(self) -> None:
        await self.service.shutdown()
        await self.slack.close()

    def errors(self) -> list[Any]:
        return [*self.slack.fake_errors, *self.slack.socket.client_errors]

    async def send(self, command: str, prompt: str, key: str) -> SlackHandle:
        channel = f"C0{key.upper()}"
        envelope = await self.slack.send_slash_command(command=f"/{command}", text=prompt, channel_id=channel,
                                                       user_id=SLACK_ASKER)
        ack = await self.slack.wait_for_ack(envelope, timeout=WAIT_S)
        text = (ack.get("payload") or {}).get("text")
        response_url = self.slack.sent_envelopes[envelope].response_url
        assert response_url is not None
        return SlackHandle(channel, response_url, [text] if text else [])

    def _thread(self, handle: SlackHandle) -> list[Message]:
        return [reply for parent in self.slack.channel_messages(handle.channel)
                for reply in self.slack.thread(handle.channel, parent.ts)]

    def _settled(self, handle: SlackHandle) -> bool:
        shown = [m for m in self._thread(handle) if m.text or m.markdown]
        drafts = [m for m in shown
                  if (m.markdown or m.text).startswith("_⏳") or CURSOR_TAIL.search(m.markdown or m.text)]
        return (bool(shown) and not drafts) or bool(self.slack.response_url_posts(handle.response_url))

    async def final_reply(self, handle: SlackHandle) -> Reply:
        await self.slack.wait_until(lambda: self._settled(handle), WAIT_S, what=f"a settled reply in {handle.channel}")
        await await_answer_tasks(self.service)
        messages = [unescape_slack(m.markdown, markdown=True) if m.markdown is not None
                    else unescape_slack(m.text, markdown=False) for m in self._thread(handle) if m.text or m.markdown]
        messages += [unescape_slack(str(body.get("text", "")), markdown=False)
                     for body in self.slack.response_url_posts(handle.response_url)]
        images = [upload.bytes for upload in self.slack.uploads.values()
                  if upload.completed and upload.channel_id == handle.channel]
        return Reply(messages, images)

    def _calls(self, handle: SlackHandle) -> list[dict[str, Any]]:
        """The parameters of every Web API call about the command's channel and every response_url post."""
        calls = [c.params for c in self.slack.requests
                 if c.params.get("channel") == handle.channel or c.params.get("channel_id") == handle.channel]
        return calls + self.slack.response_url_posts(handle.response_url)

    def sent_texts(self, handle: SlackHandle) -> list[str]:
        texts = []
        for params in self._calls(handle):
            texts += [str(params["text"])] if params.get("text") else []
            texts += [str(block.get("text")) for block in params.get("blocks") or [] if block.get("type") == "markdown"]
        return texts

    def views(self, handle: SlackHandle) -> list[str]:
        first = self._thread(handle)[0]
        return [CURSOR_TAIL.sub("", unescape_slack(markdown, markdown=True))
                for markdown in first.markdown_history if markdown is not None]

    def shown(self, model_text: str) -> str:
        return model_text

    def assert_mention_safe(self, handle: SlackHandle) -> None:
        fields = ("text", "blocks", "initial_comment")
        received = handle.ack_texts + [json.dumps({key: params.get(key) for key in fields}, ensure_ascii=False)
                                       for params in self._calls(handle)]
        live = {token for text in received for token in re.findall(r"<[!@#][^>]*>", text)}
        # The parent message names who asked (`<@asker> used /ask`): the bot's own words, about the asker.
        assert live <= {f"<@{SLACK_ASKER}>"}, f"live Slack mentions reached Slack: {sorted(live)}"


class SlackHttpDriver(SlackDriver):
    """Slack in HTTP mode: the same adapter behind signed POSTs to the bot's `/slack/events`."""

    name = "slack-http"

    def settings_overrides(self) -> dict[str, Any]:
        return {"slack_app_token": None, "slack_signing_secret": SIGNING_SECRET}

    async def send(self, command: str, prompt: str, key: str) -> SlackHandle:
        channel, response_url = f"C0{key.upper()}", self.slack.new_response_url()
        body = slash_command_form(command=f"/{command}", text=prompt, channel_id=channel, user_id=SLACK_ASKER,
                                  response_url=response_url)
        url = f"http://127.0.0.1:{self.service.http_port}/slack/events"
        async with aiohttp.ClientSession() as session, \
                session.post(url, data=body, headers=signed_headers(SIGNING_SECRET, body)) as response:
            assert response.status == 200
            ack = await response.text()
        return SlackHandle(channel, response_url, [ack] if ack else [])


class DiscordDriver:
    """Discord: slash commands as gateway interactions, answers in the interaction's response and follow-ups."""

    name = "discord"
    limit: int | None = 2000  # a message's `content`
    error_mark = "⚠️"

    def __init__(self) -> None:
        self.discord: FakeDiscord
        self.service: BotService
        self._saved: Any = None
        self._users = iter(range(900, 10_000))

    async def start(self, replicate: FakeReplicate, workdir: Path) -> None:
        self.discord = await FakeDiscord(token=DISCORD_TOKEN, application_id=APPLICATION_ID,
                                         guilds={GUILD: [CHANNEL]}, privileged_intents=PRIVILEGED_INTENTS).start()
        self._saved = redirect_snapshot()
        self.service = BotService(bot_settings(replicate, None, self.discord), POLICY)
        await self.service.start()
        await self.discord.wait_for_ready(1, timeout=WAIT_S)

    async def close(self) -> None:
        await stop_service(self.service)
        restore_redirect(self._saved)
        await self.discord.close()

    def errors(self) -> list[Any]:
        return list(self.discord.fake_errors)

    async def send(self, command: str, prompt: str, key: str) -> SentInteraction:
        return await self.discord.send_interaction(command, {"prompt": prompt}, user_id=next(self._users))

    def _messages(self, sent: SentInteraction) -> list[StoredMessage]:
        """The interaction's visible messages, then any the bot sent the user elsewhere (channel, DM)."""
        state = self.discord.interactions[sent.token]
        own = [m for m in ([state.original] if state.original else []) + list(state.followups) if not m.deleted]
        elsewhere = [m for m in self.discord.messages.values()
                     if m.token is None and not m.deleted and f"<@{sent.user_id}>" in m.content]
        return own + elsewhere

    def _settled(self, sent: SentInteraction) -> bool:
        messages = self._messages(sent)
        return bool(messages) and not any(m.loading or m.content.startswith("⏳") or CURSOR_TAIL.search(m.content)
                                          for m in messages)

    async def final_reply(self, sent: SentInteraction) -> Reply:
        await self.discord.wait_until(lambda: self._settled(sent), WAIT_S, what=f"a settled reply to {sent.id}")
        await await_answer_tasks(self.service)
        messages = self._messages(sent)
        return Reply([m.content for m in messages if m.content],
                     [attachment.data for m in messages for attachment in m.attachments])

    def _bodies(self, sent: SentInteraction) -> list[dict[str, Any]]:
        """Every send or edit with content made for the command: its callback and webhook, and the channel or
        DM messages that name its user."""
        return [body for request, body in bodies_with_content(self.discord.requests)
                if sent.token in request.path or f"<@{sent.user_id}>" in str(body.get("content"))]

    def sent_texts(self, sent: SentInteraction) -> list[str]:
        return [str(body["content"]) for body in self._bodies(sent)]

    def views(self, sent: SentInteraction) -> list[str]:
        original = self.discord.interactions[sent.token].original
        assert original is not None
        return [CURSOR_TAIL.sub("", str(op.payload["content"])) for op in original.history if op.payload.get("content")]

    def shown(self, model_text: str) -> str:
        return model_text

    def assert_mention_safe(self, sent: SentInteraction) -> None:
        bodies = self._bodies(sent)
        assert bodies, "nothing was sent"
        unsafe = [body.get("allowed_mentions") for body in bodies if body.get("allowed_mentions") != NO_MENTIONS]
        assert not unsafe, f"sends or edits without allowed_mentions={NO_MENTIONS}: {unsafe}"
        pinging = [m.content for m in self._messages(sent) if m.pings]
        assert not pinging, f"Discord would ping for: {pinging}"


@dataclass
class ConsoleHandle:
    out: RecordingOutput
    image_dir: Path


class RecordingOutput(io.StringIO):
    """The terminal: keeps each write, so what the reader saw over time can be replayed."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def console_answer(output: str) -> str:
    """The console's output without its status lines (`· …`) and the final newline."""
    lines = output.split("\n")
    while lines and lines[0].startswith("· "):
        lines.pop(0)
    return "\n".join(lines).rstrip("\n")


def printable(text: str) -> str:
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


class ConsoleDriver:
    """The terminal adapter, in-process, one `ConsoleAdapter` per command writing to its own output."""

    name = "console"
    limit: int | None = None
    error_mark = "✗"

    def __init__(self) -> None:
        self.resources: CoreResources
        self.workdir: Path

    async def start(self, replicate: FakeReplicate, workdir: Path) -> None:
        self.workdir = workdir
        self.resources = create_core(bot_settings(replicate, None, None), POLICY)
        await self.resources.load_models()

    async def close(self) -> None:
        await self.resources.core.drain(0)
        await self.resources.aclose()

    def errors(self) -> list[Any]:
        return []

    async def send(self, command: str, prompt: str, key: str) -> ConsoleHandle:
        handle = ConsoleHandle(RecordingOutput(), self.workdir / key)
        await ConsoleAdapter(self.resources.core, handle.out, handle.image_dir).handle_line(f"/{command} {prompt}")
        return handle

    async def final_reply(self, handle: ConsoleHandle) -> Reply:
        images = [path.read_bytes() for path in sorted(handle.image_dir.iterdir())] if handle.image_dir.exists() else []
        answer = console_answer(handle.out.getvalue())
        return Reply([answer] if answer else [], images)

    def sent_texts(self, handle: ConsoleHandle) -> list[str]:
        return [handle.out.getvalue()]

    def views(self, handle: ConsoleHandle) -> list[str]:
        """Each status line as it was printed, and the answer as it stood after each write."""
        writes = handle.out.writes
        return [write.strip() if write.startswith("· ") else console_answer("".join(writes[: index + 1]))
                for index, write in enumerate(writes)]

    def shown(self, model_text: str) -> str:
        return printable(model_text)

    def assert_mention_safe(self, handle: ConsoleHandle) -> None:
        output = handle.out.getvalue()
        controls = sorted({f"U+{ord(ch):04X}" for ch in output
                           if ch not in "\n\t" and unicodedata.category(ch) == "Cc"})
        assert not controls, f"control characters reached the terminal: {controls}"


DRIVERS: tuple[type[SlackDriver | DiscordDriver | ConsoleDriver], ...] = (
    SlackDriver, SlackHttpDriver, DiscordDriver, ConsoleDriver)
PLATFORM_NAMES = [driver.name for driver in DRIVERS]


# --- running the scenarios -------------------------------------------------------------------------


@dataclass
class Outcome:
    driver: PlatformDriver
    marker: str  # in the command's prompt, so its predictions can be told apart (no marker holds another)
    handle: Any = None
    reply: Reply | None = None
    failure: BaseException | None = None

    def final(self) -> Reply:
        if self.failure is not None:
            raise AssertionError(f"{self.driver.name}: no final reply could be read") from self.failure
        assert self.reply is not None
        return self.reply


class Contract:
    """The fakes and every platform's bot, started once; each scenario is run once, on every platform at once."""

    def __init__(self, replicate: FakeReplicate, drivers: dict[str, PlatformDriver]) -> None:
        self.replicate = replicate
        self.drivers = drivers
        self._outcomes: dict[str, dict[str, Outcome]] = {}
        self._lock = asyncio.Lock()

    async def outcome(self, scenario: Scenario, platform: str) -> Outcome:
        """Run the scenarios up to `scenario`, in `SCENARIOS` order whatever order the tests come in: each
        scripts the shared fake Replicate, and Slack's per-workspace edit budget is spent the same way every time."""
        async with self._lock:
            for earlier in SCENARIOS[: SCENARIOS.index(scenario) + 1]:
                if earlier.name not in self._outcomes:
                    self._outcomes[earlier.name] = await self._run(earlier)
        return self._outcomes[scenario.name][platform]

    async def _run(self, scenario: Scenario) -> dict[str, Outcome]:
        scenario.arrange(self.replicate, len(self.drivers))
        outcomes = {name: Outcome(driver, f"{scenario.name}{name}end".replace("_", "").replace("-", ""))
                    for name, driver in self.drivers.items()}

        async def one(outcome: Outcome) -> None:
            try:
                prompt = f"contract {outcome.marker} please"
                outcome.handle = await outcome.driver.send(scenario.command, prompt, outcome.marker)
                outcome.reply = await outcome.driver.final_reply(outcome.handle)
            except Exception as error:  # re-raised by this platform's tests; the others still report
                outcome.failure = error

        await asyncio.gather(*(one(outcome) for outcome in outcomes.values()))
        return outcomes

    def predictions_of(self, outcome: Outcome) -> list[Any]:
        return [p for p in self.replicate.creates if outcome.marker in json.dumps(p.input)]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def contract(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Contract]:
    replicate = await FakeReplicate(api_token=REPLICATE_TOKEN).start()
    default_models(replicate)
    drivers: dict[str, PlatformDriver] = {driver.name: driver() for driver in DRIVERS}
    started: list[PlatformDriver] = []
    try:
        for driver in drivers.values():
            await driver.start(replicate, tmp_path_factory.mktemp(driver.name))
            started.append(driver)
        yield Contract(replicate, drivers)
    finally:
        for driver in reversed(started):
            await driver.close()
        await replicate.close()
    assert replicate.fake_errors == []
    assert all(driver.errors() == [] for driver in started), {d.name: d.errors() for d in started}


def cases(scenarios: list[Scenario] = SCENARIOS, known_bugs: dict[tuple[str, str], str] | None = None) -> list[Any]:
    """Every scenario on every platform; `known_bugs` marks (scenario, platform) pairs that fail today."""
    bugs = known_bugs or {}
    return [pytest.param(scenario, platform, id=f"{scenario.name}-{platform}",
                         marks=[pytest.mark.xfail(strict=True, reason=bugs[scenario.name, platform])]
                         if (scenario.name, platform) in bugs else [])
            for scenario in scenarios for platform in PLATFORM_NAMES]


# --- text helpers ------------------------------------------------------------------------------------


def rejoin(messages: list[str]) -> str:
    """The messages read as one text: where a split closed a code block and the next message reopened it,
    both fence lines go (the scenarios never put two fence lines next to each other themselves)."""
    lines_of = [message.strip("\n").split("\n") for message in messages]
    for before, after in itertools.pairwise(lines_of):
        if before and after and FENCE.match(before[-1]) and FENCE.match(after[0]):
            before.pop()
            after.pop(0)
    return normalised("\n".join("\n".join(lines) for lines in lines_of))


def normalised(text: str) -> str:
    """Line endings as a split may leave them: trailing spaces and runs of blank lines don't count."""
    lines = [line.rstrip() for line in text.strip().split("\n")]
    return re.sub(r"\n{2,}", "\n", "\n".join(lines))


# --- the promises ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "platform"), cases())
async def test_exactly_one_final_reply(contract: Contract, scenario: Scenario, platform: str) -> None:
    """The answer or one clear error, never both, never none (a half-streamed answer keeps its text)."""
    outcome = await contract.outcome(scenario, platform)
    reply, driver = outcome.final(), outcome.driver
    everything = "\n".join(reply.messages)
    errors = everything.count(driver.error_mark)

    assert reply.messages, "no reply at all"
    if scenario.expect in ("error", "text_then_error"):
        assert errors == 1, f"{errors} error replies: {reply.messages}"
    else:
        assert errors == 0, f"an error beside the answer: {reply.messages}"
    if scenario.expect in ("answer", "text_then_error"):
        first_line = driver.shown(scenario.model_text).split("\n")[0]
        assert everything.count(first_line) == 1, f"the answer shown {everything.count(first_line)} times"
    if scenario.expect == "images":
        assert reply.images == [PNG]
    else:
        assert reply.images == []


@pytest.mark.parametrize(("scenario", "platform"), cases())
async def test_every_message_fits_and_keeps_its_code_blocks_closed(
    contract: Contract, scenario: Scenario, platform: str
) -> None:
    outcome = await contract.outcome(scenario, platform)
    reply, driver = outcome.final(), outcome.driver

    if driver.limit is None:
        return  # a terminal: no messages, and Markdown is shown as typed
    lengths = [len(text) for text in driver.sent_texts(outcome.handle)]
    assert lengths and max(lengths) <= driver.limit, f"message lengths {lengths} (limit {driver.limit})"
    unbalanced = [message[:80] for message in reply.messages if fence_lines(message) % 2]
    assert not unbalanced, f"messages with an unclosed code block: {unbalanced}"
    if scenario.name == "long":
        assert len(reply.messages) > 1 and any(fence_lines(message) for message in reply.messages[1:])


@pytest.mark.parametrize(("scenario", "platform"), cases())
async def test_final_text_is_the_models_text(contract: Contract, scenario: Scenario, platform: str) -> None:
    """What the user reads is what the model wrote (Replicate's words, for a rejected input), escaping undone."""
    outcome = await contract.outcome(scenario, platform)
    reply, driver = outcome.final(), outcome.driver
    everything = "\n".join(reply.messages)

    if scenario.expect == "answer":
        assert rejoin(reply.messages) == normalised(driver.shown(scenario.model_text))
    elif scenario.expect == "text_then_error":
        assert normalised(driver.shown(scenario.model_text)) in normalised(everything)
    if scenario.error_quote:
        assert scenario.error_quote in everything, f"Replicate's words not shown literally: {reply.messages}"


@pytest.mark.parametrize(("scenario", "platform"), cases())
async def test_nothing_pings_anyone(contract: Contract, scenario: Scenario, platform: str) -> None:
    outcome = await contract.outcome(scenario, platform)
    outcome.final()

    outcome.driver.assert_mention_safe(outcome.handle)


@pytest.mark.parametrize(("scenario", "platform"), cases())
async def test_nothing_left_running_on_replicate(contract: Contract, scenario: Scenario, platform: str) -> None:
    outcome = await contract.outcome(scenario, platform)
    outcome.final()
    created = contract.predictions_of(outcome)

    await contract.replicate.wait_until(lambda: all(p.done for p in created), WAIT_S,
                                        what=f"{platform}'s predictions of {scenario.name} ended")
    assert len(created) == (0 if scenario.name == "rejected_input" else 1)
    if scenario.name == "timed_out":
        assert [p.status for p in created] == ["canceled"]


@pytest.mark.parametrize(("scenario", "platform"), cases([STREAMED]))
async def test_status_then_text_then_the_final_text(contract: Contract, scenario: Scenario, platform: str) -> None:
    """A cold start is said first, text shows while the model writes, and the whole answer lands last."""
    outcome = await contract.outcome(scenario, platform)
    outcome.final()
    views = outcome.driver.views(outcome.handle)
    final = normalised(scenario.model_text)

    status_at = next(i for i, view in enumerate(views) if STATUS_WORDS in view)
    partial_at = next(i for i, view in enumerate(views)
                      if STATUS_WORDS not in view and view.strip() and final.startswith(normalised(view))
                      and normalised(view) != final)
    assert status_at < partial_at < len(views) - 1
    assert normalised(views[-1]) == final
