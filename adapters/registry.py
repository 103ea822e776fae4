"""The chat platforms the service can run: one builder per platform module, each returning its adapter when
the settings configure it (None otherwise). A new platform adds its module and one line here."""

from __future__ import annotations

from adapters.base import AdapterBuilder
from adapters.discord_adapter import build_discord_adapter
from adapters.slack import build_slack_adapter

PLATFORMS: tuple[AdapterBuilder, ...] = (build_slack_adapter, build_discord_adapter)
