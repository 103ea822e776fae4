"""Discord's `/replicate` (help, models, usage: everyone) and `/replicate-admin` (the operator's controls).

Two command groups, because Discord can't hide single subcommands: discord.py's `app_commands.default_permissions`
"does nothing in subcommands" (its docstring). `/replicate-admin` is shown by default only to members with Manage
Server; a server can change who sees it, so the core decides again who is an admin. Each subcommand builds the words
the core parses (`limit <@123> ask 10/day`), the same words Slack's text and the console's line carry, and the
answer is ephemeral, sent with no allowed mentions.
"""

# No `from __future__ import annotations`: discord.py reads the command signatures' annotations at runtime.

import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Optional

import discord
from discord import app_commands

from adapters.base import CommandIntake
from adapters.discord_commands import origin_of
from adapters.discord_format import fit

log = logging.getLogger(__name__)

MEMBER_GROUP = "replicate"
ADMIN_GROUP = "replicate-admin"
ADMIN_PERMISSIONS = discord.Permissions(manage_guild=True)  # who sees /replicate-admin unless a server changes it
NO_MENTIONS = discord.AllowedMentions.none()

Administer = Callable[[discord.Interaction, str], Awaitable[None]]


def build_groups(administer: Administer) -> list[app_commands.Group]:
    """`/replicate` and `/replicate-admin`; each subcommand calls `administer(interaction, words)`."""
    member = app_commands.Group(name=MEMBER_GROUP, description="Help, the models each command can use, your use")
    admin = app_commands.Group(
        name=ADMIN_GROUP,
        description="The bot's controls: limits, blocks, pause (admins only)",
        default_permissions=ADMIN_PERMISSIONS,
    )

    @member.command(name="help", description="How to use the bot")
    async def member_help(interaction: discord.Interaction) -> None:
        await administer(interaction, "help")

    @member.command(name="models", description="The models each command can use")
    async def member_models(interaction: discord.Interaction) -> None:
        await administer(interaction, "models")

    @member.command(name="usage", description="Your use today and what is left of your limits")
    async def member_usage(interaction: discord.Interaction) -> None:
        await administer(interaction, "usage")

    @admin.command(name="usage", description="Anyone's use, the top users and today's spend")
    @app_commands.describe(user="Whose use (leave out for your own)")
    async def admin_usage(
        interaction: discord.Interaction, user: Optional[discord.User] = None  # noqa: UP045 (read at runtime)
    ) -> None:
        await administer(interaction, "usage" + (f" {_mention(user)}" if user is not None else ""))

    @admin.command(name="limit", description="Set a per-user limit on a command")
    @app_commands.describe(
        command="The command to limit",
        limit="N/hour or N/day (e.g. 10/day), none, or reset (back to the configured limit)",
        user="Whose limit (leave out to set everyone's default)",
    )
    async def admin_limit(
        interaction: discord.Interaction,
        command: Literal["ask", "imagine"],
        limit: app_commands.Range[str, 1, 20],
        user: Optional[discord.User] = None,  # noqa: UP045 (read at runtime)
    ) -> None:
        target = _mention(user) if user is not None else "default"
        await administer(interaction, f"limit {target} {command} {limit}")

    @admin.command(name="block", description="Refuse a user's commands")
    @app_commands.describe(user="Who to block")
    async def admin_block(interaction: discord.Interaction, user: discord.User) -> None:
        await administer(interaction, f"block {_mention(user)}")

    @admin.command(name="unblock", description="Take a user's commands again")
    @app_commands.describe(user="Who to unblock")
    async def admin_unblock(interaction: discord.Interaction, user: discord.User) -> None:
        await administer(interaction, f"unblock {_mention(user)}")

    @admin.command(name="pause", description="Refuse every new command until resumed")
    async def admin_pause(interaction: discord.Interaction) -> None:
        await administer(interaction, "pause")

    @admin.command(name="resume", description="Take commands again after a pause")
    async def admin_resume(interaction: discord.Interaction) -> None:
        await administer(interaction, "resume")

    return [member, admin]


def _mention(user: discord.abc.Snowflake) -> str:
    return f"<@{user.id}>"


class DiscordAdministration:
    """Answers the groups' subcommands through `CommandIntake.administer`, ephemerally."""

    def __init__(self, intake: CommandIntake) -> None:
        self._intake = intake

    def groups(self) -> list[app_commands.Group]:
        return build_groups(self.administer)

    async def administer(self, interaction: discord.Interaction, text: str) -> None:
        async def in_ack(answer: str) -> None:
            await interaction.response.send_message(fit(answer), ephemeral=True, allowed_mentions=NO_MENTIONS)

        async def acknowledge() -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)

        async def later(answer: str) -> None:
            # The first follow-up after a deferral replaces its "thinking…" message (and keeps it ephemeral).
            try:
                await interaction.followup.send(fit(answer), ephemeral=True, allowed_mentions=NO_MENTIONS)
            except discord.HTTPException as refused:
                log.warning("Discord: /replicate's answer was refused (%s, code %s)", refused.status, refused.code)

        await self._intake.administer(
            delivery_key=str(interaction.id),
            origin=origin_of(interaction),
            text=text,
            answer_in_ack=in_ack,
            acknowledge=acknowledge,
            answer_later=later,
        )
