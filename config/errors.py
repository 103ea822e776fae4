"""The one error settings raise: `str()` is the one line the operator sees."""

from __future__ import annotations


class SettingsError(Exception):
    """A missing or malformed setting; `str()` is the one line the operator sees."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        super().__init__(f"{variable} {problem}: {fix}")
        self.variable = variable
