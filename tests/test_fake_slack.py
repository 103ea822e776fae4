"""Self-test of `FakeSlack`: the real slack_sdk and bolt (no mocks) post, edit, upload, get rate-limited, answer
slash commands over Socket Mode, reconnect, and verify HTTP-mode signatures against it. If these pass, adapter
tests built on the fake test the libraries' real behaviour, not our idea of it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import ServerDisconnectedError
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.fakes.slack_server import FakeSlack, signed_headers, slash_command_form

CHANNEL = "C0CHAN"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(bot_token="xoxb-test", app_token="xapp-test", team_id="T0TEAM", bot_user_id="U0BOT",
                         bot_id="B0BOT") as server:
        yield server
        assert server.fake_errors == []
        assert server.socket.client_errors == []


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)


# --- Web API -------------------------------------------------------------------------------------------

async def test_auth_test_and_tokens(fake: FakeSlack, client: AsyncWebClient) -> None:
    auth = await client.auth_test()
    assert auth["team_id"] == "T0TEAM" and auth["user_id"] == "U0BOT" and auth["bot_id"] == "B0BOT"
    assert auth["is_enterprise_install"] is False and auth["url"].startswith("https://")
    assert fake.requests_to("auth.test")[0].headers["Authorization"] == "Bearer xoxb-test"

    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth" and bad.value.response.status_code == 200
    with pytest.raises(SlackApiError) as app_token:
        await AsyncWebClient(token=fake.app_token, base_url=fake.api_url).chat_postMessage(channel=CHANNEL, text="x")
    assert app_token.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as bot_token:
        await client.apps_connections_open(app_token=fake.bot_token)
    assert bot_token.value.response["error"] == "not_allowed_token_type"
    opened = await client.apps_connections_open(app_token=fake.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{fake.port}/socket-mode?ticket=")
    with pytest.raises(SlackApiError) as unknown:
        await client.api_call("conversations.frobnicate")
    assert unknown.value.response["error"] == "unknown_method"


async def test_post_update_thread_and_ephemeral(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    parent = await client.chat_postMessage(channel=CHANNEL, text="hi", blocks=blocks, unfurl_links=False)
    assert parent["channel"] == CHANNEL and parent["message"]["bot_id"] == "B0BOT"
    assert parent["message"]["blocks"] == blocks and parent["message"]["user"] == "U0BOT"
    reply = await client.chat_postMessage(channel=CHANNEL, text="thinking…", thread_ts=parent["ts"])
    assert reply["ts"] > parent["ts"] and reply["message"]["thread_ts"] == parent["ts"]
    nested = await client.chat_postMessage(channel=CHANNEL, text="reply to reply", thread_ts=reply["ts"])
    assert nested["message"]["thread_ts"] == parent["ts"]  # Slack keeps threads one level deep

    updated = await client.chat_update(channel=CHANNEL, ts=reply["ts"], text="the answer")
    assert updated["text"] == "the answer" and updated["ts"] == reply["ts"]
    message = fake.messages[(CHANNEL, reply["ts"])]
    assert message.history == ["thinking…", "the answer"] and len(message.edit_times) == 1
    assert [m.ts for m in fake.thread(CHANNEL, parent["ts"])] == [reply["ts"], nested["ts"]]
    assert [m.ts for m in fake.channel_messages(CHANNEL)] == [parent["ts"]]

    call = fake.requests_to("chat.postMessage")[0]  # slack_sdk sends chat.* as JSON
    assert call.content_type == "application/json" and call.params["blocks"] == blocks
    assert call.params["unfurl_links"] is False

    # The form-encoded path: blocks as a JSON string are decoded for assertions.
    await client.api_call("chat.postMessage", data={"channel": CHANNEL, "text": "form", "blocks": json.dumps(blocks)})
    form_call = fake.requests_to("chat.postMessage")[-1]
    assert form_call.content_type == "application/x-www-form-urlencoded" and form_call.params["blocks"] == blocks

    eph = await client.chat_postEphemeral(channel=CHANNEL, user="U0USER", text="only you")
    assert eph["message_ts"] and fake.ephemerals[0]["user"] == "U0USER" and fake.ephemerals[0]["text"] == "only you"


async def test_message_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="x")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y" * 4000)
    with pytest.raises(SlackApiError) as too_long:
        await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="y" * 4001)
    assert too_long.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as post_too_long:
        await client.chat_postMessage(channel=CHANNEL, text="z" * 40_001)
    assert post_too_long.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as missing_ts:
        await client.chat_update(channel=CHANNEL, ts="1.000000", text="y")
    assert missing_ts.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as no_text:  # api_call: chat_postMessage() would warn about missing text
        await client.api_call("chat.postMessage", json={"channel": CHANNEL})
    assert no_text.value.response["error"] == "no_text"
    with pytest.raises(SlackApiError) as big_section:
        await client.chat_postMessage(channel=CHANNEL, text="t",
                                      blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}])
    assert big_section.value.response["error"] == "invalid_blocks"

    fake.set_not_member("C0SECRET")
    fake.set_missing("C0GONE")
    with pytest.raises(SlackApiError) as not_member:
        await client.chat_postMessage(channel="C0SECRET", text="hello")
    assert not_member.value.response["error"] == "not_in_channel"
    with pytest.raises(SlackApiError) as gone:
        await client.chat_postMessage(channel="C0GONE", text="hello")
    assert gone.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as upload_not_member:
        await client.files_upload_v2(channel="C0SECRET", content=b"png", filename="a.png")
    assert upload_not_member.value.response["error"] == "not_in_channel"
    assert len(fake.messages) == 1


async def test_markdown_blocks_are_checked_like_slack_does(fake: FakeSlack, client: AsyncWebClient) -> None:
    markdown = [{"type": "markdown", "text": "**bold** [a](https://x.test/?a=1&b=2)"}]
    posted = await client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=markdown)
    message = fake.messages[(CHANNEL, posted["ts"])]
    assert message.blocks == markdown and message.markdown == "**bold** [a](https://x.test/?a=1&b=2)"
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="f2", blocks=[{"type": "markdown", "text": "*2*"}])
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="text only keeps the blocks")
    assert message.markdown_history == ["**bold** [a](https://x.test/?a=1&b=2)", "*2*", "*2*"]
    assert message.history == ["fallback", "f2", "text only keeps the blocks"]

    section = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    for blocks in (section, []):  # a markdown message edited into another kind
        with pytest.raises(SlackApiError) as swapped:
            await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="x", blocks=blocks)
        assert swapped.value.response["error"] == "block_mismatch"
    plain = await client.chat_postMessage(channel=CHANNEL, text="plain")
    with pytest.raises(SlackApiError) as into_markdown:  # and the other way round
        await client.chat_update(channel=CHANNEL, ts=plain["ts"], text="x", blocks=markdown)
    assert into_markdown.value.response["error"] == "block_mismatch"

    half = {"type": "markdown", "text": "m" * 6_001}
    with pytest.raises(SlackApiError) as too_long:  # 12,000 for all markdown blocks of a payload together
        await client.chat_postMessage(channel=CHANNEL, text="t", blocks=[half, half])
    assert too_long.value.response["error"] == "msg_blocks_too_long"
    await client.chat_postMessage(channel=CHANNEL, text="t", blocks=[{"type": "markdown", "text": "m" * 12_000}])
    with pytest.raises(SlackApiError) as no_text:
        await client.api_call("chat.postMessage", json={"channel": CHANNEL, "text": "t",
                                                        "blocks": [{"type": "markdown"}]})
    assert no_text.value.response["error"] == "invalid_blocks"
    assert len(fake.messages) == 3


async def test_server_errors_and_dropped_connections(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, retry_handlers=[])  # no default retry
    fake.fail("chat.postMessage", status=500, times=1)
    with pytest.raises(SlackApiError) as failed:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert failed.value.response.status_code == 500 and failed.value.response["error"] == "internal_error"
    fake.fail("chat.postMessage", times=1, drop=True)
    with pytest.raises(ServerDisconnectedError):
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert fake.messages == {}  # neither call did anything

    quick = FixedValueRetryIntervalCalculator(0.01)
    client.retry_handlers.extend([AsyncServerErrorRetryHandler(max_retry_count=3, interval_calculator=quick),
                                  AsyncConnectionErrorRetryHandler(max_retry_count=3, interval_calculator=quick)])
    fake.fail("chat.postMessage", status=503, times=1)
    fake.fail("chat.postMessage", times=1, drop=True)
    ok = await client.chat_postMessage(channel=CHANNEL, text="y")
    assert ok["ok"] and [m.text for m in fake.messages.values()] == ["y"]
    assert [(c.status, c.error) for c in fake.requests_to("chat.postMessage")][2:] == [
        (503, "service_unavailable"), (0, None), (200, None)]

    fake.fail("chat.postMessage", status=500, times=5, when=lambda params: "thread_ts" in params)  # thread replies only
    await client.chat_postMessage(channel=CHANNEL, text="top level is not affected")
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=ok["ts"])
    assert [c.status for c in fake.requests_to("chat.postMessage")][5:] == [200, 500, 500, 500, 500]


async def test_files_upload_v2(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="imagine a cat")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    result = await client.files_upload_v2(channel=CHANNEL, thread_ts=parent["ts"], file=png, filename="cat.png",
                                          title="a cat", initial_comment="seed 42", alt_txt="a cat")
    file_id = result["file"]["id"]
    assert result["files"][0]["title"] == "a cat" and result["file"]["mimetype"] == "image/png"
    upload = fake.uploads[file_id]
    assert upload.bytes == png and upload.length == len(png) and upload.completed
    assert upload.channel_id == CHANNEL and upload.thread_ts == parent["ts"] and upload.initial_comment == "seed 42"
    assert upload.upload_content_type == "application/octet-stream"  # raw bytes, not multipart
    assert [c.method for c in fake.requests[1:]] == ["files.getUploadURLExternal", "upload",
                                                  "files.completeUploadExternal"]
    get_url = fake.requests_to("files.getUploadURLExternal")[0]  # params= → query string, no body
    assert get_url.params["filename"] == "cat.png" and get_url.params["length"] == str(len(png))
    [file_message] = fake.thread(CHANNEL, parent["ts"])
    assert file_message.files == [file_id] and file_message.text == "seed 42"

    fake.fail("upload", "boom")
    with pytest.raises(SlackRequestError, match="status: 500"):
        await client.files_upload_v2(channel=CHANNEL, content=b"x", filename="x.txt")
    assert len(fake.requests_to("files.completeUploadExternal")) == 1


async def test_rate_limit_with_and_without_retry_handler(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert limited.value.response.status_code == 429 and limited.value.response["error"] == "ratelimited"
    assert limited.value.response.headers["Retry-After"] == "7"

    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    fake.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    ok = await client.chat_postMessage(channel=CHANNEL, text="y")
    assert ok["ok"] and time.monotonic() - started >= 1.0  # waits Retry-After (+ up to 1 s of jitter)
    assert [c.status for c in fake.requests_to("chat.postMessage")] == [429, 429, 200]

    fake.fail("chat.update", "internal_error", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as failed:
            await client.chat_update(channel=CHANNEL, ts=ok["ts"], text="z")
        assert failed.value.response["error"] == "internal_error"
    await client.chat_update(channel=CHANNEL, ts=ok["ts"], text="z")


async def test_enforced_tiers(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.enforce_tiers(chat_update_per_minute=3, post_message_per_second_per_channel=1.0)
    first = await client.chat_postMessage(channel=CHANNEL, text="1")
    with pytest.raises(SlackApiError) as per_channel:
        await client.chat_postMessage(channel=CHANNEL, text="2")
    assert per_channel.value.response.status_code == 429 and per_channel.value.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="C0OTHER", text="other channel has its own budget")
    for n in range(3):
        await client.chat_update(channel=CHANNEL, ts=first["ts"], text=f"edit {n}")
    with pytest.raises(SlackApiError) as per_minute:
        await client.chat_update(channel=CHANNEL, ts=first["ts"], text="one too many")
    assert 55 <= int(per_minute.value.response.headers["Retry-After"]) <= 60


async def test_enforced_tiers_cover_streaming_and_allow_a_burst_of_posts(fake: FakeSlack,
                                                                         client: AsyncWebClient) -> None:
    fake.allow_streaming()
    fake.enforce_tiers(post_message_burst=3)  # at most 3 messages in any 3 s per channel
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    await client.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="reply")
    stream = await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                           recipient_team_id="T0TEAM", markdown_text="hi")
    with pytest.raises(SlackApiError) as per_channel:  # a stream is a message: it counts in the channel's burst
        await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                      recipient_team_id="T0TEAM")
    assert per_channel.value.response.status_code == 429
    assert per_channel.value.response.headers["Retry-After"] in ("2", "3")
    for n in range(19):  # Tier 2: 20 starts a minute, across channels
        await client.chat_startStream(channel=f"C{n:04d}", thread_ts=parent["ts"], recipient_user_id="U1",
                                      recipient_team_id="T0TEAM")
    with pytest.raises(SlackApiError) as tier_2:
        await client.chat_startStream(channel="C0LAST", thread_ts=parent["ts"], recipient_user_id="U1",
                                      recipient_team_id="T0TEAM")
    assert tier_2.value.response.status_code == 429 and 55 <= int(tier_2.value.response.headers["Retry-After"]) <= 60
    await client.chat_appendStream(channel=CHANNEL, ts=stream["ts"], markdown_text=" there")  # Tier 4: its own


async def test_native_streaming_is_refused_until_allowed(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    with pytest.raises(SlackApiError) as refused:
        await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                      recipient_team_id="T0TEAM", markdown_text="hi")
    assert refused.value.response["error"] == "feature_not_enabled" and refused.value.response.status_code == 200
    fake.refuse_streaming("messages_tab_disabled")
    with pytest.raises(SlackApiError) as tab:
        await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                      recipient_team_id="T0TEAM")
    assert tab.value.response["error"] == "messages_tab_disabled"
    assert fake.thread(CHANNEL, parent["ts"]) == []

    fake.allow_streaming()
    with pytest.raises(SlackApiError) as no_recipient:  # "required when streaming to channels"
        await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], markdown_text="hi")
    assert no_recipient.value.response["error"] == "missing_recipient_user_id"


async def test_a_stream_shows_each_append_and_stops_with_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.allow_streaming()
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    started = await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                            recipient_team_id="T0TEAM", markdown_text="**Hel")
    stream = fake.messages[(CHANNEL, started["ts"])]
    assert stream.is_reply and stream.streaming and stream.markdown == "**Hel"
    await client.chat_appendStream(channel=CHANNEL, ts=started["ts"], chunks=[{"type": "markdown_text", "text": "lo"}])
    with pytest.raises(SlackApiError) as conflict:
        await client.chat_update(channel=CHANNEL, ts=started["ts"], text="x")
    assert conflict.value.response["error"] == "streaming_state_conflict"
    again = {"type": "actions", "block_id": "b", "elements": [
        {"type": "button", "action_id": "again", "value": "r1", "text": {"type": "plain_text", "text": "Again"}}]}
    stopped = await client.chat_stopStream(channel=CHANNEL, ts=started["ts"], markdown_text="**", blocks=[again])
    assert stopped["message"]["text"] == "**Hello**"
    assert stream.history == ["**Hel", "**Hello", "**Hello**"]
    assert fake.messages[(CHANNEL, started["ts"])].streaming is False
    assert stream.markdown == "**Hello**" and stream.buttons == {"again": "r1"}
    with pytest.raises(SlackApiError) as over:
        await client.chat_appendStream(channel=CHANNEL, ts=started["ts"], markdown_text="more")
    assert over.value.response["error"] == "message_not_in_streaming_state"
    edited = await client.chat_update(channel=CHANNEL, ts=started["ts"], text="fixed",
                                      blocks=[{"type": "markdown", "text": "fixed"}])
    assert edited["ok"]  # after the stream, chat.update works again


async def test_an_expired_stream_refuses_appends_and_stops(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.allow_streaming()
    parent = await client.chat_postMessage(channel=CHANNEL, text="parent")
    started = await client.chat_startStream(channel=CHANNEL, thread_ts=parent["ts"], recipient_user_id="U1",
                                            recipient_team_id="T0TEAM", markdown_text="partial")
    fake.expire_stream(fake.messages[(CHANNEL, started["ts"])])
    for call in (client.chat_appendStream(channel=CHANNEL, ts=started["ts"], markdown_text="x"),
                 client.chat_stopStream(channel=CHANNEL, ts=started["ts"])):
        with pytest.raises(SlackApiError) as expired:
            await call
        assert expired.value.response["error"] == "message_not_in_streaming_state"
    assert fake.messages[(CHANNEL, started["ts"])].text == "partial"


async def test_concurrent_calls(fake: FakeSlack, client: AsyncWebClient) -> None:
    posts = await asyncio.gather(*(client.chat_postMessage(channel=f"C{n % 20}", text=str(n)) for n in range(200)))
    assert len({(p["channel"], p["ts"]) for p in posts}) == 200
    await asyncio.gather(*(client.chat_update(channel=p["channel"], ts=p["ts"], text="done") for p in posts))
    assert all(m.text == "done" for m in fake.messages.values()) and len(fake.requests) == 400


async def test_response_url_limits(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    assert url.startswith(f"{fake.origin}/commands/T0TEAM/1/")
    webhook = AsyncWebhookClient(url)
    for n in range(5):
        sent = await webhook.send(text=f"update {n}", response_type="ephemeral")
        assert sent.status_code == 200 and sent.body == "ok"
    sixth = await webhook.send(text="one too many")  # never raises: check status_code
    assert sixth.status_code == 404 and sixth.body == "used_url"
    assert [b["text"] for b in fake.response_url_posts(url)] == [f"update {n}" for n in range(5)]
    assert (await AsyncWebhookClient(fake.origin + "/commands/T0TEAM/99/nope").send(text="x")).status_code == 404


async def test_rate_limit_only_the_calls_it_names(fake: FakeSlack, client: AsyncWebClient) -> None:
    client.retry_handlers.clear()
    fake.rate_limit("chat.postMessage", times=5, retry_after=3, when=lambda params: "thread_ts" in params)
    parent = await client.chat_postMessage(channel=CHANNEL, text="top level is not limited")
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=parent["ts"])
    assert limited.value.response.status_code == 429 and limited.value.response.headers["Retry-After"] == "3"
    assert limited.value.response.data == {"ok": False, "error": "ratelimited"}
    assert [c.status for c in fake.requests_to("chat.postMessage")] == [200, 429]


async def test_response_url_faults(fake: FakeSlack) -> None:
    url = fake.new_response_url()
    webhook = AsyncWebhookClient(url)
    fake.rate_limit("response_url", retry_after=4)
    fake.fail("response_url", "expired_url")
    limited = await webhook.send(text="x")
    assert (limited.status_code, limited.body, limited.headers["Retry-After"]) == (429, "rate_limited", "4")
    expired = await webhook.send(text="x")
    assert (expired.status_code, expired.body) == (404, "expired_url")
    assert (await webhook.send(text="x")).status_code == 200
    assert [(c.status, c.response["text"]) for c in fake.requests_to("response_url")] == [
        (429, "rate_limited"), (404, "expired_url"), (200, "ok")]


async def test_faults_are_named_by_what_they_answer(fake: FakeSlack) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        fake.fail("chat.postMessage", "ratelimited")
    with pytest.raises(ValueError, match="rate_limit"):
        fake.fail("chat.postMessage", "x", status=429)
    with pytest.raises(ValueError, match="dropped"):
        fake.fail("upload", drop=True)
    with pytest.raises(ValueError, match="error"):
        fake.fail("chat.postMessage")


async def test_a_bug_in_the_fake_is_a_fake_error(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake._handlers["api.test"] = lambda params: {"args": 1 / 0}  # a broken handler in the fake itself
    client.retry_handlers.clear()
    with pytest.raises(SlackApiError) as broken:
        await client.api_test()
    assert broken.value.response.status_code == 500 and broken.value.response["error"] == "fatal_error"
    assert fake.fake_errors == ["POST /api/api.test: ZeroDivisionError('division by zero')"]
    fake.fake_errors.clear()  # the fixture asserts it empty


async def test_wait_until_times_out_with_context(fake: FakeSlack) -> None:
    with pytest.raises(TimeoutError, match=r"never.*requests=0"):
        await fake.wait_until(lambda: False, timeout=0.05, what="never")


# --- bolt over Socket Mode -----------------------------------------------------------------------------

@dataclass
class BoltBot:
    """A minimal real bolt app: `/ask` acks, `respond()`s privately, then `say()`s in the channel; app mentions
    are answered in a thread."""

    app: AsyncApp
    handler: AsyncSocketModeHandler
    respond_results: list[Any] = field(default_factory=list)
    retry_headers: list[Any] = field(default_factory=list)


def build_bolt(fake: FakeSlack, ping_interval: float = 10) -> BoltBot:
    app = AsyncApp(client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url))
    bot = BoltBot(app, AsyncSocketModeHandler(app, fake.app_token, ping_interval=ping_interval))

    @app.command("/ask")
    async def ask(ack: Any, command: dict[str, Any], respond: Any, say: Any) -> None:
        await ack()
        bot.respond_results.append(await respond(f"working on {command['text']}"))
        await say(f"answer to {command['text']}")

    @app.command("/usage")
    async def usage(ack: Any) -> None:
        await ack("usage: /ask <prompt>")  # the private answer travels in the ack

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Any, request: AsyncBoltRequest) -> None:
        bot.retry_headers.append(request.headers.get("x-slack-retry-num", [None])[0])  # bolt: lists
        await say(text="hello in thread", thread_ts=event["ts"])

    return bot


async def run_ask(fake: FakeSlack, bot: BoltBot, text: str) -> None:
    envelope_id = await fake.send_slash_command(command="/ask", text=text, user_id="U0USER", channel_id=CHANNEL)
    ack = await fake.wait_for_ack(envelope_id)
    assert ack["envelope_id"] == envelope_id and "payload" not in ack  # ack() with no message
    assert fake.sent_envelopes[envelope_id].ack_latency is not None
    url = fake.sent_envelopes[envelope_id].response_url
    assert url is not None
    await fake.wait_until(lambda: any(m.text == f"answer to {text}" for m in fake.messages.values()),
                          what="say() landed")
    assert fake.response_url_posts(url) == [{"text": f"working on {text}"}]


async def test_bolt_socket_mode_slash_command_and_disconnect(fake: FakeSlack) -> None:
    bot = build_bolt(fake)
    try:
        await bot.handler.connect_async()
        await fake.wait_for_socket(1)
        await run_ask(fake, bot, "first")
        assert bot.respond_results[0].status_code == 200 and bot.respond_results[0].body == "ok"
        assert [c.method for c in fake.requests][:2] == ["apps.connections.open", "auth.test"]  # auth.test lazily
        usage = await fake.wait_for_ack(await fake.send_slash_command(command="/usage"))
        assert usage["payload"] == {"text": "usage: /ask <prompt>"}  # Socket Mode wraps a text ack as payload

        await fake.send_disconnect(reason="refresh_requested")
        await fake.wait_for_socket(2)
        await fake.wait_until(lambda: not fake.socket.connections[0].open, what="old socket closed")
        assert fake.socket_connections == 2 and not fake.socket.connections[0].closed_by_server
        await run_ask(fake, bot, "second")
        assert fake.sent_envelopes[next(reversed(fake.sent_envelopes))].connection == 2
        assert len(fake.requests_to("auth.test")) == 1
    finally:
        await bot.handler.close_async()


async def test_bolt_events_and_dropped_socket(fake: FakeSlack) -> None:
    bot = build_bolt(fake, ping_interval=0.2)  # a dropped TCP connection is noticed by the ping monitor
    try:
        await bot.handler.connect_async()
        await fake.wait_for_socket(1)
        event = fake.mention_event("hello")
        envelope_id = await fake.send_event(event)
        await fake.wait_for_ack(envelope_id)
        await fake.wait_until(lambda: len(fake.thread(CHANNEL, event["ts"])) == 1, what="threaded reply")
        assert bot.retry_headers == ["0"]  # bolt sets x-slack-retry-num: 0 on first deliveries in Socket Mode
        assert fake.sent_envelopes[envelope_id].payload["event_id"].startswith("Ev")

        fake.drop_socket()
        await fake.wait_for_socket(2, timeout=10)
        retry = await fake.send_event(event, event_id="Ev0RETRY", retry_attempt=1, retry_reason="timeout")
        await fake.wait_for_ack(retry)
        await fake.wait_until(lambda: len(bot.retry_headers) == 2, what="retried event handled")
        assert bot.retry_headers[1] == "1"
    finally:
        await bot.handler.close_async()


def build_recording_bolt(
    fake: FakeSlack, seen: list[tuple[str, str, str | None]], name: str
) -> AsyncSocketModeHandler:
    """A bolt app that records (its name, the delivery's id, bolt's x-slack-retry-num) for each command and mention."""
    app = AsyncApp(client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url))

    @app.command("/ask")
    async def ask(ack: Any, command: dict[str, Any]) -> None:
        await ack()
        seen.append((name, command["trigger_id"], None))

    @app.event("app_mention")
    async def mention(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        seen.append((name, body["event_id"], request.headers.get("x-slack-retry-num", [None])[0]))

    return AsyncSocketModeHandler(app, fake.app_token)


async def test_several_connections_each_get_the_envelopes_sent_to_them_and_redeliveries(fake: FakeSlack) -> None:
    seen: list[tuple[str, str, str | None]] = []
    first, second = build_recording_bolt(fake, seen, "A"), build_recording_bolt(fake, seen, "B")
    try:
        await first.connect_async()
        await fake.wait_for_socket(1)
        await second.connect_async()
        await fake.wait_for_socket(2)

        command = await fake.send_slash_command_on(1, command="/ask", text="hi")
        await fake.wait_for_ack(command)
        again = await fake.redeliver(command, connection=2)
        await fake.wait_for_ack(again)
        trigger = fake.sent_envelopes[command].payload["trigger_id"]
        assert seen == [("A", trigger, None), ("B", trigger, None)]
        assert fake.sent_envelopes[again].connection == 2 and fake.sent_envelopes[again].redelivery_of == command
        assert fake.sent_envelopes[again].payload == fake.sent_envelopes[command].payload
        assert fake.sent_envelopes[again].response_url == fake.sent_envelopes[command].response_url

        seen.clear()
        event = await fake.send_event(fake.mention_event("hello"), connection=2)
        await fake.wait_for_ack(event)
        retry = await fake.redeliver(event, connection=1)
        await fake.wait_for_ack(retry)
        second_retry = await fake.redeliver(retry, connection=2)
        await fake.wait_for_ack(second_retry)
        event_id = fake.sent_envelopes[event].payload["event_id"]
        assert seen == [("B", event_id, "0"), ("A", event_id, "1"), ("B", event_id, "2")]
        assert fake.sent_envelopes[retry].message["retry_reason"] == "timeout"
        assert fake.sent_envelopes[second_retry].redelivery_of == event
        with pytest.raises(RuntimeError, match="connection 3 is not open"):
            await fake.send_slash_command_on(3, command="/ask", text="nowhere")
    finally:
        await first.close_async()
        await second.close_async()


async def test_bolt_200_concurrent_commands(fake: FakeSlack) -> None:
    bot = build_bolt(fake)
    try:
        await bot.handler.connect_async()
        await fake.wait_for_socket(1)
        ids = await asyncio.gather(*(fake.send_slash_command(text=f"q{n}") for n in range(200)))
        acks = await asyncio.gather(*(fake.wait_for_ack(envelope_id) for envelope_id in ids))
        assert {a["envelope_id"] for a in acks} == set(ids)
        assert max(fake.sent_envelopes[i].ack_latency or 99 for i in ids) < 3.0  # Slack's deadline
        await fake.wait_until(lambda: len(fake.messages) == 200 and len(fake.responses) == 200, timeout=20)
        # Until its first auth.test returns, bolt starts one per request: warm it up at start-up.
        assert len(fake.requests_to("auth.test")) > 1
    finally:
        await bot.handler.close_async()


# --- bolt in HTTP mode ---------------------------------------------------------------------------------

def signed_request(body: str, signing_secret: str, timestamp: int | None = None) -> AsyncBoltRequest:
    """`body` as bolt's HTTP adapters hand it over, signed with `signing_secret` (their header values may be
    lists, hence the copy into bolt's own header type)."""
    headers: dict[str, str | Sequence[str]] = {**signed_headers(signing_secret, body, timestamp)}
    return AsyncBoltRequest(body=body, headers=headers)


async def test_http_mode_signature(fake: FakeSlack) -> None:
    app = AsyncApp(client=AsyncWebClient(token=fake.bot_token, base_url=fake.api_url), signing_secret="shh")
    done = asyncio.Event()

    @app.command("/ask")
    async def ask(ack: Any, respond: Any) -> None:
        await ack("on it")
        await respond("answer")
        done.set()

    url = fake.new_response_url()
    body = slash_command_form(text="hi", response_url=url)
    assert "command=%2Fask" in body and "is_enterprise_install=false" in body
    response = await app.async_dispatch(signed_request(body, "shh"))
    assert response.status == 200 and response.body == "on it"  # ack(text) answers plain text in HTTP mode
    await asyncio.wait_for(done.wait(), 5)
    assert fake.response_url_posts(url) == [{"text": "answer"}]

    forged = await app.async_dispatch(signed_request(body, "wrong"))
    stale = await app.async_dispatch(signed_request(body, "shh", timestamp=int(time.time()) - 301))
    assert forged.status == 401 and stale.status == 401
