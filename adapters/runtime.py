"""The process: load settings, set up logging, start the console or every configured chat adapter."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from adapters.console import ConsoleAdapter, stdin_lines
from bot.factory import create_core
from bot.logs import install_logging
from config.settings import Settings, SettingsError, load_settings

USAGE = "usage: python -m bot [console]"


def main(argv: Sequence[str]) -> int:
    """Exit status: 0 after a clean stop, 2 for a configuration problem (one line on stderr)."""
    if list(argv) not in ([], ["console"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        settings.require_replicate_token()
    except SettingsError as error:
        print(f"Configuration error: {error}", file=sys.stderr)
        return 2
    install_logging(settings.log_level if argv else settings.log_level, _secrets(settings))
    if argv == ["console"]:
        return asyncio.run(run_console(settings))
    return asyncio.run(serve(settings))


async def run_console(settings: Settings) -> int:
    resources = create_core(settings)
    try:
        adapter = ConsoleAdapter(resources.core, sys.stdout, settings.image_dir, interactive=sys.stdin.isatty())
        await adapter.run(stdin_lines())
    finally:
        await resources.core.drain(0)
        await resources.aclose()
    return 0


async def serve(settings: Settings) -> int:
    """Every adapter whose credentials are present, in one process and one event loop."""
    if not (settings.slack_enabled or settings.discord_enabled):
        print(
            "Configuration error: no chat platform is configured: set SLACK_BOT_TOKEN (with SLACK_APP_TOKEN or "
            "SLACK_SIGNING_SECRET) and/or DISCORD_TOKEN, or try the bot with `python -m bot console`",
            file=sys.stderr,
        )
        return 2
    raise NotImplementedError("chat adapters arrive with the Slack and Discord issues")


def _secrets(settings: Settings) -> list[str | None]:
    return [
        settings.replicate_api_token,
        settings.slack_bot_token,
        settings.slack_app_token,
        settings.slack_signing_secret,
        settings.discord_token,
    ]
