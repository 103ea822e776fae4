"""Logging set-up with a filter that blanks every configured secret and every credential-shaped value,
whatever a library logs: at DEBUG slack_sdk, bolt and discord.py log URLs, payloads and response bodies."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO

REDACTED = "[redacted]"
# Token shapes of the platforms we talk to, caught even when they are not our configured values.
_TOKEN_SHAPES = re.compile(r"(xox[abpers]-[\w-]+|xapp-[\w-]+|r8_[\w]+|Bearer\s+[\w.~+/=-]+|Bot\s+[\w.-]{20,})")
_SLASH = r"(?:/|%2[Ff])"  # a path separator, also inside a URL-encoded form body
# Credentials the platforms issue per request, which the bot never knows in advance: the part after each prefix
# (group 1) is blanked, so a log line still shows which URL or field it was.
_ISSUED_CREDENTIALS = [
    # Discord interaction and webhook tokens in REST paths: /interactions/{id}/{token}/callback,
    # /webhooks/{application_id}/{token}[/messages/@original] (discord.py logs each request at DEBUG).
    re.compile(rf"((?:interactions|webhooks){_SLASH}\d+{_SLASH})[\w.-]+"),
    # Slack response_urls and incoming webhooks: hooks.slack.com/{commands|actions}/T…/{n}/{secret},
    # hooks.slack.com/services/T…/B…/{secret}.
    re.compile(rf"((?:commands|actions|services){_SLASH}[TE][A-Z0-9]+{_SLASH}\w+{_SLASH})[\w-]+"),
    # Slack Socket Mode's WebSocket URL (apps.connections.open): wss://…/link/?ticket={ticket}&app_id=…
    re.compile(r"(\bticket(?:=|%3D))[^&\s'\"]+", re.IGNORECASE),
    # A `token`/`*_token`/`*secret` field in a logged payload (JSON or repr) or form body: Discord's interaction
    # token, Slack's verification token.
    re.compile(r"""(\\?['"](?:\w*_)?(?:token|secret)\\?['"]\s*:\s*\\?['"])[^'"\\]+""", re.IGNORECASE),
    re.compile(r"((?<![\w%])token=)[^&\s'\"]+"),
    # Discord interaction tokens anywhere: they start with base64("interaction:").
    re.compile(r"()aW50ZXJhY3Rpb246[\w.-]+"),
]


class SecretRedactor(logging.Filter):
    """Rewrites records so no token, signing secret, Authorization header or per-request credential (interaction
    token, response_url, socket ticket) reaches a handler."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _TOKEN_SHAPES.sub(REDACTED, text)
        for shape in _ISSUED_CREDENTIALS:
            text = shape.sub(lambda match: match.group(1) + REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install_logging(level: str, secrets: Iterable[str | None], stream: TextIO | None = None) -> logging.Handler:
    """One stderr handler for the whole process, behind the redactor."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretRedactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler
