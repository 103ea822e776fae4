"""`/replicate`: help, models and usage for everyone; limits, blocks and pause for admins. Every answer is private.

The same words on every platform (Slack's text after `/replicate`, Discord's subcommand and options joined into
it, the console's line). A `<user>` is a mention (`<@U123>`, `<@U123|name>`, `<@!123>`) or a bare id, and means
a user of the platform the admin types on (`discord:123` names another platform's user).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.governance import DayUsage, Governor, UserUsage, user_key
from bot.model_catalog import ModelCatalog
from bot.models import KIND_FOR_COMMAND
from bot.options import usage_text
from bot.pricing import format_usd
from bot.requests import CommandName, Origin
from config.governance import PLATFORMS, UseLimit

_MENTION = re.compile(r"^<@!?(?P<id>[A-Za-z0-9]+)(?:\|[^>]*)?>$")
_PLAIN_ID = re.compile(r"^(?:(?P<platform>[a-z]+):)?(?P<id>[A-Za-z0-9_.-]+)$")
ADMIN_SUBCOMMANDS = ("limit", "block", "unblock", "pause", "resume")
MEMBER_HELP = (
    "`/replicate help` this help · `/replicate models` the models each command can use · "
    "`/replicate usage` your use today and what is left of your limits"
)
ADMIN_HELP = (
    "Admins: `/replicate usage [user]` anyone's use, the top users and today's spend · "
    "`/replicate limit <user|default> <ask|imagine> <N>/<hour|day>` (or `none`, or `reset` to the configured "
    "limit) · `/replicate block <user>` · `/replicate unblock <user>` · `/replicate pause` · `/replicate resume`"
)


class AdminInputError(ValueError):
    """A subcommand typed wrong; the text says how to type it."""


@dataclass(frozen=True)
class Administration:
    governor: Governor
    models: ModelCatalog

    async def run(self, origin: Origin, text: str) -> str:
        """The private answer to `/replicate <text>`."""
        words = text.split()
        subcommand = words[0].lower() if words else "help"
        arguments = words[1:]
        admin = self.governor.is_admin(origin)
        try:
            if subcommand == "help":
                return self._help(admin)
            if subcommand == "models":
                return self._models()
            if subcommand == "usage":
                return await self._usage(origin, arguments, admin)
            if subcommand in ADMIN_SUBCOMMANDS:
                if not admin:
                    return f"Only the bot's admins can use `/replicate {subcommand}`."
                return await self._administer(origin, subcommand, arguments)
        except AdminInputError as error:
            return str(error)
        return f"There is no `/replicate {subcommand[:40]}`. Try `/replicate help`."

    def _help(self, admin: bool) -> str:
        lines = [usage_text(command) for command in CommandName]
        lines.append(MEMBER_HELP)
        if admin:
            lines.append(ADMIN_HELP)
        return "\n".join(lines)

    def _models(self) -> str:
        lines = []
        for command in CommandName:
            kind = KIND_FOR_COMMAND[command]
            default = self.models.default(kind)
            lines.append(f"/{command}:")
            for ref in self.models.refs(kind):
                info = self.models.find(ref, kind)
                about = info.description.strip() if info and info.description else "no description on Replicate"
                mark = " (default)" if default is not None and default.ref == ref else ""
                lines.append(f"• `{ref}`{mark}: {inert(_one_line(about))}")
            if not self.models.refs(kind):
                lines.append("• none available right now")
        lines.append("Pick another with `--model owner/name` at the end of a command.")
        return "\n".join(lines)

    async def _usage(self, origin: Origin, arguments: list[str], admin: bool) -> str:
        if arguments and not admin:
            return "Only the bot's admins can see another user's use."
        user = parse_user(arguments[0], origin) if arguments else user_key(origin)
        mine = user == user_key(origin)
        text = describe_usage(await self.governor.usage_of(user), origin, mine=mine)
        if admin:
            text += "\n" + describe_day(await self.governor.today(), origin)
        return text

    async def _administer(self, origin: Origin, subcommand: str, arguments: list[str]) -> str:
        if subcommand in ("pause", "resume"):
            await self.governor.set_paused(subcommand == "pause")
            return (
                "Paused: new commands are refused politely until `/replicate resume`. Commands already running finish."
                if subcommand == "pause" else "Resumed: the bot takes commands again."
            )
        if subcommand in ("block", "unblock"):
            if len(arguments) != 1:
                raise AdminInputError(f"Usage: `/replicate {subcommand} <user>` (a mention or an id).")
            user = parse_user(arguments[0], origin)
            await self.governor.set_blocked(user, subcommand == "block")
            who = show_user(user, origin)
            return f"{who} is blocked: their commands are refused." if subcommand == "block" else f"{who} is unblocked."
        return await self._limit(origin, arguments)

    async def _limit(self, origin: Origin, arguments: list[str]) -> str:
        usage = "Usage: `/replicate limit <user|default> <ask|imagine> <N>/<hour|day>` (or `none`, or `reset`)."
        if len(arguments) != 3:
            raise AdminInputError(usage)
        target_text, command_text, limit_text = arguments
        if command_text.lower().lstrip("/") not in CommandName.__members__.values():
            raise AdminInputError(f"`{command_text[:40]}` is not `ask` or `imagine`. {usage}")
        command = CommandName(command_text.lower().lstrip("/"))
        target = None if target_text.lower() == "default" else parse_user(target_text, origin)
        whom = "everyone (the default)" if target is None else show_user(target, origin)
        if limit_text.lower() == "reset":
            await self.governor.reset_limit(target, command)
            now = await self.governor.limit_of(target, command)
            return f"/{command} for {whom} is back to the configured limit: {now or 'none'}."
        if limit_text.lower() == "none":
            await self.governor.set_limit(target, command, None)
            return f"/{command} for {whom}: no limit."
        try:
            limit = UseLimit.parse(limit_text.lower())
        except ValueError:
            raise AdminInputError(f"`{limit_text[:40]}` is not N/hour or N/day. {usage}") from None
        await self.governor.set_limit(target, command, limit)
        return f"/{command} for {whom}: at most {limit.count} per {limit.window} (UTC calendar {limit.window}s)."


def parse_user(text: str, origin: Origin) -> str:
    """`<@U123>`, `<@!123>`, `U123`, `discord:123` -> "platform:id" (the admin's platform unless named)."""
    mention = _MENTION.match(text)
    if mention is not None:
        return f"{origin.platform}:{mention['id']}"
    plain = _PLAIN_ID.match(text)
    if plain is not None and (plain["platform"] is None or plain["platform"] in PLATFORMS):
        return f"{plain['platform'] or origin.platform}:{plain['id']}"
    raise AdminInputError(f"`{text[:40]}` is not a user: use a mention or an id.")


def show_user(user: str, origin: Origin) -> str:
    """A mention where the viewer's platform renders one (it never pings: the answer is private), else the id."""
    platform, _, ident = user.partition(":")
    if platform == origin.platform and platform in ("slack", "discord"):
        return f"<@{ident}>"
    return f"`{user}`"


def describe_usage(usage: UserUsage, origin: Origin, *, mine: bool) -> str:
    lines = ["Your use today (UTC):" if mine else f"Use of {show_user(usage.user, origin)} today (UTC):"]
    if usage.blocked:
        lines.append("• blocked by an admin")
    for use in usage.commands:
        if use.limit is None:
            lines.append(f"• /{use.command}: {use.today} today, no limit")
            continue
        left = max(use.limit.count - use.in_window, 0)
        resets = f", resets at {use.resets_at:%H:%M} UTC" if use.resets_at is not None else ""
        lines.append(f"• /{use.command}: {use.today} today, limit {use.limit}: {left} left{resets}")
    lines.append(f"• running or waiting now: {usage.running} of {usage.max_running}")
    lines.append(f"• estimated spend today: {format_usd(usage.spent_micro_usd)}")
    return "\n".join(lines)


def describe_day(day: DayUsage, origin: Origin) -> str:
    budget = f" of the ${day.budget_usd:g} daily budget" if day.budget_usd is not None else " (no daily budget)"
    lines = [f"Today (UTC): {format_usd(day.spent_micro_usd)} spent{budget}" + (" · paused" if day.paused else "")]
    if day.top:
        lines.append("Top users today:")
        for rank, (user, spent, commands) in enumerate(day.top, start=1):
            lines.append(f"{rank}. {show_user(user, origin)}: {format_usd(spent)}, {commands} commands")
    return "\n".join(lines)


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def inert(text: str) -> str:
    """A model's description is written by its owner, not us: no mention or link syntax survives it
    (angle brackets become single angle quotes, and a zero-width space follows each @)."""
    return text.replace("<", "\u2039").replace(">", "\u203a").replace("@", "@\u200b")
