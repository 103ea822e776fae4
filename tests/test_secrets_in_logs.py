"""No credential reaches the log, even at DEBUG, where slack_sdk, bolt and discord.py log URLs and payloads.

The bot runs through Slack (Socket Mode, and HTTP mode with a command answered through its response_url) and
Discord (an interaction whose answer edits the original response and continues in follow-ups) with the process's
own logging (`install_logging` at DEBUG, behind the real `SecretRedactor`). Then the log is searched for every
credential the fakes issued: each lets its reader post as the bot (interaction and webhook tokens for 15
minutes, response_urls for 30, a Socket Mode ticket opens the app's socket), plus the configured tokens.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

from bot.logs import REDACTED, SecretRedactor, install_logging
from tests.bot_harness import running_bots
from tests.fakes.replicate_server import FakeReplicate, TextModel
from tests.fakes.slack_server import FakeSlack, signed_headers, slash_command_form
from tests.harness_common import ASK_MODEL, CHANNEL, DISCORD_TOKEN, REPLICATE_TOKEN, SLACK_APP_TOKEN, SLACK_BOT_TOKEN
from tests.test_http_hardening import SIGNING_SECRET, http_mode_slack_bot, post_events

CONFIGURED = {
    "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
    "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
    "SLACK_APP_TOKEN": SLACK_APP_TOKEN,
    "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    "DISCORD_TOKEN": DISCORD_TOKEN,
}
LONG_ANSWER = ["A paragraph of the answer. " * 30 + "\n\n"] * 6  # ~5,000 characters: Discord needs follow-ups
NOT_MEMBER = "C0PRIVATE"  # the bot can't post there: the user is answered through the response_url


@contextmanager
def process_log_at_debug() -> Iterator[io.StringIO]:
    """The process's logging set-up (one handler behind the redactor) writing to a buffer; restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    install_logging("DEBUG", CONFIGURED.values(), stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def long_answers(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK_MODEL, TextModel(tokens=LONG_ANSWER))


def response_url_credentials(slack: FakeSlack, urls: Sequence[str | None]) -> dict[str, str]:
    """Each response_url's path (`/commands/T…/n/secret`) and its last segment, the secret itself."""
    issued: dict[str, str] = {}
    for number, url in enumerate(urls, 1):
        assert url is not None  # every slash command carries one
        path = urlsplit(url).path
        issued[f"response_url {number} path"] = path
        issued[f"response_url {number} secret"] = path.rsplit("/", 1)[1]
    return issued


async def test_no_credential_the_platforms_issue_reaches_the_debug_log() -> None:
    issued = dict(CONFIGURED)
    with process_log_at_debug() as log:
        async with running_bots(slack=True, discord=True, arrange=long_answers) as bots:
            assert bots.slack is not None and bots.discord is not None
            slack_fake, discord_fake = bots.slack, bots.discord  # for the lambdas, where mypy forgets the assert
            bots.slack.set_not_member(NOT_MEMBER)
            in_channel = await bots.slack.send_slash_command(command="/ask", text="hello", channel_id="C0CHAN")
            private = await bots.slack.send_slash_command(command="/ask", text="hello", channel_id=NOT_MEMBER)
            private_url = bots.slack.sent_envelopes[private].response_url
            sent = await bots.discord.send_interaction("ask", {"prompt": "tell me more"}, channel_id=CHANNEL)

            await bots.slack_final("C0CHAN", timeout=20)
            assert private_url is not None
            await bots.slack.wait_until(lambda: len(slack_fake.response_url_posts(private_url)) >= 2, 20,
                                        what="the private answer")
            await bots.discord.wait_until(lambda: bots.discord_settled(sent)
                                          and len(discord_fake.followups(sent.token)) >= 1,
                                          20, what="the original response and a follow-up")

            urls = [bots.slack.sent_envelopes[e].response_url for e in (in_channel, private)]
            issued.update(response_url_credentials(bots.slack, urls))
            issued.update({f"socket ticket {n}": t for n, t in enumerate(bots.slack.socket.tickets, 1)})
            issued["slack verification token"] = bots.slack.verification_token
            issued.update({f"interaction token {n}": token for n, token in enumerate(bots.discord.interactions, 1)})

        async with http_mode_slack_bot() as (service, slack):
            assert service.http_port is not None
            slack.set_not_member(NOT_MEMBER)
            answered_url, replayed_url = slack.new_response_url(), slack.new_response_url()
            body = slash_command_form(command="/ask", text="hi", channel_id=NOT_MEMBER, response_url=answered_url,
                                      token=slack.verification_token)
            status, _ = await post_events(service.http_port, body, signed_headers(SIGNING_SECRET, body))
            assert status == 200
            # A replay past Slack's 5-minute window: bolt refuses it and logs the body it refused at INFO.
            replay = slash_command_form(command="/ask", text="hi", response_url=replayed_url)
            stale = signed_headers(SIGNING_SECRET, replay, timestamp=int(time.time()) - 600)
            assert (await post_events(service.http_port, replay, stale))[0] == 401
            await slack.wait_until(lambda: len(slack.response_url_posts(answered_url)) >= 2, 20,
                                   what="the private answer in HTTP mode")
            http_mode = response_url_credentials(slack, [answered_url, replayed_url])
            issued.update({f"HTTP mode {k}": v for k, v in http_mode.items()})

    text = log.getvalue()
    assert "WebSocket Event" in text and "webhooks/" in text  # the DEBUG lines that carry them were logged
    leaked = sorted(name for name, value in issued.items() if value in text)
    assert not leaked, f"credentials in the DEBUG log: {leaked}"


# --- the shapes, one by one ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("PATCH http://127.0.0.1:1/api/v10/webhooks/111/aW50ZXJhY3Rpb246abc-DEF_123/messages/@original with {} "
         "has returned 200", "aW50ZXJhY3Rpb246abc-DEF_123"),
        ("POST https://discord.com/api/v10/interactions/1234/tok.en-with_parts/callback has returned 204",
         "tok.en-with_parts"),
        ("POST https://discord.com/api/v10/webhooks/111/LmN0pQ-rs_tUv/ with {} has returned 200", "LmN0pQ-rs_tUv"),
        ("Sending a request - url: https://hooks.slack.com/commands/T0TEAM/123456/AbCdEf123", "AbCdEf123"),
        ("'response_url': 'https://hooks.slack.com/actions/T0TEAM/987/xyzSECRET'", "xyzSECRET"),
        ("url: https://hooks.slack.com/services/T0TEAM/B0HOOK/s3cr3tHookPart", "s3cr3tHookPart"),
        ("{'ok': True, 'url': 'wss://wss-primary.slack.com/link/?ticket=1a2b-3c4d&app_id=A0APP'}", "1a2b-3c4d"),
        ("{'token': 'legacyVerificationTok', 'team_id': 'T0TEAM'}", "legacyVerificationTok"),
        ('{"type": 2, "token": "aW50ZXJhY3Rpb246xyz", "id": "1"}', "aW50ZXJhY3Rpb246xyz"),
        ("token=aW50ZXJhY3Rpb246zzz seen in a message", "aW50ZXJhY3Rpb246zzz"),
    ],
)
def test_the_redactor_blanks_credentials_by_their_shape_not_only_by_configured_value(line: str, secret: str) -> None:
    redacted = SecretRedactor([]).redact(line)

    assert secret not in redacted and REDACTED in redacted


def test_the_redactor_keeps_what_locates_the_problem() -> None:
    line = "PATCH http://127.0.0.1:1/api/v10/webhooks/111/aW50ZXJhY3Rpb246abc/messages/@original has returned 429"

    assert SecretRedactor([]).redact(line) == \
        f"PATCH http://127.0.0.1:1/api/v10/webhooks/111/{REDACTED}/messages/@original has returned 429"
