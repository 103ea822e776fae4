"""The way in: a platform-neutral command request, built by `parsing` and run by `core`.

Adapters fill `Origin` from their own payloads; everything else is the same on every platform. Later
work extends these by adding fields with defaults (conversation context, quotas), never by reshaping.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum


class CommandName(StrEnum):
    ASK = "ask"
    IMAGINE = "imagine"


@dataclass(frozen=True)
class Origin:
    """Who asked, and where the answer goes."""

    platform: str
    user_id: str
    channel_id: str
    user_name: str | None = None
    workspace_id: str | None = None  # Slack team, Discord guild
    thread_id: str | None = None
    platform_admin: bool = False  # the platform says this user administers the place (Discord: Manage Server)


@dataclass(frozen=True)
class Options:
    """The inline options (`bot.options`), validated. `None` means "the model's default"."""

    model: str | None = None
    aspect_ratio: str | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class ContextMessage:
    """An earlier turn of a conversation (`bot.conversation_memory`)."""

    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True)
class CommandRequest:
    """One validated command, ready to run. `request_id` makes retries and redeliveries idempotent."""

    command: CommandName
    prompt: str
    options: Options
    origin: Origin
    model: str  # the model this request will run, after defaults and --model
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    context: tuple[ContextMessage, ...] = ()  # the conversation's earlier turns, oldest first
    conversation_id: str | None = None  # every /ask starts one; a follow-up carries its conversation's
    notes: tuple[str, ...] = ()  # said with the answer (e.g. "I no longer remember that conversation…")
