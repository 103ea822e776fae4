"""The Slack adapter through real bolt/slack_sdk over Socket Mode to a fake Slack, with a fake Replicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from adapters.runtime import BotService
from bot.runner import RunPolicy
from config.settings import Settings
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import FakeSlack

PNG = b"\x89PNG\r\n\x1a\n" + b"slack-png"
HOSTILE = "<!channel> <!here> <@U999> <https://evil.example|click> & done"


@dataclass
class SlackBot:
    slack: FakeSlack
    replicate: FakeReplicate
    service: BotService


@pytest.fixture
async def bot() -> AsyncIterator[SlackBot]:
    async with FakeReplicate() as replicate, FakeSlack() as slack:
        replicate.add_model("meta/meta-llama-3-8b-instruct", TextModel(tokens=["Hello ", HOSTILE]))
        replicate.add_model("black-forest-labs/flux-schnell", ImageModel(images=[(PNG, "image/png")]))
        settings = Settings(
            replicate_api_token="r8_test_token",
            replicate_base_url=replicate.base_url,
            slack_bot_token=slack.bot_token,
            slack_app_token=slack.app_token,
            slack_api_url=slack.api_url,
            port=0,
            shutdown_grace_s=1.0,
        )
        service = BotService(settings, RunPolicy(timeout_s=10, poll_interval_s=0.05, create_wait_s=1))
        await service.start()
        await slack.wait_for_socket(1)
        try:
            yield SlackBot(slack, replicate, service)
        finally:
            await service.shutdown()


async def test_ask_posts_a_parent_and_answers_in_its_thread_with_escaped_text(bot: SlackBot) -> None:
    slack = bot.slack
    envelope = await slack.send_slash_command(command="/ask", text="say hi", channel_id="C0CHAN")
    await slack.wait_for_ack(envelope)

    def answered() -> bool:
        parents = [m for m in slack.channel_messages("C0CHAN") if not m.is_reply]
        return bool(parents) and any("done" in m.text and "▍" not in m.text for m in slack.thread("C0CHAN", parents[0].ts))

    await slack.wait_until(answered, timeout=10, what="threaded answer")
    parent = [m for m in slack.channel_messages("C0CHAN") if not m.is_reply][0]
    assert "say hi" in parent.text and "meta/meta-llama-3-8b-instruct" in parent.text
    reply = slack.thread("C0CHAN", parent.ts)[-1]
    assert reply.text == "Hello &lt;!channel&gt; &lt;!here&gt; &lt;@U999&gt; &lt;https://evil.example|click&gt; &amp; done"
    assert auth_tests_before_first_ack(slack) == 1


def auth_tests_before_first_ack(slack: FakeSlack) -> int:
    first_ack = min(ack["at"] for ack in slack.acks)
    return len([call for call in slack.calls_to("auth.test") if call.at < first_ack])


async def test_empty_prompt_gets_the_usage_privately_in_the_ack_and_costs_nothing(bot: SlackBot) -> None:
    envelope = await bot.slack.send_slash_command(command="/imagine", text="  ")
    ack = await bot.slack.wait_for_ack(envelope)

    assert "Usage" in ack["payload"]["text"]
    assert bot.replicate.requests == []
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_imagine_uploads_image_bytes_into_the_thread(bot: SlackBot) -> None:
    slack = bot.slack
    await slack.send_slash_command(command="/imagine", text="a lighthouse --seed 9", channel_id="C0CHAN")

    await slack.wait_until(lambda: any(u.completed for u in slack.uploads.values()), timeout=10, what="upload")
    upload = next(u for u in slack.uploads.values() if u.completed)
    assert upload.bytes == PNG and upload.channel_id == "C0CHAN" and upload.thread_ts
    await slack.wait_until(lambda: any("seed:* 9" in m.text for m in slack.thread("C0CHAN", upload.thread_ts)), timeout=5)


async def test_not_in_channel_tells_the_user_privately_and_answers_through_response_url(bot: SlackBot) -> None:
    slack = bot.slack
    slack.set_not_member("C0PRIVATE")
    envelope = await slack.send_slash_command(command="/ask", text="hi", channel_id="C0PRIVATE")
    url = slack.sent_envelopes[envelope].response_url

    await slack.wait_until(lambda: len(slack.response_url_posts(url)) >= 2, timeout=10, what="private answer")
    bodies = slack.response_url_posts(url)
    assert "/invite" in bodies[0]["text"]
    assert "&lt;!channel&gt;" in bodies[1]["text"]
    assert all(body.get("response_type") == "ephemeral" for body in bodies)
