"""`python -m bot`: load settings, set up logging, then run the console or serve every configured platform.

Exit statuses: 0 after a clean stop; 2 for a missing or malformed setting; 3 when a platform refuses a token,
can't be reached, or the port is taken. Either error is one line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from adapters.console import ConsoleAdapter, stdin_lines
from adapters.discord_commands import invite_url
from adapters.startup import StartupError
from bot.factory import create_core
from bot.logs import install_logging
from config.settings import Settings, SettingsError, load_settings
from service.bot_service import BotService, open_state

log = logging.getLogger(__name__)
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
    install_logging("WARNING" if console_quiet else settings.log_level, settings.secrets,
                    log_format=settings.log_format)
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
        raise SettingsError(
            "DISCORD_TOKEN", "is not a bot token", "copy it again from the Developer Portal's Bot page"
        ) from None
    return 0


async def run_console(settings: Settings) -> int:
    resources = create_core(settings)
    try:
        await open_state(resources)
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
