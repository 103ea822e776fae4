"""The Slack adapter through real bolt/slack_sdk to a fake Slack (Socket Mode and HTTP mode), with a fake Replicate."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from adapters import slack as slack_adapter
from adapters.slack import TRANSIENT_RETRIES, WORKING_TEXT, RetryBackoff
from adapters.slack_format import PRIVATE_FALLBACK_TEXT
from bot.text import split_message
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import FakeSlack, signed_headers, slash_command_form
from tests.harness_common import ASK_MODEL, PNG
from tests.slack_harness import CURSOR, SIGNING_SECRET, SlackBot, slack_bot

HOSTILE = "<!channel> <!here> <@U999> <https://evil.example|click> & done"
ESCAPED_ANSWER = "Hello &lt;!channel&gt; &lt;!here&gt; &lt;@U999&gt; &lt;https://evil.example|click&gt; &amp; done"


def hostile_answer(replicate: FakeReplicate) -> None:
    """/ask answers with every kind of Slack mention and a link in markup: none may reach Slack live."""
    replicate.add_model(ASK_MODEL, TextModel(tokens=["Hello ", HOSTILE]))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk's retry handlers run as in production, waiting milliseconds instead of seconds."""
    monkeypatch.setattr(slack_adapter, "RETRY_BACKOFF", RetryBackoff(first_wait_s=0.01, jitter_s=0.01))


@pytest.fixture
async def bot() -> AsyncIterator[SlackBot]:
    async with slack_bot(arrange=hostile_answer) as running:
        yield running


async def test_ask_posts_a_parent_and_answers_in_its_thread_with_escaped_text(bot: SlackBot) -> None:
    slack = bot.slack
    envelope = await slack.send_slash_command(command="/ask", text="say hi", channel_id="C0CHAN")
    await slack.wait_for_ack(envelope)

    def answered() -> bool:
        parents = [m for m in slack.channel_messages("C0CHAN") if not m.is_reply]
        return bool(parents) and any("done" in m.text and "▍" not in m.text
                                     for m in slack.thread("C0CHAN", parents[0].ts))

    await slack.wait_until(answered, timeout=10, what="threaded answer")
    parent = next(m for m in slack.channel_messages("C0CHAN") if not m.is_reply)
    assert "say hi" in parent.text and "meta/meta-llama-3-8b-instruct" in parent.text
    reply = slack.thread("C0CHAN", parent.ts)[-1]
    assert reply.text == ("Hello &lt;!channel&gt; &lt;!here&gt; &lt;@U999&gt; &lt;https://evil.example|click&gt; "
                          "&amp; done")
    assert auth_tests_before_first_ack(slack) == 1


def auth_tests_before_first_ack(slack: FakeSlack) -> int:
    first_ack = min(ack["at"] for ack in slack.acks)
    return len([call for call in slack.requests_to("auth.test") if call.at < first_ack])


async def test_empty_prompt_gets_the_usage_privately_in_the_ack_and_costs_nothing(bot: SlackBot) -> None:
    envelope = await bot.slack.send_slash_command(command="/imagine", text="  ")
    ack = await bot.slack.wait_for_ack(envelope)

    assert "Usage" in ack["payload"]["text"]
    assert bot.replicate.requests == []
    assert bot.slack.requests_to("chat.postMessage") == []


async def test_imagine_uploads_image_bytes_into_the_thread(bot: SlackBot) -> None:
    slack = bot.slack
    await slack.send_slash_command(command="/imagine", text="a lighthouse --seed 9", channel_id="C0CHAN")

    await slack.wait_until(lambda: any(u.completed for u in slack.uploads.values()), timeout=10, what="upload")
    upload = next(u for u in slack.uploads.values() if u.completed)
    assert upload.bytes == PNG and upload.channel_id == "C0CHAN" and upload.thread_ts
    thread_ts = upload.thread_ts
    await slack.wait_until(lambda: any("seed:* 9" in m.text for m in slack.thread("C0CHAN", thread_ts)), timeout=5)


async def test_not_in_channel_tells_the_user_privately_and_answers_through_response_url(bot: SlackBot) -> None:
    slack = bot.slack
    slack.set_not_member("C0PRIVATE")
    envelope = await slack.send_slash_command(command="/ask", text="hi", channel_id="C0PRIVATE")
    url = slack.sent_envelopes[envelope].response_url
    assert url is not None

    await slack.wait_until(lambda: len(slack.response_url_posts(url)) >= 2, timeout=10, what="private answer")
    bodies = slack.response_url_posts(url)
    assert "/invite" in bodies[0]["text"]
    assert "&lt;!channel&gt;" in bodies[1]["text"]
    assert all(body.get("response_type") == "ephemeral" for body in bodies)


# --- acknowledging -----------------------------------------------------------------------------------


async def test_ack_reaches_slack_before_any_call_to_replicate_or_the_web_api(bot: SlackBot) -> None:
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello")
    ack = await bot.slack.wait_for_ack(envelope)
    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="the answer")

    assert ack["at"] < min(request.at for request in bot.replicate.requests)
    web_api_calls = [call for call in bot.slack.requests if call.method not in ("auth.test", "apps.connections.open")]
    assert ack["at"] < min(call.at for call in web_api_calls)
    assert ack.get("payload") in (None, {})  # a plain ack: nothing shown to the user yet


@pytest.mark.parametrize(
    ("command", "text", "names"),
    [
        ("/imagine", "a cat --ar banana", "--ar banana"),
        ("/ask", "hello --bogus 1", "--bogus"),
        ("/ask", "hello --seed 3", "--seed"),
        ("/imagine", "a cat --seed", "--seed"),
        ("/ask", "hi --model evil/model", "evil/model"),
    ],
)
async def test_bad_option_is_answered_privately_in_the_ack_naming_it_and_costs_nothing(
    bot: SlackBot, command: str, text: str, names: str
) -> None:
    envelope = await bot.slack.send_slash_command(command=command, text=text)
    ack = await bot.slack.wait_for_ack(envelope)

    assert names in ack["payload"]["text"]
    assert bot.replicate.requests == []
    assert bot.slack.requests_to("chat.postMessage") == []


# --- HTTP mode -----------------------------------------------------------------------------------------


async def post_command(bot: SlackBot, body: str, headers: dict[str, str]) -> tuple[int, str]:
    url = f"http://127.0.0.1:{bot.service.http_port}/slack/events"
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


async def test_http_mode_answers_a_correctly_signed_command_in_a_thread() -> None:
    async with slack_bot(http_mode=True, arrange=hostile_answer) as bot:
        body = slash_command_form(command="/ask", text="say hi", response_url=bot.slack.new_response_url())

        status, _ = await post_command(bot, body, signed_headers(SIGNING_SECRET, body))

        assert status == 200
        await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="threaded answer")
        assert bot.slack.socket_connections == 0  # no Socket Mode in HTTP mode
        assert len(bot.replicate.creates) == 1


async def test_http_mode_answers_bad_input_in_the_http_response_privately() -> None:
    async with slack_bot(http_mode=True, arrange=hostile_answer) as bot:
        body = slash_command_form(command="/ask", text="   ", response_url=bot.slack.new_response_url())

        status, text = await post_command(bot, body, signed_headers(SIGNING_SECRET, body))

        assert status == 200 and "Usage" in text
        assert bot.replicate.requests == [] and bot.slack.requests_to("chat.postMessage") == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda body: signed_headers("not-the-secret", body), id="bad-signature"),
        pytest.param(lambda body: signed_headers(SIGNING_SECRET, body, timestamp=int(__import__("time").time()) - 600),
                     id="stale-timestamp"),
        pytest.param(lambda body: {**signed_headers(SIGNING_SECRET, body), "X-Slack-Signature": ""}, id="no-signature"),
        pytest.param(lambda body: signed_headers(SIGNING_SECRET, body + "&text=tampered"), id="tampered-body"),
    ],
)
async def test_http_mode_refuses_unverified_requests_with_401_and_runs_nothing(
    forge: Callable[[str], dict[str, str]]
) -> None:
    async with slack_bot(http_mode=True, arrange=hostile_answer) as bot:
        body = slash_command_form(command="/ask", text="say hi", response_url=bot.slack.new_response_url())
        headers = forge(body)
        sent = body + "&text=evil" if "tampered" in str(headers) else body

        status, _ = await post_command(bot, sent, headers)

        assert status == 401
        assert bot.replicate.requests == []
        assert bot.slack.requests_to("chat.postMessage") == []


# --- streaming -------------------------------------------------------------------------------------------


async def test_streamed_answer_edits_one_reply_coalesced_to_at_most_one_edit_a_second(bot: SlackBot) -> None:
    tokens = [f"word{i} " for i in range(60)]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.04))  # ~2.4 s, 25 tokens/s
    await bot.slack.send_slash_command(command="/ask", text="count")

    await bot.slack.wait_until(lambda: bot.answered(ending="word59 "), timeout=10, what="the whole answer")
    [reply] = bot.replies()
    assert reply.text == "".join(tokens)
    drafts = [text for text in reply.history if text.endswith(CURSOR)]
    assert len(drafts) >= 2, reply.history  # it streamed …
    assert len(reply.history) < len(tokens) // 4  # … in coalesced edits, not one per token
    gaps = [later - earlier for earlier, later in itertools.pairwise(reply.edit_times[:-1])]
    assert all(gap >= 0.9 for gap in gaps), gaps  # interim edits at most once a second (the final may follow sooner)
    assert all(len(text) <= 4000 for text in reply.history)


async def test_status_shows_in_the_thread_reply_until_the_answer_replaces_it(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Ready."], boot_s=1.5))
    await bot.slack.send_slash_command(command="/ask", text="wake up")

    await bot.slack.wait_until(lambda: bot.answered(ending="Ready."), timeout=10, what="the answer")
    [reply] = bot.replies()
    assert any(text.startswith("_⏳") and "tart" in text for text in reply.history), reply.history
    assert reply.text == "Ready."


async def test_long_answer_continues_in_further_thread_replies_without_breaking_code_blocks(bot: SlackBot) -> None:
    prose = "".join(f"Line {i} of the explanation, long enough to matter.\n" for i in range(60))
    code = "```python\n" + "".join(f"print('step {i}')  # keep going\n" for i in range(80)) + "```\n"
    text = prose + "\n" + code + "\n" + prose
    assert len(text) > 8000
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[text[i : i + 400] for i in range(0, len(text), 400)],
                                                 token_interval_s=0.05))
    await bot.slack.send_slash_command(command="/ask", text="a long one")

    expected = split_message(text, 4000)
    await bot.slack.wait_until(lambda: [m.text for m in bot.replies()] == expected, timeout=15, what="split answer")
    replies = bot.replies()
    assert len(replies) >= 3 and all(len(m.text) <= 4000 for m in replies)
    assert all(m.text.count("```") % 2 == 0 for m in replies), [m.text[-60:] for m in replies]
    assert [call.error for call in bot.slack.requests if call.error] == []  # never msg_too_long, nothing refused


async def test_model_failing_half_way_keeps_the_text_and_says_so_in_the_thread(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Partial ", "answer"], token_interval_s=0.2,
                                                 fail_with="CUDA out of memory"))
    envelope = await bot.slack.send_slash_command(command="/ask", text="fail half way")

    await bot.slack.wait_until(lambda: bot.answered() and "⚠️" in bot.replies()[-1].text, timeout=10,
                               what="the error in the thread")
    [reply] = bot.replies()
    assert reply.text.startswith("Partial answer\n\n⚠️")
    assert "CUDA" not in reply.text  # raw model errors go to the log, not to chat
    assert bot.slack.response_url_posts(bot.slack.sent_envelopes[envelope].response_url or "") == []


# --- Slack's rate limits ---------------------------------------------------------------------------------


async def test_rate_limited_post_message_is_retried_after_retry_after_and_nothing_is_lost(bot: SlackBot) -> None:
    bot.slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="the answer")
    posts = bot.slack.requests_to("chat.postMessage")
    assert [call.status for call in posts[:2]] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.9  # slack_sdk waited the Retry-After
    assert len(bot.parents()) == 1 and len(bot.replies()) == 1


async def test_rate_limited_progress_edit_pauses_streaming_and_the_final_text_still_lands(bot: SlackBot) -> None:
    tokens = [f"t{i} " for i in range(40)]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.05))
    bot.slack.rate_limit("chat.update", times=1, retry_after=1)
    await bot.slack.send_slash_command(command="/ask", text="stream")

    await bot.slack.wait_until(lambda: bot.answered(ending="t39 "), timeout=10, what="the answer")
    updates = bot.slack.requests_to("chat.update")
    assert updates[0].status == 429
    assert all(later.at - updates[0].at >= 0.9 for later in updates[1:])  # the edit waited out Retry-After
    assert len(bot.replies()) == 1


async def test_final_edit_refused_with_a_long_retry_after_is_posted_at_once_and_the_draft_removed(
    bot: SlackBot,
) -> None:
    bot.slack.rate_limit("chat.update", times=50, retry_after=30)  # every edit refused for the next 30 s
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=5, what="the answer, not 30 s later")
    [reply] = bot.replies()
    assert reply.text.startswith("Hello &lt;!channel&gt;")
    assert [message.text for message in bot.slack.deleted] == ["_⏳ Working on it…_"]


async def test_many_answers_under_slacks_tier_limits_each_land_in_one_reply_without_waiting(bot: SlackBot) -> None:
    bot.slack.enforce_tiers(chat_update_per_minute=6)  # a crowded workspace: little edit budget left
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[f"w{i} " for i in range(12)] + ["end"], token_interval_s=0.1))
    channels = [f"C0LOAD{i}" for i in range(10)]

    await bot.ask_in_each(channels, ending="end")  # well inside the 60 s a spent Tier 3 minute would cost

    for channel in channels:
        assert [message.text for message in bot.replies(channel)] == ["".join(f"w{i} " for i in range(12)) + "end"]
    assert len(bot.replicate.creates) == 10
    assert len(bot.slack.deleted) >= 10 - 6  # answers past the tier were posted anew, their drafts removed


# --- the Socket Mode connection ----------------------------------------------------------------------------


async def test_after_a_disconnect_message_the_bot_reconnects_and_answers(bot: SlackBot) -> None:
    await bot.slack.send_disconnect(reason="refresh_requested")
    await bot.slack.wait_for_socket(2)

    envelope = await bot.slack.send_slash_command(command="/ask", text="still there?")
    await bot.slack.wait_for_ack(envelope)

    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="the answer")
    assert bot.slack.sent_envelopes[envelope].connection == 2


async def test_an_answer_in_flight_survives_a_socket_drop_and_the_next_command_works(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["one ", "two ", "three"], token_interval_s=0.5))
    await bot.slack.send_slash_command(command="/ask", text="first", channel_id="C0ONE")
    await bot.replicate.wait_until(lambda: bool(bot.replicate.creates), what="the first prediction")

    bot.slack.drop_socket()
    await bot.slack.wait_for_socket(2, timeout=20)
    envelope = await bot.slack.send_slash_command(command="/ask", text="second", channel_id="C0TWO")
    await bot.slack.wait_for_ack(envelope)

    await bot.slack.wait_until(lambda: bot.answered("C0ONE", ending="three") and bot.answered("C0TWO", ending="three"),
                               timeout=10, what="both answers")
    assert len(bot.replicate.creates) == 2


# --- images ------------------------------------------------------------------------------------------------


async def test_several_images_go_up_in_one_upload_with_prompt_model_and_seed_beside_them(bot: SlackBot) -> None:
    second = b"\x89PNG\r\n\x1a\n" + b"second"
    bot.replicate.add_model("black-forest-labs/flux-schnell",
                            ImageModel(images=[(PNG, "image/png"), (second, "image/png")]))
    await bot.slack.send_slash_command(command="/imagine", text="two foxes --seed 5")

    await bot.slack.wait_until(lambda: any("seed:* 5" in m.text for m in bot.replies()), timeout=10, what="caption")
    [complete] = [call for call in bot.slack.requests_to("files.completeUploadExternal") if call.ok]
    assert len(complete.params["files"]) == 2
    assert sorted(upload.bytes for upload in bot.slack.uploads.values() if upload.completed) == sorted([PNG, second])
    caption, files_message = bot.replies()
    assert len(files_message.files) == 2 and files_message.thread_ts == bot.parents()[0].ts
    caption_text = caption.text
    assert "two foxes" in caption_text and "black-forest-labs/flux-schnell" in caption_text
    assert "2 images" in caption_text
    assert "http" not in caption_text  # no links when the bytes went up


async def test_failed_upload_posts_the_image_link_once_instead(bot: SlackBot) -> None:
    bot.slack.fail("upload", "internal_error", times=1 + TRANSIENT_RETRIES)  # HTTP 500, on every try
    await bot.slack.send_slash_command(command="/imagine", text="a lighthouse --seed 9")

    await bot.slack.wait_until(lambda: bot.answered() and "seed:* 9" in bot.replies()[-1].text, timeout=10,
                               what="the caption")
    caption = bot.replies()[-1].text
    assert len(re.findall(r"<https://127\.0\.0\.1:\d+/[^|>]+\|image 1>", caption)) == 1, caption
    assert not any(upload.completed for upload in bot.slack.uploads.values())
    assert len(bot.replicate.creates) == 1  # the image was not made again


async def test_command_where_the_bot_cannot_see_the_channel_is_answered_privately(bot: SlackBot) -> None:
    bot.slack.set_missing("D0DIRECT")  # a DM with someone else: channel_not_found for the bot
    envelope = await bot.slack.send_slash_command(command="/ask", text="hi", channel_id="D0DIRECT")
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: len(bot.slack.response_url_posts(url)) >= 2, timeout=10, what="private answer")
    told, answer = bot.slack.response_url_posts(url)
    assert "/invite" in told["text"] and answer["text"].endswith("done")
    assert all(body["response_type"] == "ephemeral" for body in (told, answer))


async def test_thread_that_cannot_be_opened_is_answered_privately_through_response_url(bot: SlackBot) -> None:
    bot.slack.fail("chat.postMessage", "fatal_error")  # Slack refuses the parent outright, no retry helps
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello")
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: len(bot.slack.response_url_posts(url)) == 2, timeout=10, what="private answer")
    told, answer = bot.slack.response_url_posts(url)
    assert told["text"] == PRIVATE_FALLBACK_TEXT
    assert answer["text"] == ESCAPED_ANSWER
    assert all(body["response_type"] == "ephemeral" for body in (told, answer))
    assert bot.parents() == [] and len(bot.replicate.creates) == 1


async def test_command_nobody_can_be_told_about_is_given_up_and_its_prediction_cancelled(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["never shown"], boot_s=5))
    bot.slack.fail("chat.postMessage", status=500, times=100)  # Slack is down …
    bot.slack.fail("response_url", "expired_url", times=5)  # … and the response_url is no use either
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.replicate.wait_until(lambda: bool(bot.replicate.creates) and not bot.replicate.running(), timeout=10,
                                   what="the prediction cancelled")
    assert bot.replicate.cancels == [p.id for p in bot.replicate.creates]
    assert bot.slack.responses == [] and bot.slack.messages == {}


async def test_when_the_edit_budget_is_spent_answers_come_as_one_post_without_a_placeholder(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["all ", "at ", "once"], token_interval_s=0.2))
    channels = [f"C0BUSY{i}" for i in range(16)]

    await bot.ask_in_each(channels, ending="once")

    for channel in channels:
        assert [message.text for message in bot.replies(channel)] == ["all at once"]
    with_placeholder = [c for c in channels if bot.replies(c)[0].history[0] == "_⏳ Working on it…_"]
    assert 1 <= len(with_placeholder) < len(channels)  # the first ones stream; the rest are posted once, done
    assert bot.slack.deleted == []  # nothing posted only to be taken back


# --- formatting: Markdown in markdown blocks ---------------------------------------------------------------


MARKDOWN = "**bold** and [a](https://x.test/?a=1&b=2) <!channel>\n\n# Heading\n\n- item `code`"


async def test_answer_arrives_as_markdown_in_a_markdown_block_mention_safe_with_links_intact(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[MARKDOWN[:20], MARKDOWN[20:]]))
    await bot.slack.send_slash_command(command="/ask", text="format it")

    await bot.slack.wait_until(lambda: bot.answered(ending="`code`"), timeout=10, what="the answer")
    [reply] = bot.replies()
    assert reply.blocks is not None and reply.blocks[:1] == [{"type": "markdown", "text": (
        "**bold** and [a](https://x.test/?a=1&b=2) &lt;!channel&gt;\n\n# Heading\n\n- item `code`")}]
    assert reply.text == "**bold** and [a](https://x.test/?a=1&amp;b=2) &lt;!channel&gt;\n\n# Heading\n\n- item `code`"
    sends = [c for c in bot.slack.requests if c.method == "chat.update" or (c.method == "chat.postMessage" and
                                                                          thread_reply(c.params))]
    assert sends and all(c.params["blocks"][0]["type"] == "markdown" and c.params.get("text") for c in sends)
    assert "markdown_text" not in str([c.params for c in sends])  # it cannot go with blocks and text
    assert all(c.params.get("link_names") in (None, False, 0, "0", "false") and c.params.get("parse") != "full"
               for c in sends)


async def test_placeholder_statuses_drafts_and_final_text_are_all_markdown_blocks(bot: SlackBot) -> None:
    tokens = [f"**w{i}** " for i in range(30)]
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=tokens, token_interval_s=0.05, boot_s=1.2))
    await bot.slack.send_slash_command(command="/ask", text="stream it")

    await bot.slack.wait_until(lambda: bot.answered(ending="**w29** "), timeout=10, what="the answer")
    [reply] = bot.replies()
    assert reply.markdown_history[0] == WORKING_TEXT
    assert any(text is not None and text.startswith("_⏳") and "tart" in text for text in reply.markdown_history)
    assert any(text is not None and text.endswith(CURSOR) for text in reply.markdown_history)  # it streamed
    assert reply.markdown_history[-1] == "".join(tokens)
    assert None not in reply.markdown_history  # never a plain-text edit: no block_mismatch
    assert [call.error for call in bot.slack.requests if call.error] == []


async def test_long_markdown_answer_is_split_into_replies_each_a_markdown_block(bot: SlackBot) -> None:
    prose = "".join(f"**Line {i}** of the [explanation](https://x.test/?line={i}&more=1).\n" for i in range(60))
    code = "```python\n" + "".join(f"print('step {i}')  # <keep> going\n" for i in range(80)) + "```\n"
    text = prose + "\n" + code + "\n" + prose
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=[text[i : i + 500] for i in range(0, len(text), 500)]))
    await bot.slack.send_slash_command(command="/ask", text="a long one")

    expected = split_message(text.replace("<", "&lt;").replace(">", "&gt;"), 4000)
    await bot.slack.wait_until(lambda: [m.markdown for m in bot.replies()] == expected, timeout=15,
                               what="split answer")
    replies = bot.replies()
    assert len(replies) >= 3 and all(m.markdown is not None and m.markdown.count("```") % 2 == 0 for m in replies)
    assert all(len(m.text) <= 4000 for m in replies)
    assert [call.error for call in bot.slack.requests if call.error] == []


async def test_image_caption_stays_mrkdwn_text(bot: SlackBot) -> None:
    await bot.slack.send_slash_command(command="/imagine", text="a <!channel> lighthouse --seed 9")

    await bot.slack.wait_until(lambda: any("seed:* 9" in m.text for m in bot.replies()), timeout=10, what="caption")
    caption = next(m for m in bot.replies() if "seed:* 9" in m.text)
    assert caption.markdown_history == [None] * len(caption.history)
    shown = [block["text"] for block in caption.blocks or [] if block["type"] == "section"]
    assert [text["type"] for text in shown] == ["mrkdwn"] and shown[0]["text"] == caption.text
    assert "&lt;!channel&gt;" in caption.text and "<!channel>" not in caption.text


# --- errors that quote others' words -------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["/ask", "/imagine"])
async def test_model_rejecting_the_input_with_a_mention_in_its_detail_pings_nobody(bot: SlackBot, command: str) -> None:
    bot.replicate.fail("create", 422, detail="<!channel> <@U999> prompt too long")
    await bot.slack.send_slash_command(command=command, text="hello")

    await bot.slack.wait_until(lambda: bot.answered() and "⚠️" in bot.replies()[-1].text, timeout=10,
                               what="the error in the thread")
    [reply] = bot.replies()
    assert "rejected the input: &lt;!channel&gt; &lt;@U999&gt; prompt too long" in reply.text
    for shown in [*reply.history, *(text for text in reply.markdown_history if text is not None)]:
        assert "<!channel>" not in shown and "<@U999>" not in shown


# --- transient Slack failures ----------------------------------------------------------------------------------


def thread_reply(params: dict[str, object]) -> bool:
    return "thread_ts" in params


@pytest.mark.parametrize("drop", [False, True], ids=["http-500", "dropped-connection"])
async def test_one_transient_failure_on_the_parent_post_is_retried_and_the_answer_lands(bot: SlackBot,
                                                                                        drop: bool) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=1, drop=drop)
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="the answer")
    assert len(bot.parents()) == 1 and len(bot.replies()) == 1
    assert [call.status for call in bot.slack.requests_to("chat.postMessage")][:2] == [0 if drop else 500, 200]
    assert bot.slack.responses == []


async def test_one_server_error_on_the_answer_post_is_retried_and_the_answer_lands(bot: SlackBot) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=1, when=thread_reply)
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.slack.wait_until(lambda: bot.answered(ending="done"), timeout=10, what="the answer")
    [reply] = bot.replies()
    assert reply.markdown_history[0] == WORKING_TEXT  # the placeholder made it, on the second try
    assert [c.status for c in bot.slack.requests_to("chat.postMessage") if thread_reply(c.params)] == [500, 200]
    assert bot.slack.responses == []


async def test_one_server_error_on_the_final_edit_is_retried_in_place(bot: SlackBot) -> None:
    bot.replicate.add_model(ASK_MODEL, TextModel(tokens=["Short answer."]))
    def final(params: dict[str, object]) -> bool:
        return params.get("text") == "Short answer."

    bot.slack.fail("chat.update", status=503, times=1, when=final)
    await bot.slack.send_slash_command(command="/ask", text="hello")

    await bot.slack.wait_until(lambda: bot.answered(ending="Short answer."), timeout=10, what="the answer")
    assert [call.status for call in bot.slack.requests_to("chat.update") if final(call.params)] == [503, 200]
    assert len(bot.replies()) == 1 and bot.slack.deleted == []  # edited in place, not posted anew


async def test_slack_down_for_good_gets_the_answer_to_the_user_privately_and_nothing_keeps_running(
    bot: SlackBot,
) -> None:
    bot.slack.fail("chat.postMessage", status=500, times=100)
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello")
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: len(bot.slack.response_url_posts(url)) == 2, timeout=10, what="private answer")
    told, answer = bot.slack.response_url_posts(url)
    assert told["text"] == PRIVATE_FALLBACK_TEXT and answer["text"].endswith("&amp; done")
    assert [call.status for call in bot.slack.requests_to("chat.postMessage")] == [500] * (1 + TRANSIENT_RETRIES)
    await bot.replicate.wait_until(lambda: not bot.replicate.running(), timeout=5, what="nothing running")
    assert len(bot.replicate.creates) == 1


async def test_a_parent_post_still_rate_limited_after_the_retries_gets_the_answer_to_the_user_privately(
    bot: SlackBot,
) -> None:
    bot.slack.rate_limit("chat.postMessage", times=100, retry_after=0)  # slack_sdk waits, retries, gives up
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello")
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: len(bot.slack.response_url_posts(url)) == 2, timeout=10, what="private answer")
    told, answer = bot.slack.response_url_posts(url)
    assert told["text"] == PRIVATE_FALLBACK_TEXT and answer["text"].endswith("&amp; done")
    assert {call.status for call in bot.slack.requests_to("chat.postMessage")} == {429}
    await bot.replicate.wait_until(lambda: not bot.replicate.running(), timeout=5, what="nothing running")
    assert len(bot.replicate.creates) == 1


async def test_thread_that_stops_taking_messages_midway_gets_the_final_answer_to_the_user_privately(
    bot: SlackBot,
) -> None:
    bot.slack.fail("chat.update", status=500, times=100)
    bot.slack.fail("chat.postMessage", status=500, times=100,
                           when=lambda params: thread_reply(params) and params.get("text") != WORKING_TEXT)
    envelope = await bot.slack.send_slash_command(command="/ask", text="hello")
    url = bot.slack.sent_envelopes[envelope].response_url or ""

    await bot.slack.wait_until(lambda: len(bot.slack.response_url_posts(url)) == 2, timeout=10, what="private answer")
    told, answer = bot.slack.response_url_posts(url)
    assert told["text"] == PRIVATE_FALLBACK_TEXT and answer["text"].endswith("&amp; done")
    assert [m.text for m in bot.replies()] == [WORKING_TEXT]  # the placeholder was all Slack took


async def test_refusal_in_the_ack_shows_what_the_user_typed_literally(bot: SlackBot) -> None:
    envelope = await bot.slack.send_slash_command(command="/ask", text="hi --model <!channel>/x")
    ack = await bot.slack.wait_for_ack(envelope)

    assert "&lt;!channel&gt;/x" in ack["payload"]["text"] and "<!channel>" not in ack["payload"]["text"]
    assert bot.replicate.requests == []
