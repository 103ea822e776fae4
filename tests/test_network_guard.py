"""The suite's network guard (tests/conftest.py): loopback only, and a blocked attempt fails its test."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from tests.conftest import NetworkBlocked, forget_blocked

DOCUMENTATION_ADDRESS = "192.0.2.1"  # TEST-NET-1 (RFC 5737): the guard raises before any packet is sent


def test_a_connection_beyond_the_loopback_is_refused_before_it_is_made() -> None:
    with socket.socket() as sock, pytest.raises(NetworkBlocked, match=r"192\.0\.2\.1"):
        sock.connect((DOCUMENTATION_ADDRESS, 443))
    forget_blocked()


async def test_asyncio_connections_are_guarded_too() -> None:
    with pytest.raises(NetworkBlocked):
        await asyncio.open_connection(DOCUMENTATION_ADDRESS, 443)
    forget_blocked()


async def test_loopback_connections_pass() -> None:
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()


def test_the_bot_settings_of_the_developers_shell_are_not_seen() -> None:
    assert not [name for name in os.environ if name.startswith(("REPLICATE_", "SLACK_", "DISCORD_"))]
