"""What a Slack slash command's payload means to the core: who asked where, and the key of its delivery."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.requests import Origin


def command_origin(command: Mapping[str, Any]) -> Origin:
    return Origin(
        platform="slack",
        user_id=command.get("user_id", ""),
        channel_id=command.get("channel_id", ""),
        user_name=command.get("user_name"),
        workspace_id=command.get("team_id"),
    )


def command_delivery_key(command: Mapping[str, Any]) -> str:
    """A slash command's trigger id is unique per invocation; Slack redelivers with the same one."""
    return f"{command.get('team_id')}:{command.get('trigger_id')}"
