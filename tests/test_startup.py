"""Start-up that explains itself: when a platform refuses a token, or its API cannot be reached, the real
`python -m bot` stops with one line on stderr that names the variable (and URL) and the fix, a non-zero
status, no traceback anywhere, and nothing left running.

Each test runs the process against the fakes of this repo, scripted to refuse; a closed port stands for an
unreachable API.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bot_harness import started_fakes
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.replicate_server import FakeReplicate
from tests.fakes.slack_server import FakeSlack
from tests.harness_common import DISCORD_TOKEN, GUILD, REPLICATE_TOKEN, SLACK_APP_TOKEN, SLACK_BOT_TOKEN
from tests.process_harness import ROOT, START_TIMEOUT_S, free_port

STARTUP_ERROR_STATUS = 3  # the operator's contract: 2 is a malformed setting, 3 a refused or unreachable platform
PREFIX = "Start-up error: "
REVOKED_DISCORD_TOKEN = "MTA5ODc2NTQzMjEw.Gh7kLm.revoked-discord-token-0123"
SECRETS = (REPLICATE_TOKEN, SLACK_BOT_TOKEN, SLACK_APP_TOKEN, DISCORD_TOKEN, REVOKED_DISCORD_TOKEN)
# What a leak looks like on the way out: asyncio and aiohttp report them on stderr when the process exits.
LEAK_SIGNS = ("Traceback", "Unclosed", "Task was destroyed", "was never retrieved", "ResourceWarning")


@dataclass(frozen=True)
class Finished:
    status: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@dataclass
class Fakes:
    replicate: FakeReplicate
    slack: FakeSlack
    discord: FakeDiscord

    def env(self, *, slack: bool = False, discord: bool = False, log_level: str = "ERROR",
            **overrides: str) -> dict[str, str]:
        """The environment of `python -m bot` serving the platforms asked for, as an operator would set it."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "SSL_CERT_FILE": self.replicate.ca_bundle,  # trust the fake's HTTPS file server
            # Report unclosed sockets and transports at exit, instead of Python's default of ignoring them.
            "PYTHONWARNINGS": "always::ResourceWarning",
            "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
            "REPLICATE_BASE_URL": self.replicate.base_url,
            "REPLICATE_OUTPUT_HOSTS": self.replicate.output_host,
            "PORT": "0",
            "SHUTDOWN_GRACE": "1",
            "LOG_LEVEL": log_level,
        }
        if slack:
            env.update(SLACK_BOT_TOKEN=SLACK_BOT_TOKEN, SLACK_APP_TOKEN=SLACK_APP_TOKEN,
                       SLACK_API_URL=self.slack.api_url)
        if discord:
            env.update(DISCORD_TOKEN=DISCORD_TOKEN, DISCORD_API_URL=self.discord.api_url,
                       DISCORD_GATEWAY_URL=self.discord.gateway_url, DISCORD_GUILD_IDS=str(GUILD))
        env.update(overrides)
        return env


@asynccontextmanager
async def fakes() -> AsyncIterator[Fakes]:
    async with started_fakes() as (replicate, slack, discord):
        assert slack is not None and discord is not None
        yield Fakes(replicate, slack, discord)


async def run_bot(env: dict[str, str], cwd: Path) -> Finished:
    """`python -m bot` until it exits by itself; one that keeps running is a failure (it would serve half-alive)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        raise AssertionError(f"the bot was still running after {START_TIMEOUT_S}s:\n"
                             f"{stderr.decode(errors='replace')[-4000:]}") from None
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


def closed_port_url(path: str) -> str:
    """A URL nothing listens on (the port was free a moment ago): connections to it are refused."""
    return f"http://127.0.0.1:{free_port()}{path}"


def explanation(finished: Finished) -> str:
    """The one line the operator gets, after checking it is all they get (at LOG_LEVEL=ERROR)."""
    assert finished.status == STARTUP_ERROR_STATUS, finished.stderr
    assert finished.stdout == ""
    assert len(finished.stderr_lines) == 1, finished.stderr
    (line,) = finished.stderr_lines
    assert line.startswith(PREFIX)
    for secret in SECRETS:
        assert secret not in line
    return line


# --- Slack ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["token_revoked", "invalid_auth", "account_inactive"])
async def test_a_refused_slack_bot_token_stops_start_up_with_one_line_naming_it(tmp_path: Path, error: str) -> None:
    async with fakes() as fake:
        fake.slack.fail("auth.test", error, times=100)

        line = explanation(await run_bot(fake.env(slack=True), tmp_path))

    assert "SLACK_BOT_TOKEN" in line and error in line
    assert "OAuth & Permissions" in line  # where a new one is copied from


async def test_a_refused_slack_app_token_stops_start_up_instead_of_retrying_forever(tmp_path: Path) -> None:
    async with fakes() as fake:
        fake.slack.fail("apps.connections.open", "invalid_auth", times=100)

        line = explanation(await run_bot(fake.env(slack=True), tmp_path))

        assert len(fake.slack.requests_to("apps.connections.open")) == 1
    assert "SLACK_APP_TOKEN" in line and "invalid_auth" in line
    assert "connections:write" in line


async def test_an_unreachable_slack_api_stops_start_up_with_one_line_naming_the_url(tmp_path: Path) -> None:
    url = closed_port_url("/api/")
    async with fakes() as fake:
        line = explanation(await run_bot(fake.env(slack=True, SLACK_API_URL=url), tmp_path))

    assert f"SLACK_API_URL {url}" in line and "connection refused" in line
    assert "https://slack.com/api/" in line  # the fix: the default it could go back to


# --- Discord -------------------------------------------------------------------------------------------


async def test_a_refused_discord_token_stops_start_up_with_one_line_naming_it(tmp_path: Path) -> None:
    async with fakes() as fake:
        line = explanation(await run_bot(fake.env(discord=True, DISCORD_TOKEN=REVOKED_DISCORD_TOKEN), tmp_path))

        assert [request.status for request in fake.discord.requests_to("GET", "^/users/@me$")] == [401]
    assert "DISCORD_TOKEN" in line and "401" in line
    assert "Reset Token" in line


async def test_an_unreachable_discord_api_stops_start_up_with_one_line_naming_the_url(tmp_path: Path) -> None:
    url = closed_port_url("/api/v10")
    async with fakes() as fake:
        line = explanation(await run_bot(fake.env(discord=True, DISCORD_API_URL=url), tmp_path))

    assert f"DISCORD_API_URL {url}" in line and "connection refused" in line
    assert "https://discord.com/api/v10" in line


async def test_a_gateway_refusing_the_token_after_login_stops_the_bot_instead_of_leaving_it_half_alive(
    tmp_path: Path,
) -> None:
    async with fakes() as fake:
        fake.discord.refuse_identify(4004)

        line = explanation(await run_bot(fake.env(slack=True, discord=True), tmp_path))

        assert fake.discord.gateway.identify_payloads  # it did log in over REST and identify on the gateway
    assert "DISCORD_TOKEN" in line and "4004" in line
    assert "Reset Token" in line


# --- what is left behind -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ["slack app token refused", "discord gateway 4004"])
async def test_a_failed_start_closes_everything_and_logs_no_traceback_even_at_debug(
    tmp_path: Path, scenario: str
) -> None:
    """Slack was signed in (its session open) or both platforms were up when the failure came."""
    async with fakes() as fake:
        if scenario == "slack app token refused":
            fake.slack.fail("apps.connections.open", "token_revoked", times=100)
        else:
            fake.discord.refuse_identify(4004)

        finished = await run_bot(fake.env(slack=True, discord=True, log_level="DEBUG"), tmp_path)

    assert finished.status == STARTUP_ERROR_STATUS
    output = finished.stdout + finished.stderr
    for sign in LEAK_SIGNS:
        assert sign not in output, output[-4000:]
    for secret in SECRETS:
        assert secret not in output
    assert [line for line in finished.stderr_lines if PREFIX in line] == [finished.stderr_lines[-1]]
    assert "Stopped cleanly" in finished.stderr  # the service was shut down, not abandoned


async def test_a_port_already_in_use_stops_start_up_with_one_line_naming_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with fakes() as fake:
            line = explanation(await run_bot(fake.env(discord=True, PORT=str(port)), tmp_path))

    assert f"PORT {port}" in line and "in use" in line

