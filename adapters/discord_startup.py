"""What Discord's refusals mean to the operator: which variable is wrong, and how to fix it.

The login (`GET /users/@me`, then the application and command registration) proves DISCORD_TOKEN over
REST; the gateway checks it again at IDENTIFY and closes with a code after which discord.py does not
reconnect (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes).
"""

from __future__ import annotations

import aiohttp
import discord

from adapters.startup import StartupError, unreachable
from config.settings import DEFAULT_DISCORD_API_URL

DISCORD_STATUS_PAGE = "https://discordstatus.com"
RESET_TOKEN_FIX = (
    "reset the token on the Developer Portal's Bot page (Reset Token) and put the new one in DISCORD_TOKEN"
)
MISSING_ACCESS = 50001  # JSON error code: the bot is not in that server, or lacks the applications.commands scope
GATEWAY_CLOSE_REASONS = {
    4004: "Authentication failed",
    4010: "Invalid shard",
    4011: "Sharding required",
    4012: "Invalid API version",
    4013: "Invalid intent(s)",
    4014: "Disallowed intent(s)",
}
LOGIN_ERRORS = (discord.LoginFailure, discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError, OSError,
                TimeoutError)


def login_failed(error: BaseException, api_url: str) -> StartupError:
    """Why `Client.login` failed: the token, Discord's answer, or the network."""
    if isinstance(error, discord.LoginFailure):
        return StartupError("DISCORD_TOKEN was refused by Discord (GET /users/@me: 401 Unauthorized)", RESET_TOKEN_FIX)
    if isinstance(error, discord.GatewayNotFound):  # `GET /gateway/bot` (shard count, gateway URL) refused
        cause = error.__cause__
        status = f" ({cause.status})" if isinstance(cause, discord.HTTPException) else ""
        return StartupError(f"Discord did not say how to connect its gateway (GET /gateway/bot failed{status})",
                            f"try again in a few minutes; see {DISCORD_STATUS_PAGE}")
    if isinstance(error, discord.HTTPException):
        answer = f"{error.status} {error.text[:200]}" if error.text else str(error.status)
        what = f"Discord answered {answer} while signing in and registering /ask and /imagine"
        if error.code == MISSING_ACCESS:
            fix = "invite the bot to every server in DISCORD_GUILD_IDS (`python -m bot discord-invite` prints the link)"
            return StartupError(what, fix)
        return StartupError(what, f"try again in a few minutes; see {DISCORD_STATUS_PAGE}")
    return unreachable("DISCORD_API_URL", api_url, DEFAULT_DISCORD_API_URL, DISCORD_STATUS_PAGE, error)


def gateway_closed(error: discord.ConnectionClosed | discord.PrivilegedIntentsRequired) -> StartupError:
    """Why the gateway will not take the bot back: discord.py gives up on these close codes."""
    code = 4014 if isinstance(error, discord.PrivilegedIntentsRequired) else error.code
    closed = f"close code {code}, {GATEWAY_CLOSE_REASONS.get(code, 'no reason given')}"
    if code == 4004:
        return StartupError(f"DISCORD_TOKEN was refused by Discord's gateway ({closed})", RESET_TOKEN_FIX)
    what = f"Discord's gateway closed the connection for good ({closed})"
    if code == 4014:
        fix = ("enable Message Content Intent under Privileged Gateway Intents on the Developer Portal's Bot page, "
               "or unset DISCORD_MESSAGE_CONTENT")
        return StartupError(what, fix)
    return StartupError(what, f"restart the bot; if it happens again, see {DISCORD_STATUS_PAGE}")
