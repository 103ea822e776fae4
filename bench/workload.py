"""What one benchmark run asks for: N concurrent `/ask`s of a text model that takes `latency_s` to answer.

The model is the fake Replicate's `TextModel`: `TOKENS` tokens spread evenly over the latency, streamed
over SSE as the real API does. Every command gets the same answer, so "the final answer is posted" is
recognisable as exactly that text appearing in a post or an edit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from config.models import DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel

TOKENS = 20
REPLICATE_TOKEN = "r8_bench_token"
# Real Replicate holds a `Prefer: wait` create for up to 60 s; the baseline's replicate.run() relies on it.
REPLICATE_MAX_WAIT_S = 60.0
ANSWER_SLACK_S = 30.0  # how long past the model's latency the harness waits for the last answer
PLATFORM_ACK_DEADLINE_S = 3.0  # Slack and Discord both give up on an unacknowledged command after 3 s
# Slack's posting limit is "one message per second per channel", with "bursts over that limit for short periods"
# (docs.slack.dev/apis/web-api/rate-limits) of undocumented length: the bench's fake allows 5 in any 5 s.
SLACK_POST_BURST = 5
BASELINE_WORKERS = 10  # SocketModeHandler's default concurrency: the baseline answers 10 commands at a time
# Settings a developer's shell might carry: never leak them into a bot under test.
BOT_VARIABLES = (
    "REPLICATE_API_TOKEN", "REPLICATE_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET",
    "SLACK_API_URL", "DISCORD_TOKEN", "DISCORD_API_URL", "DISCORD_GATEWAY_URL", "DISCORD_GUILD_IDS", "ASK_MODEL",
    "IMAGINE_MODEL", "ALLOWED_MODELS", "MAX_CONCURRENT_PREDICTIONS", "PREDICTION_TIMEOUT", "SHUTDOWN_GRACE", "PORT",
    "LOG_LEVEL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
)


@dataclass(frozen=True)
class Workload:
    n: int
    latency_s: float
    slack_tiers: bool = False
    profile: bool = False  # cProfile the bot under test (bench/instrumented_bot.py)
    channels: int | None = None  # Slack channels the commands are spread over (None: one per command)

    @property
    def channel_count(self) -> int:
        return max(1, min(self.channels or self.n, self.n))

    @property
    def tokens(self) -> list[str]:
        return [f"word{index} " for index in range(TOKENS - 1)] + ["end."]

    @property
    def answer(self) -> str:
        return "".join(self.tokens)

    @property
    def answer_timeout_s(self) -> float:
        return self.latency_s * 3 + ANSWER_SLACK_S

    @property
    def baseline_timeout_s(self) -> float:
        """The baseline answers in waves of `BASELINE_WORKERS`: give it the time that takes, and some."""
        waves = -(-self.n // BASELINE_WORKERS)
        return max(self.answer_timeout_s, waves * self.latency_s * 1.5 + ANSWER_SLACK_S)

    def prompt(self, index: int) -> str:
        return f"benchmark question {index}"

    def text_model(self) -> TextModel:
        return TextModel(tokens=self.tokens, token_interval_s=self.latency_s / TOKENS)


def clean_environ() -> None:
    """Drop bot settings inherited from the shell (the subprocesses copy os.environ)."""
    for name in BOT_VARIABLES:
        os.environ.pop(name, None)


async def start_replicate(workload: Workload) -> FakeReplicate:
    """A fake Replicate serving the two default models (the load uses /ask; the bot looks both up at start-up);
    the bot trusts its file server through SSL_CERT_FILE (`bot_environment`)."""
    replicate = FakeReplicate(api_token=REPLICATE_TOKEN, max_wait_s=REPLICATE_MAX_WAIT_S)
    await replicate.start()
    replicate.add_model(DEFAULT_ASK_MODEL, workload.text_model())
    replicate.add_model(DEFAULT_IMAGINE_MODEL, ImageModel())
    return replicate


def bot_environment(replicate: FakeReplicate, workload: Workload) -> dict[str, str]:
    """What every bot process gets, whatever the platform."""
    return {
        "REPLICATE_API_TOKEN": replicate.api_token,
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "MAX_CONCURRENT_PREDICTIONS": str(max(workload.n, 1)),
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        "SHUTDOWN_GRACE": "5",
        "SSL_CERT_FILE": replicate.ca_bundle,
        # Governance on, as a real deployment has it: every command is checked against per-user limits (never
        # reached here: each command comes from its own user) in the state store, SQLite in the run's own folder.
        "LIMITS": "ask=50/day,imagine=20/day",
        "MAX_CONCURRENT_PER_USER": "3",
    }
