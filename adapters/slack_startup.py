"""What Slack's answers at start-up mean to the operator: which variable is wrong, and how to fix it.

`auth.test` proves SLACK_BOT_TOKEN and `apps.connections.open` proves SLACK_APP_TOKEN; Slack names a refused
token in the answer's `error` (https://api.slack.com/methods/auth.test#errors,
https://api.slack.com/methods/apps.connections.open#errors).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from adapters.startup import StartupError, unreachable
from config.settings import DEFAULT_SLACK_API_URL

SLACK_STATUS_PAGE = "https://slack-status.com"
SLACK_APPS_PAGE = "https://api.slack.com/apps"
REFUSED_TOKEN_ERRORS = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "not_allowed_token_type"}
)
# Which token each start-up call proves, and where the operator gets a good one.
TOKEN_CHECKS = {
    "auth.test": (
        "SLACK_BOT_TOKEN",
        f"copy the Bot User OAuth Token (xoxb-...) from your app's OAuth & Permissions page at {SLACK_APPS_PAGE} "
        "(reinstall the app to the workspace if it was removed)",
    ),
    "apps.connections.open": (
        "SLACK_APP_TOKEN",
        f"create an App-Level Token (xapp-...) with the connections:write scope on your app's Basic Information "
        f"page at {SLACK_APPS_PAGE}, and check that Socket Mode is enabled",
    ),
}


async def startup_call(method: str, request: Awaitable[Any], api_url: str) -> Any:
    """`request`'s answer; a refused token or an unreachable API becomes a `StartupError` naming the variable."""
    try:
        return await request
    except SlackApiError as error:
        raise _refused(method, error) from error
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise unreachable("SLACK_API_URL", api_url, DEFAULT_SLACK_API_URL, SLACK_STATUS_PAGE, error) from error


def _refused(method: str, error: SlackApiError) -> StartupError:
    data = error.response.data
    code = data.get("error") if isinstance(data, dict) else None
    variable, fix = TOKEN_CHECKS[method]
    if code in REFUSED_TOKEN_ERRORS:
        return StartupError(f"{variable} was refused by Slack ({method}: {code})", fix)
    answer = code or f"HTTP {error.response.status_code}"
    fix = f"try again in a few minutes; see {SLACK_STATUS_PAGE}"
    return StartupError(f"Slack answered {method} with {answer}", fix)
