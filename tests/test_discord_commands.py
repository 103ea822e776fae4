"""`adapters.discord_commands`: slash commands built from the one option table, and the invite URL."""

from __future__ import annotations

import base64
from typing import Any

import discord
from discord import app_commands

from adapters.discord_commands import build_command, invite_url
from bot.options import OPTIONS, OptionSpec, ValueType, options_for, usage_text
from bot.requests import CommandName

APPLICATION_ID = 123456789012345678
INTEGER, NUMBER, STRING = 4, 10, 3  # Discord's application command option types


async def _ignore(*_: object) -> None:
    pass


def command_json(command: app_commands.Command[Any, ..., None]) -> dict[str, Any]:
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))
    return command.to_dict(tree)


def test_each_command_offers_its_table_options_typed_bounded_and_described() -> None:
    ask = command_json(build_command(CommandName.ASK, _ignore, options_for(CommandName.ASK),
                                     upper_bounds={"max_tokens": 2048}, choices={"model": ["a/b", "c/d"]}))

    options = {option["name"]: option for option in ask["options"]}
    assert list(options) == ["prompt", "max_tokens", "temperature", "model"]
    assert options["prompt"]["required"] and options["prompt"]["type"] == STRING
    assert (options["max_tokens"]["type"], options["max_tokens"]["min_value"], options["max_tokens"]["max_value"]) == (
        INTEGER, 1, 2048)
    temperature = options["temperature"]
    assert (temperature["type"], temperature["min_value"], temperature["max_value"]) == (NUMBER, 0.0, 2.0)
    assert [choice["value"] for choice in options["model"]["choices"]] == ["a/b", "c/d"]
    assert options["temperature"]["description"] == "0 = focused, 2 = adventurous"


def test_a_new_table_entry_becomes_a_typed_discord_option_and_a_usage_line() -> None:
    steps = OptionSpec("steps", "--steps", ("steps",), frozenset({CommandName.IMAGINE}), "--steps 30",
                       "Denoising steps", ValueType.INTEGER, lambda value, spec: int(value), low=1, high=50)

    imagine = command_json(build_command(CommandName.IMAGINE, _ignore, [*options_for(CommandName.IMAGINE), steps]))

    [option] = [option for option in imagine["options"] if option["name"] == "steps"]
    assert (option["type"], option["min_value"], option["max_value"], option["description"]) == (
        INTEGER, 1, 50, "Denoising steps")


def test_usage_text_lists_every_table_option_of_the_command_by_its_example() -> None:
    for command in CommandName:
        text = usage_text(command)
        assert all(f"`{spec.example}`" in text for spec in OPTIONS if command in spec.commands)
        assert not any(f"`{spec.example}`" in text for spec in OPTIONS if command not in spec.commands)


def test_the_invite_url_names_the_bot_its_scopes_and_the_four_permissions_it_needs() -> None:
    token = base64.b64encode(str(APPLICATION_ID).encode()).decode().rstrip("=") + ".GhIjKl.secretpart0123456789"

    assert invite_url(token) == (
        f"https://discord.com/oauth2/authorize?client_id={APPLICATION_ID}"
        # Send Messages + Embed Links + Attach Files + Read Message History (to answer messages as replies)
        "&scope=bot+applications.commands&permissions=116736"
    )
