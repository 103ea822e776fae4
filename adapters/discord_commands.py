"""Discord's slash commands: built from the option table (`bot.options`), registered only when they changed,
and the invite URL that grants what they need.

Each command is a typed callback, as discord.py reads it (`inspect.signature`, which honours `__signature__`):
`app_commands.Range` for bounded numbers, `app_commands.choices` for lists, `app_commands.describe` for help
(discord.py's examples/app_commands/basic.py). An option a command's models can't use is not offered at all.
"""

# No `from __future__ import annotations`: discord.py reads the signatures' annotations at runtime.

import base64
import binascii
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Optional

import discord
from discord import app_commands

from bot.models import ModelKind
from bot.options import OptionSpec, ValueType
from bot.requests import CommandName, Origin

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's limit per option
MAX_DESCRIPTION_CHARS = 100
COMMAND_DESCRIPTIONS = {
    CommandName.ASK: "Ask a model on Replicate",
    CommandName.IMAGINE: "Generate an image on Replicate",
}
PROMPT_DESCRIPTIONS = {CommandName.ASK: "Your question", CommandName.IMAGINE: "What to draw"}
MODEL_KINDS = {CommandName.ASK: ModelKind.TEXT, CommandName.IMAGINE: ModelKind.IMAGE}
# Send Messages, Embed Links, Attach Files, and Read Message History, without which Discord refuses a reply to a
# message (https://discord.com/developers/docs/resources/message#create-message); scopes bot + applications.commands.
INVITE_PERMISSIONS = discord.Permissions(
    send_messages=True, embed_links=True, attach_files=True, read_message_history=True
)
INVITE_SCOPES = ("bot", "applications.commands")

OnCommand = Callable[[discord.Interaction, CommandName, str, Mapping[str, object]], Awaitable[None]]


def invite_url(token: str) -> str:
    """The invite URL for the bot whose token this is (a bot token's first part is its id, in base64)."""
    first_part = token.split(".", 1)[0]
    try:
        application_id = base64.b64decode(first_part + "=" * (-len(first_part) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("DISCORD_TOKEN does not look like a bot token") from None
    if not application_id.isdigit():
        raise ValueError("DISCORD_TOKEN does not look like a bot token")
    return discord.utils.oauth_url(int(application_id), permissions=INVITE_PERMISSIONS, scopes=INVITE_SCOPES)


def origin_of(interaction: discord.Interaction) -> Origin:
    """Who invoked a command, and where. A member with Manage Server administers the bot in that server (the
    core decides; in a DM no one does by permission)."""
    return Origin(
        platform="discord",
        user_id=str(interaction.user.id),
        channel_id=str(interaction.channel_id),
        user_name=interaction.user.name,
        workspace_id=str(interaction.guild_id) if interaction.guild_id else None,
        platform_admin=interaction.guild_id is not None and interaction.permissions.manage_guild,
    )


def build_command(
    command: CommandName,
    on_command: OnCommand,
    offered: Sequence[OptionSpec],
    *,
    upper_bounds: Mapping[str, float] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> app_commands.Command[Any, ..., None]:
    """`/command prompt [options…]` offering `offered` (from the table), each typed, bounded and described."""

    async def callback(interaction: discord.Interaction, prompt: str, **options: object) -> None:
        await on_command(interaction, command, prompt, options)

    interaction = inspect.Parameter(
        "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
    )
    prompt = inspect.Parameter("prompt", inspect.Parameter.KEYWORD_ONLY, annotation=str)
    typed = [
        inspect.Parameter(spec.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                          # Optional[...], as discord.py documents optional parameters: this annotation is
                          # read at runtime, and `X | None` would need `|` on each of discord.py's transformers.
                          annotation=Optional[_annotation(spec, (upper_bounds or {}).get(spec.name))])  # noqa: UP045
        for spec in offered
    ]
    # Functions don't declare `__signature__`, but `inspect.signature` (and so discord.py) reads it.
    callback.__signature__ = inspect.Signature([interaction, prompt, *typed])  # type: ignore[attr-defined]
    descriptions = {"prompt": PROMPT_DESCRIPTIONS[command]}
    descriptions |= {spec.name: spec.description[:MAX_DESCRIPTION_CHARS] for spec in offered}
    described = app_commands.describe(**descriptions)(callback)
    listed = {
        name: [app_commands.Choice(name=value[:MAX_DESCRIPTION_CHARS], value=value) for value in values[:MAX_CHOICES]]
        for name, values in (choices or {}).items()
        if values and any(spec.name == name for spec in offered)
    }
    if listed:
        described = app_commands.choices(**listed)(described)
    return app_commands.Command(name=str(command), description=COMMAND_DESCRIPTIONS[command], callback=described)


def _annotation(spec: OptionSpec, upper_bound: float | None) -> Any:
    high = upper_bound if upper_bound is not None else spec.high
    if spec.value_type is ValueType.INTEGER:
        return app_commands.Range[int, int(spec.low or 0), int(high) if high is not None else None]
    if spec.value_type is ValueType.NUMBER:
        return app_commands.Range[float, spec.low, high]
    return str


async def register_commands(
    client: discord.Client, tree: app_commands.CommandTree, guild_ids: Sequence[int]
) -> int:
    """PUT the command set only where it differs from what Discord has (PUTs are rate limited per day).

    Returns how many registrations were skipped as unchanged."""
    application_id = client.application_id
    assert application_id is not None
    skipped = 0
    targets: list[discord.Object | None] = [discord.Object(id=gid) for gid in guild_ids] or [None]
    for guild in targets:
        if guild is not None:
            tree.copy_global_to(guild=guild)
            current = await client.http.get_guild_commands(application_id, guild.id)
        else:
            current = await client.http.get_global_commands(application_id)
        wanted = [command.to_dict(tree) for command in tree.get_commands(guild=guild)]
        if _command_shape(current) == _command_shape(wanted):
            skipped += 1
            log.info("Discord: commands unchanged in %s; not re-registering", guild.id if guild else "global scope")
            continue
        await tree.sync(guild=guild)
        names = ", ".join(f"/{command['name']}" for command in wanted)
        log.info("Discord: registered %s in %s", names, guild.id if guild else "global scope")
    return skipped


_OPTION_KEYS = ("type", "name", "description", "required", "choices", "min_value", "max_value", "min_length",
                "max_length", "autocomplete")


def _command_shape(commands: Any) -> list[dict[str, Any]]:
    """What decides whether two command sets differ, ignoring fields Discord adds (ids, versions…)."""

    def option_shape(option: Mapping[str, Any]) -> dict[str, Any]:
        shape = {key: option.get(key) for key in _OPTION_KEYS}
        shape["required"] = bool(option.get("required", False))
        shape["autocomplete"] = bool(option.get("autocomplete", False))
        shape["options"] = [option_shape(child) for child in option.get("options") or []]
        return shape

    return sorted(
        ({"name": c.get("name"), "description": c.get("description"), "type": c.get("type", 1),
          # Who sees the command by default (a bit set, which Discord echoes as a string).
          "default_member_permissions": _permissions(c.get("default_member_permissions")),
          "options": [option_shape(o) for o in c.get("options") or []]} for c in commands),
        key=lambda shape: str(shape["name"]),
    )



def _permissions(value: object) -> str | None:
    return None if value is None else str(value)
