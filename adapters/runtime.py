"""The process: load settings, set up logging, start the console or every configured chat adapter."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence

from adapters.console import ConsoleAdapter, stdin_lines
from adapters.discord_adapter import DiscordAdapter, DiscordConfig
from adapters.discord_commands import invite_url
from adapters.health import RECONNECT_WINDOW_S, ConnectionProbe, HealthMonitor
from adapters.http_server import HttpPort
from adapters.slack import SlackAdapter, SlackConfig
from adapters.startup import StartupError
from bot.factory import create_core
from bot.logs import install_logging
from bot.runner import RunPolicy
from bot.tasks import BackgroundTasks
from config.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)
# After SHUTDOWN_GRACE, everything else (cancels on Replicate, the users' last replies, closing connections)
# fits in SHUTDOWN_TAIL_S: with the default grace of 25 s the process is gone before Heroku's kill at 30 s
# (devcenter.heroku.com/articles/dynos#shutdown). Cancels get the first part, last replies the rest.
SHUTDOWN_TAIL_S = 4.0
CANCELS_SHARE_S = 2.0
CLOSE_RESERVE_S = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

CONFIGURATION_ERROR_STATUS = 2  # a missing or malformed setting
STARTUP_ERROR_STATUS = 3  # a platform refused a token or could not be reached

USAGE = "usage: python -m bot [console | discord-invite]"


def main(argv: Sequence[str]) -> int:
    """Exit status: 0 after a clean stop; 2 for a missing or malformed setting, 3 when a platform refuses a
    token or cannot be reached (both: one line on stderr, `Configuration error: ...` / `Start-up error: ...`)."""
    if list(argv) not in ([], ["console"], ["discord-invite"]):
        print(USAGE, file=sys.stderr)
        return CONFIGURATION_ERROR_STATUS
    try:
        settings = load_settings()
        if argv == ["discord-invite"]:
            return print_discord_invite(settings)
        settings.require_replicate_token()
    except SettingsError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return CONFIGURATION_ERROR_STATUS
    # The terminal shows the conversation; routine INFO lines would drown it unless asked for.
    console_quiet = argv == ["console"] and settings.log_level == "INFO"
    install_logging("WARNING" if console_quiet else settings.log_level, _secrets(settings))
    if argv == ["console"]:
        return asyncio.run(run_console(settings))
    try:
        return asyncio.run(serve(settings))
    except StartupError as error:
        print(f"Start-up error: {error}", file=sys.stderr)  # after the service was shut down: the last line
        return STARTUP_ERROR_STATUS


def print_discord_invite(settings: Settings) -> int:
    if not settings.discord_token:
        raise SettingsError("DISCORD_TOKEN", "is not set", "copy the bot token from the Developer Portal's Bot page")
    try:
        print(invite_url(settings.discord_token))
    except ValueError:
        raise SettingsError("DISCORD_TOKEN", "is not a bot token", "copy it again from the Developer Portal's Bot page") from None
    return 0


async def run_console(settings: Settings) -> int:
    resources = create_core(settings)
    try:
        await resources.load_models()
        adapter = ConsoleAdapter(resources.core, sys.stdout, settings.image_dir, interactive=sys.stdin.isatty())
        await adapter.run(stdin_lines())
    finally:
        await resources.core.drain(0)
        await resources.aclose()
    return 0


async def serve(settings: Settings) -> int:
    """Every adapter whose credentials are present, in one process and one event loop, until SIGTERM/SIGINT.

    Raises `StartupError` (after shutting everything down) if a platform refuses the bot or can't be reached.
    """
    if not (settings.slack_enabled or settings.discord_enabled):
        print(
            "Configuration error: no chat platform is configured: set SLACK_BOT_TOKEN (with SLACK_APP_TOKEN or "
            "SLACK_SIGNING_SECRET) and/or DISCORD_TOKEN, or try the bot with `python -m bot console`",
            file=sys.stderr,
        )
        return CONFIGURATION_ERROR_STATUS
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in STOP_SIGNALS:
        loop.add_signal_handler(signal_number, stop.set)
    service = BotService(settings)
    try:
        await service.start()
        log.info("Bot running: %s", ", ".join(service.adapter_names))
        await service.run_until(stop)
        log.info("Stopping: finishing in-flight commands for up to %.0fs", settings.shutdown_grace_s)
    finally:
        await service.shutdown()
        for signal_number in STOP_SIGNALS:
            loop.remove_signal_handler(signal_number)
    return 0


class BotService:
    """The chat adapters, the HTTP server (health, Slack HTTP mode) and the core, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        policy: RunPolicy | None = None,
        *,
        reconnect_window_s: float = RECONNECT_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._resources = create_core(settings, policy)
        self.core = self._resources.core
        self.tasks = BackgroundTasks("command")
        self.slack: SlackAdapter | None = None
        self.discord: DiscordAdapter | None = None
        if settings.slack_enabled:
            assert settings.slack_bot_token is not None
            self.slack = SlackAdapter(
                self.core,
                SlackConfig(
                    bot_token=settings.slack_bot_token,
                    api_url=settings.slack_api_url,
                    app_token=settings.slack_app_token,
                    signing_secret=settings.slack_signing_secret,
                ),
                self.tasks,
            )
        if settings.discord_enabled:
            assert settings.discord_token is not None
            self.discord = DiscordAdapter(
                self.core,
                DiscordConfig(
                    token=settings.discord_token,
                    api_url=settings.discord_api_url,
                    gateway_url=settings.discord_gateway_url,
                    guild_ids=settings.discord_guild_ids,
                ),
                self.tasks,
            )
        probes: dict[str, ConnectionProbe] = {}
        if self.slack is not None:
            probes["slack"] = self.slack.is_connected
        if self.discord is not None:
            probes["discord"] = self.discord.is_connected
        self.health = HealthMonitor(self.core, probes, reconnect_window_s=reconnect_window_s, clock=clock)
        self._http: HttpPort | None = None
        self.http_host: str | None = None  # where the HTTP port is bound, once started
        self.http_port: int | None = None

    @property
    def adapter_names(self) -> list[str]:
        return [name for name, adapter in (("slack", self.slack), ("discord", self.discord)) if adapter is not None]

    async def start(self) -> None:
        # First: the models decide which commands and options the adapters offer (Discord registers them).
        await self._resources.load_models()
        routes = self.health.routes() + (self.slack.http_routes() if self.slack is not None else [])
        self._http = HttpPort(routes)
        try:
            await self._http.start(self._settings.http_listen_host, self._settings.port)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            what = f"PORT {self._settings.port} is already in use"
            raise StartupError(what, "stop what listens there, or set PORT to a free port") from error
        self.http_host, self.http_port = self._http.address
        log.info("HTTP: %s on %s:%d", ", ".join(sorted({route.path for route in routes})), self.http_host,
                 self.http_port)
        if self.slack is not None:
            await self.slack.start()
        if self.discord is not None:
            await self.discord.start()

    async def run_until(self, stop: asyncio.Event) -> None:
        """Until `stop` is set; raises `StartupError` if Discord's gateway refuses the bot meanwhile (a bot that
        cannot get its commands must stop, not look alive on `/healthz`)."""
        waits = {asyncio.create_task(stop.wait(), name="stop-signal")}
        if self.discord is not None:
            waits.add(asyncio.create_task(self.discord.wait_closed(), name="discord-gateway-watch"))
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        for wait in done:
            wait.result()  # the gateway's StartupError, if that is what ended the wait

    async def shutdown(self) -> None:
        """Refuse new commands, let in-flight ones finish within the grace, cancel the rest, close everything."""
        loop = asyncio.get_running_loop()
        grace_ends = loop.time() + self._settings.shutdown_grace_s
        self.core.stop_accepting()
        await self.core.drain(self._settings.shutdown_grace_s, cancels_by=grace_ends + CANCELS_SHARE_S)
        replies_by = grace_ends + SHUTDOWN_TAIL_S - CLOSE_RESERVE_S
        await self.tasks.wait(max(replies_by - loop.time(), 0.0))  # the cancelled commands' last replies
        await self.tasks.cancel_all()
        if self.slack is not None:
            await self.slack.close()
        if self.discord is not None:
            await self.discord.close()
        if self._http is not None:
            await self._http.close()
        await self._resources.aclose()
        log.info("Stopped cleanly")


def _secrets(settings: Settings) -> list[str | None]:
    return [
        settings.replicate_api_token,
        settings.slack_bot_token,
        settings.slack_app_token,
        settings.slack_signing_secret,
        settings.discord_token,
    ]
