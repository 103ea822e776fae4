"""The HTTP port against slow and hostile clients, over the wire: raw sockets against the running `BotService`.

Idle and half-sent connections are closed by the server within their deadlines (each test awaits the socket's
EOF with a timeout), extra connections past the cap are refused, oversized bodies get 413, a malformed Slack
timestamp gets 401 without an error in the log, and `/healthz` listens on loopback unless Slack needs the port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from config.settings import SettingsError, load_settings
from service.bot_service import BotService
from service.http_server import BODY_READ_TIMEOUT_S, IDLE_TIMEOUT_S, LINGERING_S, MAX_BODY_BYTES, MAX_CONNECTIONS
from tests.bot_harness import running_bots, started_fakes
from tests.fakes.slack_server import FakeSlack, signed_headers, slash_command_form
from tests.harness_common import FAST_POLICY, bot_settings

SIGNING_SECRET = "http-hardening-signing-secret"
MARGIN_S = 3.0  # generous: the server's own timer decides; without it the wait is an hour (aiohttp's 3630 s)
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def http_mode_bot() -> AsyncIterator[BotService]:
    """Slack in HTTP mode (signing secret, no app token): the port serves `/slack/events`."""
    async with http_mode_slack_bot() as (service, _):
        yield service


@asynccontextmanager
async def http_mode_slack_bot() -> AsyncIterator[tuple[BotService, FakeSlack]]:
    """`http_mode_bot`, with the fake Slack it talks to."""
    async with started_fakes(slack=True, discord=False) as (replicate, slack, _):
        assert slack is not None
        settings = bot_settings(replicate, slack, None, slack_app_token=None, slack_signing_secret=SIGNING_SECRET)
        service = BotService(settings, FAST_POLICY)
        try:
            await service.start()
            yield service, slack
        finally:
            await service.shutdown()


async def connect(port: int) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_by_server(connection: Connection, timeout: float) -> bytes:
    """Everything the server sent until it closed the connection; TimeoutError if it kept it open."""
    reader, writer = connection
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def healthz_status(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status


async def post_events(port: int, body: bytes | str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.post(f"http://127.0.0.1:{port}/slack/events", data=body, headers=headers) as response:
        return response.status, await response.text()


# --- slow clients -------------------------------------------------------------------------------------


async def test_idle_connections_and_half_sent_requests_are_closed_by_the_server() -> None:
    async with http_mode_bot() as service:
        assert service.http_port is not None
        idle = [await connect(service.http_port) for _ in range(20)]
        half_heads = [await connect(service.http_port) for _ in range(20)]
        for _, writer in half_heads:
            writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nX-Slack-Request-Ti")  # never finished
        half_bodies = [await connect(service.http_port) for _ in range(20)]
        for _, writer in half_bodies:
            writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\nContent-Type: application/x-www-form-urlencoded"
                         b"\r\nContent-Length: 1000\r\n\r\ncommand=%2Fask&text=")  # 980 bytes never come

        head_deadline = IDLE_TIMEOUT_S + MARGIN_S
        body_deadline = BODY_READ_TIMEOUT_S + LINGERING_S + MARGIN_S
        idle_sent, head_sent, body_sent = await asyncio.gather(
            asyncio.gather(*(closed_by_server(c, head_deadline) for c in idle)),
            asyncio.gather(*(closed_by_server(c, head_deadline) for c in half_heads)),
            asyncio.gather(*(closed_by_server(c, body_deadline) for c in half_bodies)),
        )

        assert set(idle_sent) == {b""} and set(head_sent) == {b""}  # closed without a word
        assert all(sent.startswith(b"HTTP/1.1 408 ") for sent in body_sent), body_sent[0]
        assert await healthz_status(service.http_port) == 200


async def test_connections_past_the_cap_are_refused_until_the_held_ones_close() -> None:
    async with running_bots(slack=False, discord=True) as bots:
        port = bots.service.http_port
        assert port is not None
        held = [await connect(port) for _ in range(MAX_CONNECTIONS)]
        extra = [await connect(port) for _ in range(20)]

        refusals = await asyncio.gather(*(closed_by_server(c, MARGIN_S) for c in extra))

        assert all(r.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in r for r in refusals), refusals[0]
        # The held ones are closed at the idle timeout, which frees their places: the port serves again.
        await asyncio.gather(*(closed_by_server(c, IDLE_TIMEOUT_S + MARGIN_S) for c in held))
        assert await healthz_status(port) == 200


# --- bodies and headers -----------------------------------------------------------------------------


async def test_a_body_over_the_cap_gets_413_whether_declared_or_streamed() -> None:
    oversized = b"text=" + b"a" * MAX_BODY_BYTES

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: aiohttp's client sends it chunked
        for start in range(0, len(oversized), 64 * 1024):
            yield oversized[start:start + 64 * 1024]

    async with http_mode_bot() as service:
        assert service.http_port is not None
        headers = signed_headers(SIGNING_SECRET, oversized.decode())

        declared, _ = await post_events(service.http_port, oversized, headers)
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{service.http_port}/slack/events", data=chunks(), headers=headers
        ) as response:
            streamed = response.status

        assert (declared, streamed) == (413, 413)
        assert await healthz_status(service.http_port) == 200


@pytest.mark.parametrize("timestamp", ["abc", "", "1e9", "0x10"])
async def test_a_malformed_slack_timestamp_gets_401_and_logs_no_error(
    caplog: pytest.LogCaptureFixture, timestamp: str
) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_mode_bot() as service:
        assert service.http_port is not None
        body = slash_command_form(command="/ask", text="hi")
        headers = {**signed_headers(SIGNING_SECRET, body), "X-Slack-Request-Timestamp": timestamp}

        status, _ = await post_events(service.http_port, body, headers)

    assert status == 401
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []
    assert "Traceback" not in caplog.text


# --- where the port listens -------------------------------------------------------------------------
# Linux routes all of 127.0.0.0/8 to loopback: a socket bound to 127.0.0.1 refuses 127.0.0.2, while one bound to
# every interface (0.0.0.0) takes it like any other address of the host.
OTHER_ADDRESS = "127.0.0.2"


async def reachable_at(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return False
    writer.close()
    return True


async def test_healthz_listens_on_loopback_only_in_socket_mode_and_discord_only_mode() -> None:
    for slack, discord in ((True, False), (False, True)):
        async with running_bots(slack=slack, discord=discord) as bots:
            port = bots.service.http_port
            assert port is not None and await healthz_status(port) == 200
            assert not await reachable_at(OTHER_ADDRESS, port)
            assert bots.service.http_host == "127.0.0.1"


async def test_the_port_listens_on_every_interface_in_slack_http_mode_or_when_http_host_says_so() -> None:
    async with http_mode_bot() as service:
        assert service.http_host == "0.0.0.0" and service.http_port is not None
        assert await reachable_at(OTHER_ADDRESS, service.http_port)
    async with running_bots(slack=False, discord=True, http_host="0.0.0.0") as bots:
        assert bots.service.http_host == "0.0.0.0" and bots.service.http_port is not None
        assert await reachable_at(OTHER_ADDRESS, bots.service.http_port)


def test_http_host_is_read_from_the_environment_and_must_be_an_ip_address() -> None:
    base = {"REPLICATE_API_TOKEN": "r8_x", "DISCORD_TOKEN": "abc.def.ghi"}
    assert load_settings({**base}, env_file=None).http_listen_host == "127.0.0.1"
    assert load_settings({**base, "HTTP_HOST": "0.0.0.0"}, env_file=None).http_listen_host == "0.0.0.0"
    http_mode = {**base, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
    assert load_settings(http_mode, env_file=None).http_listen_host == "0.0.0.0"
    assert load_settings({**http_mode, "HTTP_HOST": "127.0.0.1"}, env_file=None).http_listen_host == "127.0.0.1"
    with pytest.raises(SettingsError, match="HTTP_HOST"):
        load_settings({**base, "HTTP_HOST": "example.com"}, env_file=None)
