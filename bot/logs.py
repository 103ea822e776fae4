"""Logging set-up with a filter that blanks every configured secret, whatever a library logs."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

REDACTED = "[redacted]"
# Token shapes of the platforms we talk to, caught even when they are not our configured values.
_TOKEN_SHAPES = re.compile(r"(xox[abpers]-[\w-]+|xapp-[\w-]+|r8_[\w]+|Bearer\s+[\w.~+/=-]+|Bot\s+[\w.-]{20,})")


class SecretRedactor(logging.Filter):
    """Rewrites records so no token, signing secret or Authorization header reaches a handler."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _TOKEN_SHAPES.sub(REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def install_logging(level: str, secrets: Iterable[str | None], stream=None) -> logging.Handler:
    """One stderr handler for the whole process, behind the redactor."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretRedactor(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    return handler
