"""What every test harness shares: the tokens, models and timings the fakes are started with, the settings that
point the real bot at them, and the undo for discord.py's process-wide redirect.

The platform harnesses (`tests.slack_harness`, `tests.discord_harness`, `tests.bot_harness`) build on this, so a
test of one platform and a test of both see the same bot.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import discord
from discord.gateway import DiscordWebSocket

from bot.runner import RunPolicy
from config.models import DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL
from config.settings import GovernanceSettings, Settings
from tests.fakes.discord_server import MESSAGE_CONTENT, FakeDiscord
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel
from tests.fakes.slack_server import FakeSlack

REPLICATE_TOKEN = "r8_harnessSecretToken0123456789"
SLACK_BOT_TOKEN = "xoxb-harness-bot-secret-0123456789"
SLACK_APP_TOKEN = "xapp-harness-app-secret-0123456789"
DISCORD_TOKEN = "harness.discord.secret.token.0123456789"
APPLICATION_ID = 111
GUILD, CHANNEL = 222, 333
ASK_MODEL, IMAGINE_MODEL = DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL
PRIVILEGED_INTENTS = MESSAGE_CONTENT  # what the harness's fake Discord apps have enabled in the portal
ANSWER_TOKENS = ["Hello", ",", " world"]
ANSWER = "".join(ANSWER_TOKENS)
# A real 1x1 PNG: the adapters upload whatever bytes the model produced.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005fe02fe0dd7c5e70000000049454e44ae426082"
)
FAST_POLICY = RunPolicy(timeout_s=10.0, poll_interval_s=0.05, base_backoff_s=0.05, create_wait_s=1,
                        cancel_timeout_s=2.0)
WAIT_S = 10.0  # generous: a wait that times out is a failure, never a pass
SHUTDOWN_GRACE_S = 1.0  # the tests' bots stop quickly; a test about the grace period sets its own


def default_models(replicate: FakeReplicate) -> None:
    """The default /ask model answers `ANSWER` token by token; the default /imagine model makes one `PNG`."""
    replicate.add_model(ASK_MODEL, TextModel(tokens=list(ANSWER_TOKENS)))
    replicate.add_model(IMAGINE_MODEL, ImageModel(images=[(PNG, "image/png")]))


def bot_settings(replicate: FakeReplicate, slack: FakeSlack | None = None, discord: FakeDiscord | None = None,
                 **overrides: Any) -> Settings:
    """Settings for the real bot against the fakes given; a platform left out is not configured. An override named
    like a `GovernanceSettings` field (`admin_users`, `limits`…) changes that field of `governance`."""
    governance_fields = {spec.name for spec in dataclasses.fields(GovernanceSettings)}
    governance_changes = {name: overrides.pop(name) for name in list(overrides) if name in governance_fields}
    settings = Settings(
        replicate_api_token=replicate.api_token,
        replicate_base_url=replicate.base_url,
        replicate_output_hosts=(replicate.output_host,),
        ca_bundle=Path(replicate.ca_bundle),
        slack_bot_token=slack.bot_token if slack else None,
        slack_app_token=slack.app_token if slack else None,
        slack_api_url=slack.api_url if slack else "https://slack.com/api/",
        discord_token=discord.token if discord else None,
        discord_api_url=discord.api_url if discord else "https://discord.com/api/v10",
        discord_gateway_url=discord.gateway_url if discord else None,
        discord_guild_ids=(GUILD,) if discord else (),
        # The Message Content intent when the fake app has it enabled (the harness fakes do): answers then end with
        # no hint to mention the bot; tests/test_discord_conversations.py covers the default, without it.
        discord_message_content=discord is not None and bool(discord.privileged_intents & MESSAGE_CONTENT),
        port=0,
        prediction_timeout_s=FAST_POLICY.timeout_s,
        shutdown_grace_s=SHUTDOWN_GRACE_S,
        # Each bot its own state (never data/bot.db in the checkout); many tests send a burst as one user, so the
        # per-user cap is lifted here: the governance tests set their own.
        governance=GovernanceSettings(
            state_url=f"sqlite:///{tempfile.mkdtemp(prefix='bot-state-')}/bot.db", max_concurrent_per_user=1000
        ),
    )
    settings = dataclasses.replace(settings, governance=dataclasses.replace(settings.governance, **governance_changes))
    return dataclasses.replace(settings, **overrides)


def redirect_snapshot() -> tuple[str, Any]:
    """discord.py's REST base and gateway URL, which the adapter points at the fake for the whole process."""
    return discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY


def restore_redirect(saved: tuple[str, Any]) -> None:
    discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
