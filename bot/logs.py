"""Logging set-up with a filter that blanks every configured secret and every credential-shaped value,
whatever a library logs: at DEBUG slack_sdk, bolt and discord.py log URLs, payloads and response bodies.

Two line formats (`LOG_FORMAT`): `text`, one readable line per record, and `json`, one JSON object per line
(`ts`, `level`, `logger`, `message`, and a structured record's own fields beside them) for log collectors.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "[redacted]"
TEXT_FORMAT, JSON_FORMAT = "text", "json"
LOG_FORMATS = (TEXT_FORMAT, JSON_FORMAT)
TEXT_LINE = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Where `structured` puts a record's fields and its short summary (attributes of the LogRecord, via `extra=`).
_FIELDS_ATTR, _SUMMARY_ATTR = "structured_fields", "structured_summary"
# A JSON line's own keys: a structured field of the same name never replaces them.
_JSON_KEYS = ("ts", "level", "logger", "message", "exc_info", "stack_info")
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
        fields = getattr(record, _FIELDS_ATTR, None)
        if isinstance(fields, Mapping):
            setattr(record, _FIELDS_ATTR, {key: self._redact_value(value) for key, value in fields.items()})
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

    def _redact_value(self, value: object) -> object:
        return self.redact(value) if isinstance(value, str) else value


def structured(summary: str, fields: Mapping[str, object]) -> dict[str, object]:
    """`extra=` for a log call whose record carries fields of its own: JSON lines write `summary` as the message
    and each field as a key of its own (values: JSON scalars). Text lines show the message as it was logged."""
    return {_FIELDS_ATTR: dict(fields), _SUMMARY_ATTR: summary}


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line: `ts` (UTC, ISO 8601), `level`, `logger`, `message`, the
    record's structured fields, and `exc_info`/`stack_info` when there are any (already redacted)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS_ATTR, None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": getattr(record, _SUMMARY_ATTR, None) if isinstance(fields, Mapping) else record.getMessage(),
        }
        if isinstance(fields, Mapping):
            line.update((key, value) for key, value in fields.items() if key not in _JSON_KEYS)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return json.dumps(line, default=str)


def install_logging(
    level: str, secrets: Iterable[str | None], stream: TextIO | None = None, *, log_format: str = TEXT_FORMAT
) -> logging.Handler:
    """One stderr handler for the whole process, behind the redactor, writing `log_format` lines."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLines() if log_format == JSON_FORMAT else logging.Formatter(TEXT_LINE))
    handler.addFilter(SecretRedactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler
