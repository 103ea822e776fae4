"""Self-test of `FakeDiscord`: the real discord.py (no mocks) logs in, syncs, answers slash commands, survives
429s and dropped gateway sockets against it. If these pass, adapter tests built on the fake test discord.py's
real behaviour, not our idea of it."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from aiohttp import web
from discord import app_commands
from discord.gateway import DiscordWebSocket

from tests.fakes.discord_server import FakeDiscord

TOKEN = "fake-bot-token"
GUILD, CHANNEL, USER = 222, 333, 444


@dataclass
class AskBot:
    """A minimal real discord.py bot: `/ask` defers, edits the original, then follows up with a file;
    `/think` defers and answers only with a follow-up (which Discord turns into the original); `/imagine`
    edits the original with two attachments and opens a thread on it."""

    client: discord.Client
    tree: app_commands.CommandTree
    errors: list[BaseException] = field(default_factory=list)
    seen: list[discord.Interaction] = field(default_factory=list)
    errored: asyncio.Event = field(default_factory=asyncio.Event)


def build_bot() -> AskBot:
    client = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(client)
    bot = AskBot(client, tree)

    @tree.command(name="ask", description="Ask the model")
    @app_commands.describe(prompt="What to ask")
    async def ask(interaction: discord.Interaction, prompt: str) -> None:
        bot.seen.append(interaction)
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=f"You asked: {prompt}",
                                                 allowed_mentions=discord.AllowedMentions.none())
        await interaction.followup.send(content="here is a file", file=discord.File(io.BytesIO(b"png"), "a.png"))

    @tree.command(name="think", description="Defer, then answer with a follow-up")
    async def think(interaction: discord.Interaction) -> None:
        bot.seen.append(interaction)
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(content="done thinking", allowed_mentions=discord.AllowedMentions.none())

    @tree.command(name="imagine", description="Images as attachments, then a thread on the answer")
    async def imagine(interaction: discord.Interaction, prompt: str, seed: int = 0) -> None:
        bot.seen.append(interaction)
        await interaction.response.defer(thinking=True)
        files = [discord.File(io.BytesIO(b"img1"), "1.png"), discord.File(io.BytesIO(b"img2"), "2.webp")]
        answer = await interaction.edit_original_response(content=f"{prompt} (seed {seed})", attachments=files,
                                                          allowed_mentions=discord.AllowedMentions.none())
        assert isinstance(interaction.channel, discord.TextChannel)
        thread = await interaction.channel.create_thread(name=prompt, message=answer)
        await thread.send("more in here", allowed_mentions=discord.AllowedMentions.none())

    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        bot.errors.append(error.original if isinstance(error, app_commands.CommandInvokeError) else error)
        bot.errored.set()

    async def setup_hook() -> None:
        guild = discord.Object(GUILD)
        tree.copy_global_to(guild=guild)
        await tree.sync(guild=guild)  # guild commands appear at once
        await tree.sync()  # global ones are what DMs use

    tree.error(on_error)
    # discord.py awaits `client.setup_hook()` once at login; setting it on the instance spares a Client subclass.
    client.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, application_id=111, bot_user_id=111, guilds={GUILD: [CHANNEL]}) as server:
        yield server
        assert server.fake_errors == []


@pytest.fixture
def redirect_discord(fake: FakeDiscord) -> Iterator[None]:
    """Point discord.py at the fake, and put it back so no test leaks the redirect."""
    base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    yield
    discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


@pytest.fixture
async def bot(fake: FakeDiscord, redirect_discord: None) -> AsyncIterator[AskBot]:
    bot = build_bot()
    task = asyncio.create_task(bot.client.start(TOKEN))
    ready = asyncio.ensure_future(fake.wait_for_ready())
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:  # login failed: show discord.py's error rather than a timeout
        ready.cancel()
        task.result()
    await ready
    yield bot
    await bot.client.close()
    await asyncio.wait_for(task, 10)
    assert bot.errors == []


async def answered(fake: FakeDiscord, token: str, followups: int = 1) -> None:
    await fake.wait_until(lambda: len(fake.followups(token)) >= followups, what="the follow-up")


async def test_login_sync_and_ask_flow(fake: FakeDiscord, bot: AskBot) -> None:
    first = [(r.method, r.path) for r in fake.requests[:2]]
    assert first == [("GET", "/users/@me"), ("GET", "/oauth2/applications/@me")]
    assert all(r.headers["Authorization"] == f"Bot {TOKEN}" for r in fake.requests[:4])
    assert [put.guild_id for put in fake.command_puts] == [GUILD, None]
    for put in fake.command_puts:
        assert sorted(c["name"] for c in put.body) == ["ask", "imagine", "think"]
        ask = next(c for c in put.body if c["name"] == "ask")
        assert [(o["name"], o["type"], o["required"]) for o in ask["options"]] == [("prompt", 3, True)]
    # GET returns what was PUT (with ids), so an adapter can skip an unchanged re-registration.
    assert await bot.client.http.get_guild_commands(111, GUILD) == fake.commands(GUILD)
    assert fake.gateway.log[0].query == {"v": "10", "encoding": "json", "compress": "zlib-stream"}
    assert fake.gateway.identify_payloads[0]["intents"] == discord.Intents.default().value

    sent = await fake.send_interaction(name="ask", options={"prompt": "hi"}, guild_id=GUILD, channel_id=CHANNEL,
                                       user_id=USER)
    await answered(fake, sent.token)

    assert sent.payload["data"]["guild_id"] == str(GUILD)
    assert sent.payload["data"]["id"] == fake.commands(GUILD)[0]["id"]
    [callback] = fake.callbacks
    assert (callback.interaction_id, callback.type, callback.data) == (sent.id, 5, {})
    original = fake.original_message(sent.token)
    assert original is not None and not original.loading and not original.ephemeral
    assert original.content == "You asked: hi"
    assert original.allowed_mentions == {"parse": []}
    assert [op.kind for op in original.history] == ["create", "edit"]
    [followup] = fake.followups(sent.token)
    assert followup.content == "here is a file"
    assert [(a.filename, a.data) for a in followup.attachments] == [("a.png", b"png")]
    assert fake.requests_to("POST", r"^/webhooks/111/")[0].files == [("a.png", b"png", "application/octet-stream")]
    interaction = bot.seen[0]
    assert interaction.guild_id == GUILD and interaction.channel_id == CHANNEL and interaction.user.id == USER
    assert isinstance(interaction.channel, discord.TextChannel)


async def test_rate_limited_edit_is_retried_after_retry_after(fake: FakeDiscord, bot: AskBot) -> None:
    fake.rate_limit("PATCH", r"/messages/@original$", times=1, retry_after=0.3)
    sent = await fake.send_interaction(name="ask", options={"prompt": "slow"})
    await answered(fake, sent.token)

    patches = fake.requests_to("PATCH", r"/messages/@original$")
    assert [p.status for p in patches] == [429, 200]
    assert patches[1].at - patches[0].at >= 0.3
    original = fake.original_message(sent.token)
    assert original is not None and original.content == "You asked: slow"


async def test_dropped_gateway_resumes_and_replays_missed_events(fake: FakeDiscord, bot: AskBot) -> None:
    await fake.drop_gateway(4000)
    missed = await fake.send_interaction(name="ask", options={"prompt": "while down"})
    await fake.wait_for_ready(2)
    assert (fake.identify_count, fake.resume_count, fake.gateway_connections) == (1, 1, 2)
    assert fake.gateway.log[0].close_code == 4000 and fake.gateway.log[1].resumed
    await answered(fake, missed.token)

    after = await fake.send_interaction(name="ask", options={"prompt": "after"})
    await answered(fake, after.token)
    original = fake.original_message(after.token)
    assert original is not None and original.content == "You asked: after"


async def test_ended_session_makes_discord_py_identify_again(fake: FakeDiscord, bot: AskBot) -> None:
    await fake.drop_gateway(4009)  # session timed out: the RESUME is refused with op 9
    await fake.wait_for_ready(2)
    assert (fake.identify_count, fake.resume_count) == (2, 0)
    sent = await fake.send_interaction(name="ask", options={"prompt": "fresh"})
    await answered(fake, sent.token)


async def test_an_event_goes_to_the_session_it_is_dispatched_on(fake: FakeDiscord, bot: AskBot) -> None:
    assert fake.gateway.current is not None
    first_session = fake.gateway.current.id
    other = build_bot()  # a second process's session (the same shard: both could be sent everything)
    task = asyncio.create_task(other.client.start(TOKEN))
    try:
        await fake.wait_for_ready(2)
        assert fake.gateway.current is not None and fake.gateway.current.id != first_session
        sent = await fake.send_interaction(name="ask", options={"prompt": "hi"}, session=fake.gateway.current.id)
        await answered(fake, sent.token)
        assert [i.id for i in other.seen] == [sent.id] and bot.seen == []

        fake.gateway.dispatch("INTERACTION_CREATE", sent.payload, session=first_session)  # the same, redelivered
        await asyncio.wait_for(bot.errored.wait(), 5)  # its defer refused: set by discord.py's error hook
        assert [i.id for i in bot.seen] == [sent.id]
        assert isinstance(bot.errors[0], discord.HTTPException) and bot.errors[0].code == 40060
        bot.errors.clear()  # what a second acknowledgement gets: "Interaction has already been acknowledged"
        with pytest.raises(RuntimeError, match="no gateway session"):
            fake.gateway.dispatch("INTERACTION_CREATE", sent.payload, session="no-such-session")
    finally:
        await other.client.close()
        await asyncio.wait_for(task, 10)


async def test_dm_interaction(fake: FakeDiscord, bot: AskBot) -> None:
    sent = await fake.send_interaction(name="ask", options={"prompt": "psst"}, user_id=USER, dm=True)
    await answered(fake, sent.token)

    assert "member" not in sent.payload and sent.payload["user"]["id"] == str(USER)
    assert sent.payload["context"] == 1 and "guild_id" not in sent.payload["data"]
    original = fake.original_message(sent.token)
    assert original is not None and original.content == "You asked: psst"
    assert original.channel_id == sent.channel_id and original.guild_id is None
    interaction = bot.seen[0]
    assert interaction.guild is None and isinstance(interaction.channel, discord.DMChannel)


async def test_first_followup_after_defer_replaces_the_thinking_message(fake: FakeDiscord, bot: AskBot) -> None:
    sent = await fake.send_interaction(name="think")
    await fake.wait_until(lambda: (shown := fake.original_message(sent.token)) is not None and not shown.loading)
    original = fake.original_message(sent.token)
    assert original is not None and original.content == "done thinking" and not original.ephemeral
    assert fake.followups(sent.token) == []


async def test_edit_with_attachments_and_thread_on_the_answer(fake: FakeDiscord, bot: AskBot) -> None:
    sent = await fake.send_interaction(name="imagine", options={"prompt": "cat", "seed": 42})
    assert sent.payload["data"]["options"] == [{"name": "prompt", "type": 3, "value": "cat"},
                                               {"name": "seed", "type": 4, "value": 42}]
    await fake.wait_until(lambda: len(fake.message_ops) == 3, what="defer, edit, post in the thread")
    original = fake.original_message(sent.token)
    assert original is not None and original.content == "cat (seed 42)" and original.thread_id == original.id
    assert [(a.filename, a.data) for a in original.attachments] == [("1.png", b"img1"), ("2.webp", b"img2")]
    assert [m.content for m in fake.channel_messages(original.id)] == ["more in here"]
    patch = fake.requests_to("PATCH", r"/messages/@original$")[0]
    assert [f[0] for f in patch.files] == ["1.png", "2.webp"] and patch.json["attachments"][0]["id"] == 0


async def test_late_acknowledgement_is_unknown_interaction(fake: FakeDiscord, bot: AskBot) -> None:
    fake.ack_deadline = 0.0  # every answer is now later than Discord's 3 s
    await fake.send_interaction(name="ask", options={"prompt": "late"})
    # The fake cannot see discord.py's side, so wait on the bot's own signal (wait_until re-checks only
    # when something reaches the fake).
    await asyncio.wait_for(bot.errored.wait(), 5)
    [error] = bot.errors
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert fake.callbacks == []
    bot.errors.clear()


async def test_channel_posts_threads_mentions_and_denials(fake: FakeDiscord, bot: AskBot) -> None:
    channel = bot.client.get_channel(CHANNEL)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("hello @everyone")
    [stored] = fake.channel_messages(CHANNEL)
    assert stored.id == message.id and stored.mention_everyone and stored.pings  # no allowed_mentions: pings
    quiet = await channel.send("hi <@444>", allowed_mentions=discord.AllowedMentions.none())
    assert not fake.messages[quiet.id].pings

    thread = await channel.create_thread(name="answer", message=message)
    assert thread.id == message.id and thread.type is discord.ChannelType.public_thread
    await thread.send("in the thread")
    assert [m.content for m in fake.channel_messages(thread.id)] == ["in the thread"]
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.code == 50035

    fake.deny_channel(CHANNEL)
    with pytest.raises(discord.Forbidden) as denied:
        await channel.send("nope")
    assert denied.value.code == 50013
    sent = await fake.send_interaction(name="ask", options={"prompt": "where"})
    assert not discord.Permissions(int(sent.payload["app_permissions"])).send_messages
    await answered(fake, sent.token)  # interaction replies don't need channel permissions


async def test_wire_format_auth_and_429_shape(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_url}/users/@me") as response:
            assert response.status == 401
            assert response.headers["Content-Type"] == "application/json"
            assert await response.json() == {"message": "401: Unauthorized", "code": 0}
        auth = {"Authorization": f"Bot {TOKEN}"}
        async with http.get(f"{fake.api_url}/users/@me", headers=auth) as response:
            assert response.headers["Content-Type"] == "application/json"  # exactly: no charset
            assert int(response.headers["X-RateLimit-Remaining"]) > 0
            user = await response.json()
            assert (user["id"], user["discriminator"], user["bot"]) == ("111", "0", True)
        fake.rate_limit("GET", r"^/gateway/bot$", retry_after=1.5)
        async with http.get(f"{fake.api_url}/gateway/bot", headers=auth) as response:
            assert response.status == 429 and response.headers["Via"] and response.headers["Retry-After"] == "2"
            assert response.headers["X-RateLimit-Scope"] == "user"
            assert await response.json() == {"message": "You are being rate limited.", "retry_after": 1.5,
                                             "global": False}
        async with http.get(f"{fake.api_url}/gateway/bot", headers=auth) as response:
            assert (await response.json())["url"] == fake.gateway_url


async def test_scripted_failures_answer_discords_error_body(fake: FakeDiscord) -> None:
    fake.fail("POST", rf"^/channels/{CHANNEL}/messages$", 403, 50013, "Missing Permissions")
    fake.fail("GET", r"^/users/@me$", 503)
    auth = {"Authorization": f"Bot {TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{fake.api_url}/channels/{CHANNEL}/messages", json={"content": "x"},
                             headers=auth) as response:
            assert response.status == 403 and response.headers["Content-Type"] == "application/json"
            assert response.headers["Via"] and await response.json() == {"message": "Missing Permissions",
                                                                         "code": 50013}
        async with http.get(f"{fake.api_url}/users/@me", headers=auth) as response:
            assert response.status == 503
            assert await response.json() == {"message": "503: Service Unavailable", "code": 0}
        async with http.post(f"{fake.api_url}/channels/{CHANNEL}/messages", json={"content": "x"},
                             headers=auth) as response:
            assert response.status == 200
    assert [r.status for r in fake.requests_to("POST", rf"^/channels/{CHANNEL}/messages$")] == [403, 200]
    assert fake.channel_messages(CHANNEL)[0].content == "x"  # only the second post happened
    with pytest.raises(ValueError, match="rate_limit"):
        fake.fail("GET", r"^/users/@me$", 429)


async def test_a_bug_in_the_fake_is_a_fake_error() -> None:
    async def broken(request: web.Request) -> web.Response:
        raise ZeroDivisionError("division by zero")

    fake = FakeDiscord(token=TOKEN, guilds={GUILD: [CHANNEL]})
    fake._typing = fake._cdn = broken  # type: ignore[method-assign]  # broken handlers in the fake itself
    async with fake, aiohttp.ClientSession() as http:
        async with http.post(f"{fake.api_url}/channels/{CHANNEL}/typing",
                             headers={"Authorization": f"Bot {TOKEN}"}) as response:
            assert response.status == 500
            assert await response.json() == {"message": "500: Internal Server Error", "code": 0}
        async with http.get(f"{fake.base_url}/attachments/{CHANNEL}/1/a.png") as response:  # outside the API
            assert response.status == 500
    assert fake.fake_errors == [f"POST /channels/{CHANNEL}/typing: ZeroDivisionError('division by zero')",
                                f"GET /attachments/{CHANNEL}/1/a.png: ZeroDivisionError('division by zero')"]


async def test_two_hundred_concurrent_interactions(fake: FakeDiscord, bot: AskBot) -> None:
    started = time.monotonic()
    sent = [await fake.send_interaction(name="ask", options={"prompt": str(i)}) for i in range(200)]
    await fake.wait_until(lambda: all(fake.followups(s.token) for s in sent), timeout=60, what="200 answers")
    assert len(fake.callbacks) == 200
    contents = {message.content for s in sent if (message := fake.original_message(s.token))}
    assert contents == {f"You asked: {i}" for i in range(200)}
    assert time.monotonic() - started < 30


# --- sharding ------------------------------------------------------------------------------------------

# Guild ids whose events Discord sends to shard 0 and shard 1 of 2: (guild_id >> 22) % 2.
GUILD_ON_SHARD_0, GUILD_ON_SHARD_1 = 10 << 22, 11 << 22
SHARDED_GUILDS = {GUILD_ON_SHARD_0: [5001], GUILD_ON_SHARD_1: [5002]}


@asynccontextmanager
async def sharded_fake(**options: Any) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN, application_id=111, bot_user_id=111, guilds=SHARDED_GUILDS,
                           **options) as server:
        base, gateway = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = server.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
        try:
            yield server
        finally:
            discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = base, gateway
        assert server.fake_errors == []


@asynccontextmanager
async def sharded_clients(*shard_ids: list[int] | None, shard_count: int | None = None) -> AsyncIterator[None]:
    """One real `AutoShardedClient` per entry (None: every shard; no count: `GET /gateway/bot` decides), started."""
    clients = [sharded_client(ids, shard_count) for ids in shard_ids]
    tasks = [asyncio.create_task(client.start(TOKEN)) for client in clients]
    try:
        yield
    finally:
        for client in clients:
            await client.close()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)


def sharded_client(shard_ids: list[int] | None, shard_count: int | None) -> discord.AutoShardedClient:
    intents = discord.Intents.default()
    if shard_ids is None:
        return discord.AutoShardedClient(intents=intents, shard_count=shard_count)
    return discord.AutoShardedClient(intents=intents, shard_count=shard_count, shard_ids=shard_ids)


def interaction_ids(session: Any) -> list[str]:
    return [event["d"]["id"] for event in session.events if event["t"] == "INTERACTION_CREATE"]


async def test_gateway_bot_recommends_shards_and_each_shard_gets_its_guilds_and_dms_go_to_shard_0() -> None:
    async with sharded_fake(recommended_shards=2, max_concurrency=2) as fake, sharded_clients(None):
        await fake.wait_for_ready(2)
        assert fake.identified_shards() == [[0, 2], [1, 2]]  # discord.py asked GET /gateway/bot how many
        shard_0, shard_1 = fake.gateway.session_of_shard(0), fake.gateway.session_of_shard(1)
        assert shard_0 is not None and shard_1 is not None
        for session, guild in ((shard_0, GUILD_ON_SHARD_0), (shard_1, GUILD_ON_SHARD_1)):
            ready, *creates = [event for event in session.events if event["t"] in ("READY", "GUILD_CREATE")]
            assert ready["d"]["shard"] == session.shard and ready["d"]["guilds"] == [
                {"id": str(guild), "unavailable": True}]
            assert [create["d"]["id"] for create in creates] == [str(guild)]

        on_0 = await fake.send_interaction("ask", guild_id=GUILD_ON_SHARD_0)
        on_1 = await fake.send_interaction("ask", guild_id=GUILD_ON_SHARD_1)
        in_dm = await fake.send_interaction("ask", dm=True)

        assert interaction_ids(shard_0) == [str(on_0.id), str(in_dm.id)]
        assert interaction_ids(shard_1) == [str(on_1.id)]
        limit = (await fake_gateway_bot(fake))["session_start_limit"]
        assert limit["max_concurrency"] == 2


async def fake_gateway_bot(fake: FakeDiscord) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, \
            http.get(f"{fake.api_url}/gateway/bot", headers={"Authorization": f"Bot {TOKEN}"}) as response:
        body: dict[str, Any] = await response.json()
        return body


async def test_two_sessions_of_one_shard_both_get_its_events() -> None:
    async with sharded_fake(max_concurrency=2) as fake, sharded_clients([0], [0], [1], shard_count=2):
        await fake.wait_for_ready(3)
        sessions = list(fake.gateway.sessions.values())
        assert sorted(str(session.shard) for session in sessions) == ["[0, 2]", "[0, 2]", "[1, 2]"]

        sent = await fake.send_interaction("ask", guild_id=GUILD_ON_SHARD_0)

        assert [str(sent.id) in interaction_ids(session) for session in sessions] == [
            session.shard == [0, 2] for session in sessions]


async def test_identifies_beyond_max_concurrency_per_5_s_get_op_9() -> None:
    async with sharded_fake(max_concurrency=1, enforce_identify_limit=True) as fake:
        # Two processes, each starting its own first shard at once: discord.py spaces only one process's IDENTIFYs.
        async with sharded_clients([0], [1], shard_count=2):
            await fake.wait_for_ready(1)
            await fake.wait_until(lambda: fake.gateway.rate_limited_identifies != [], what="an op 9")
        assert len(fake.gateway.rate_limited_identifies) == 1 and fake.identify_count == 1


async def test_an_identify_with_a_shard_out_of_range_is_closed_4010() -> None:
    async with sharded_fake() as fake, aiohttp.ClientSession() as http, \
            http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 0, "properties": {}, "shard": [2, 2]}})
        closing = await ws.receive()
        assert (closing.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 4010)
        assert fake.identify_count == 0
