"""Discord's side of the fake: the objects Discord hands out, and the gateway WebSocket that delivers them.

Objects (`DiscordObjects`, `StoredMessage`, `apply_message`): users, members, guilds, channels, threads,
messages and INTERACTION_CREATE payloads as Discord's JSON, with every field discord.py's parsers read, and
Discord's message rules (2,000 characters, embed limits, no empty messages, who `allowed_mentions` lets a
message ping). `FakeDiscord` (discord_server.py) answers REST requests with the same objects.

Gateway (`FakeGateway`, v10, JSON): Discord's wire protocol, not a simplified one, because the point is to
exercise the real client: HELLO → IDENTIFY → READY + one GUILD_CREATE per guild; heartbeats answered with
op 11; RESUME replays the dispatches the client missed and ends with RESUMED; an unknown or invalidated
session gets op 9. Sharding as Discord does it: a session that IDENTIFYs with `shard: [id, count]` gets READY and
GUILD_CREATE for its own guilds only, and the events of a guild go to the sessions of shard `(guild_id >> 22) %
count`, events without a guild (DMs) to shard 0 only; two live sessions of the same shard both get them. Frames are
compressed the way the URL asks (`compress=zlib-stream`: one zlib stream per
connection, each message flushed with Z_SYNC_FLUSH, which discord.py 2.7 requests when zstandard is not
installed; `zstd-stream` when a zstd module is importable), so discord.py's decompressor runs too.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import mimetypes
import re
import secrets
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web


def _optional_module(name: str) -> Any:
    """The module `name` if it is installed, else None (untyped: neither is in the dev lock)."""
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - depends on the environment
        return None


# discord.py uses zstd when either module exists; mirror it so the fake always speaks what is asked.
_zstandard = _optional_module("zstandard")
_stdlib_zstd = _optional_module("compression.zstd")  # Python 3.14+

# Opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-opcodes).
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE_STATE, RESUME, RECONNECT = 0, 1, 2, 3, 4, 6, 7
REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 8, 9, 10, 11
HEARTBEAT_INTERVAL_MS = 41250
# Privileged intents: GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
# Close codes after which Discord forgets the session (a RESUME then gets op 9).
SESSION_ENDING_CODES = {4007, 4009}
INVALID_SHARD = 4010
# IDENTIFYs: `max_concurrency` per 5 s, one per rate-limit key `shard_id % max_concurrency`; beyond it, op 9
# (https://discord.com/developers/docs/events/gateway#session-start-limit-object,
# https://discord.com/developers/docs/events/gateway#sharding-max-concurrency).
IDENTIFY_WINDOW_S = 5.0

DISCORD_EPOCH_MS = 1420070400000
ATTACHMENT_SIZE_LIMIT = 26214400  # 25 MiB, what Discord reports for unboosted guilds
MAX_CONTENT, MAX_EMBEDS, MAX_EMBED_DESCRIPTION, MAX_EMBED_TOTAL = 2000, 10, 4096, 6000
# Permission bits (https://discord.com/developers/docs/topics/permissions).
VIEW, SEND, EMBED, ATTACH, HISTORY = 1 << 10, 1 << 11, 1 << 14, 1 << 15, 1 << 16
EVERYONE_PERMS = (1 << 6) | VIEW | SEND | EMBED | ATTACH | HISTORY | (1 << 18) | (1 << 26) | (1 << 31) \
    | (1 << 35) | (1 << 36) | (1 << 38)
BOT_PERMS = EVERYONE_PERMS | (1 << 34)  # + MANAGE_THREADS
DM_PERMS = (1 << 6) | VIEW | SEND | EMBED | ATTACH | HISTORY | (1 << 18) | (1 << 31)
POSTING_PERMS = SEND | EMBED | ATTACH | (1 << 35) | (1 << 36) | (1 << 38)

USER_MENTION, ROLE_MENTION, EVERYONE_MENTION = re.compile(r"<@!?(\d+)>"), re.compile(r"<@&(\d+)>"), \
    re.compile(r"@(everyone|here)")


# --- Discord objects -------------------------------------------------------------------------------


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; events without a guild (DMs) go to shard 0
    (https://discord.com/developers/docs/events/gateway#sharding)."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class Attachment:
    id: int
    filename: str
    data: bytes
    content_type: str  # as sent in the multipart part (discord.py always says application/octet-stream)
    description: str | None = None


@dataclass
class MessageOp:
    """One create/edit/delete of a message, with exactly what the client sent."""

    kind: str  # "create" | "edit" | "delete"
    message_id: int
    payload: dict[str, Any]
    files: list[Attachment]
    at: float


@dataclass
class StoredMessage:
    """A message's current state plus its history. Interaction messages carry the interaction token."""

    id: int
    channel_id: int
    guild_id: int | None
    token: str | None = None  # interaction token for responses and follow-ups
    author_id: int | None = None  # a user's message (`FakeDiscord.send_message`); None: the bot's
    interaction_id: int | None = None
    is_original: bool = False
    interaction_metadata: dict[str, Any] | None = None  # for interaction responses and follow-ups
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    allowed_mentions: dict[str, Any] | None = None  # from the latest send/edit; None = not sent
    mention_user_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    message_reference: dict[str, Any] | None = None
    tts: bool = False
    thread_id: int | None = None
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None
    deleted: bool = False
    history: list[MessageOp] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        """Still the deferred "thinking…" placeholder."""
        return bool(self.flags & 128)

    @property
    def pings(self) -> bool:
        """Whether Discord would notify anyone for this message's content."""
        return self.mention_everyone or bool(self.mention_user_ids or self.mention_role_ids)

    @property
    def edits(self) -> int:
        return sum(op.kind == "edit" for op in self.history)


def resolve_mentions(message: StoredMessage) -> None:
    """Who Discord would ping: everything unless `allowed_mentions` (of this send/edit) narrows it."""
    allowed = message.allowed_mentions
    parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse") or [])
    users = {str(u) for u in (allowed or {}).get("users") or []}
    roles = {str(r) for r in (allowed or {}).get("roles") or []}
    text = message.content
    message.mention_user_ids = list(dict.fromkeys(
        int(u) for u in USER_MENTION.findall(text) if "users" in parse or u in users))
    message.mention_role_ids = list(dict.fromkeys(
        int(r) for r in ROLE_MENTION.findall(text) if "roles" in parse or r in roles))
    message.mention_everyone = "everyone" in parse and bool(EVERYONE_MENTION.search(text))


class ApiError(Exception):
    """An error answered the way Discord answers it: status + `{"message", "code", "errors"?}`."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.body = status, {"message": message, "code": code, **({"errors": errors} if errors else {})}


def form_error(field_name: str, message: str) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body",
                    {field_name: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}})


def apply_message(message: StoredMessage, payload: dict[str, Any], uploads: list[Attachment], *, creating: bool,
                  new_id: Callable[[], int]) -> list[Attachment]:
    """Validate a send or edit like Discord (raising its errors), apply it, and return the new attachments.

    `uploads` carry the `files[n]` index as id; `payload["attachments"]` may rename them and, on an edit,
    lists which existing attachments stay. Mentions are re-resolved from this request's `allowed_mentions`."""
    if not isinstance(payload, dict):
        raise form_error("_root", "Must be an object.")
    content = payload.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT:
        raise form_error("content", f"Must be {MAX_CONTENT} or fewer in length.")
    embeds = payload.get("embeds")
    if embeds:
        if len(embeds) > MAX_EMBEDS:
            raise form_error("embeds", f"Must be {MAX_EMBEDS} or fewer in length.")
        for index, embed in enumerate(embeds):
            if len(embed.get("description") or "") > MAX_EMBED_DESCRIPTION:
                raise form_error(f"embeds.{index}.description", "Must be 4096 or fewer in length.")
        total = sum(len(e.get("title") or "") + len(e.get("description") or "")
                    + len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
                    + sum(len(f.get("name", "")) + len(f.get("value", "")) for f in e.get("fields") or [])
                    for e in embeds)
        if total > MAX_EMBED_TOTAL:
            raise form_error("embeds", "Embed size exceeds maximum size of 6000")
    if sum(len(u.data) for u in uploads) > ATTACHMENT_SIZE_LIMIT:
        raise ApiError(413, 40005, "Request entity too large")
    if creating and not (content or embeds or uploads or payload.get("components") or payload.get("poll")
                         or payload.get("sticker_ids")):
        raise ApiError(400, 50006, "Cannot send an empty message")
    new: list[Attachment] = []
    for upload in uploads:
        meta: dict[str, Any] = next(
            (a for a in payload.get("attachments") or [] if str(a.get("id")) == str(upload.id)), {})
        attachment = Attachment(new_id(), meta.get("filename") or upload.filename, upload.data,
                                upload.content_type, meta.get("description"))
        new.append(attachment)
    if "attachments" in payload and not creating:  # the list says which existing attachments stay
        keep = {str(a.get("id")) for a in payload.get("attachments") or []}
        message.attachments = [a for a in message.attachments if str(a.id) in keep] + new
    else:
        message.attachments = message.attachments + new
    if "content" in payload:
        message.content = "" if content is None else str(content)
    if "embeds" in payload:
        message.embeds = list(embeds or [])
    if "components" in payload:
        message.components = list(payload.get("components") or [])
    message.tts = bool(payload.get("tts", message.tts)) if creating else message.tts
    message.allowed_mentions = payload.get("allowed_mentions")
    resolve_mentions(message)
    if not creating:
        message.edited_at = time.time()
    return new


class DiscordObjects:
    """The bot's world (its user, guilds, channels, threads, DMs) and Discord's JSON for each object."""

    def __init__(self, *, application_id: int, bot_user_id: int, bot_username: str,
                 guilds: Mapping[int, Sequence[int]]) -> None:
        self.application_id, self.bot_user_id, self.bot_username = application_id, bot_user_id, bot_username
        self.guilds: dict[int, list[int]] = {int(g): [int(c) for c in cs] for g, cs in guilds.items()}
        self.channels: dict[int, dict[str, Any]] = {}
        self.denied: dict[int, int] = {}  # channel id → error code for posting there
        self.started = time.time()
        self._last_snowflake = 0
        self.role_ids = {guild_id: self.snowflake() for guild_id in self.guilds}
        for guild_id, channel_ids in self.guilds.items():
            for position, channel_id in enumerate(channel_ids):
                self.channels[channel_id] = {
                    "id": str(channel_id), "type": 0, "guild_id": str(guild_id), "name": f"channel-{channel_id}",
                    "position": position, "permission_overwrites": [], "topic": None, "nsfw": False,
                    "last_message_id": None, "rate_limit_per_user": 0, "parent_id": None, "flags": 0}

    def snowflake(self) -> int:
        """A unique, increasing id that decodes to "now", like Discord's."""
        value = max((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def user(self, user_id: int, *, full: bool = False) -> dict[str, Any]:
        bot = user_id == self.bot_user_id
        user: dict[str, Any] = {"id": str(user_id), "username": self.bot_username if bot else f"user{user_id}",
                                "discriminator": "0", "global_name": None if bot else f"User {user_id}",
                                "avatar": None, "bot": bot, "public_flags": 0, "flags": 0, "banner": None,
                                "accent_color": None, "avatar_decoration_data": None, "primary_guild": None}
        if full:
            user.update(verified=True, mfa_enabled=False, email=None, locale="en-US")
        return user

    def member(self, user_id: int, roles: Sequence[int] = ()) -> dict[str, Any]:
        return {"user": self.user(user_id), "roles": [str(r) for r in roles], "joined_at": iso(self.started),
                "deaf": False, "mute": False, "flags": 0, "pending": False, "nick": None, "avatar": None,
                "banner": None, "premium_since": None, "communication_disabled_until": None,
                "unusual_dm_activity_until": None}

    def bot_member(self, guild_id: int) -> dict[str, Any]:
        return self.member(self.bot_user_id, [self.role_ids.get(guild_id, 0)])

    def dm_channel(self, user_id: int) -> int:
        """The id of the bot's DM channel with `user_id` (created on first use)."""
        for channel_id, channel in self.channels.items():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == str(user_id):
                return channel_id
        channel_id = self.snowflake()
        self.channels[channel_id] = {"id": str(channel_id), "type": 1, "last_message_id": None, "flags": 0,
                                     "recipients": [self.user(user_id)]}
        return channel_id

    def thread(self, thread_id: int, parent: dict[str, Any], name: str, kind: int,
               body: dict[str, Any]) -> dict[str, Any]:
        """A thread channel (11 public, 12 private), registered so messages can be posted in it."""
        now = iso(time.time())
        metadata = {"archived": False, "auto_archive_duration": int(body.get("auto_archive_duration") or 1440),
                    "archive_timestamp": now, "locked": False, "create_timestamp": now}
        if kind == 12:
            metadata["invitable"] = bool(body.get("invitable", True))
        thread = {"id": str(thread_id), "type": kind, "guild_id": parent["guild_id"], "parent_id": parent["id"],
                  "owner_id": str(self.bot_user_id), "name": name, "last_message_id": None, "flags": 0,
                  "rate_limit_per_user": int(body.get("rate_limit_per_user") or 0), "message_count": 0,
                  "member_count": 1, "total_message_sent": 0, "applied_tags": [], "thread_metadata": metadata,
                  "member": {"id": str(thread_id), "user_id": str(self.bot_user_id), "join_timestamp": now,
                             "flags": 1}}
        self.channels[thread_id] = thread
        return thread

    def app_permissions(self, channel_id: int, dm: bool) -> int:
        """The bot's permissions where it was invoked, minus what `deny_channel` took away."""
        if dm:
            return DM_PERMS
        channel = self.channels[channel_id]
        code = self.denied.get(channel_id) or self.denied.get(int(channel.get("parent_id") or 0))
        return BOT_PERMS & ~(POSTING_PERMS if code else 0) & ~(VIEW if code == 50001 else 0)

    def ready(self, session: GatewaySession, gateway_url: str) -> dict[str, Any]:
        ready: dict[str, Any] = {
            "v": 10, "user": self.user(self.bot_user_id, full=True), "user_settings": {},
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds_of(session)], "presences": [],
            "private_channels": [], "relationships": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [],
            "session_id": session.id, "session_type": "normal", "resume_gateway_url": gateway_url,
            "application": {"id": str(self.application_id), "flags": 0}, "_trace": ["fake-gateway"]}
        if session.shard is not None:
            ready["shard"] = session.shard
        return ready

    def guilds_of(self, session: GatewaySession) -> list[int]:
        """The guilds whose events go to `session`'s shard (every guild without sharding)."""
        shard_id, count = session.shard_id, session.shard_count
        return [guild_id for guild_id in self.guilds if shard_of(guild_id, count) == shard_id]

    def guild(self, guild_id: int) -> dict[str, Any]:
        """GUILD_CREATE data: what discord.py needs for `get_guild`, `get_channel` and `guild.me`."""
        role = {"id": str(self.role_ids[guild_id]), "name": self.bot_username, "permissions": str(BOT_PERMS),
                "position": 1, "color": 0, "colors": {"primary_color": 0, "secondary_color": None,
                                                      "tertiary_color": None},
                "hoist": False, "managed": True, "mentionable": False, "icon": None, "unicode_emoji": None,
                "flags": 0, "tags": {"bot_id": str(self.bot_user_id)}}
        everyone = {k: v for k, v in role.items() if k != "tags"}
        everyone.update(id=str(guild_id), name="@everyone", permissions=str(EVERYONE_PERMS), position=0, managed=False)
        channels = [{k: v for k, v in self.channels[c].items() if k != "guild_id"} for c in self.guilds[guild_id]]
        threads = [c for c in self.channels.values() if c["type"] in (10, 11, 12) and c["guild_id"] == str(guild_id)]
        return {
            "id": str(guild_id), "name": f"Guild {guild_id}", "icon": None, "splash": None, "discovery_splash": None,
            "banner": None, "description": None, "owner_id": "999", "afk_channel_id": None, "afk_timeout": 300,
            "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
            "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0, "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False, "preferred_locale": "en-US", "features": [],
            "system_channel_id": channels[0]["id"] if channels else None, "system_channel_flags": 0,
            "rules_channel_id": None, "public_updates_channel_id": None, "safety_alerts_channel_id": None,
            "vanity_url_code": None, "widget_enabled": False, "max_members": 500000, "max_presences": None,
            "roles": [everyone, role], "emojis": [], "stickers": [], "channels": channels, "threads": threads,
            "members": [self.bot_member(guild_id)], "member_count": 2, "large": False, "unavailable": False,
            "joined_at": iso(self.started), "lazy": True, "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
            "application_id": None, "incidents_data": None}

    def interaction(self, *, interaction_id: int, token: str, data: dict[str, Any], guild_id: int | None,
                    channel_id: int, user_id: int, app_permissions: str, locale: str,
                    member_permissions: int = 0) -> dict[str, Any]:
        """INTERACTION_CREATE data for an application command, as Discord sends it (guild or bot DM)."""
        channel = dict(self.channels[channel_id])
        payload: dict[str, Any] = {
            "type": 2, "id": str(interaction_id), "application_id": str(self.application_id), "token": token,
            "version": 1, "data": data, "channel_id": str(channel_id), "channel": channel, "locale": locale,
            "app_permissions": app_permissions, "entitlements": [], "entitlement_sku_ids": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT}
        if guild_id is None:
            payload.update(user=self.user(user_id), context=1, authorizing_integration_owners={"1": str(user_id)})
            return payload
        channel["permissions"] = str(EVERYONE_PERMS)
        member = {**self.member(user_id), "permissions": str(EVERYONE_PERMS | member_permissions)}
        payload.update(guild_id=str(guild_id), guild={"id": str(guild_id), "locale": "en-US", "features": []},
                       guild_locale="en-US", context=0, authorizing_integration_owners={"0": str(guild_id)},
                       member=member)
        return payload

    def message(self, message: StoredMessage, base_url: str) -> dict[str, Any]:
        """A message as Discord's REST API returns it (no guild_id: REST messages don't carry one)."""
        payload: dict[str, Any] = {
            "id": str(message.id), "type": 20 if message.is_original else 19 if message.message_reference else 0,
            "content": message.content, "channel_id": str(message.channel_id),
            "author": self.user(message.author_id if message.author_id is not None else self.bot_user_id),
            "attachments": [self.attachment(message, a, base_url) for a in message.attachments],
            "embeds": message.embeds, "components": message.components,
            "mentions": [self.user(u) for u in message.mention_user_ids],
            "mention_roles": [str(r) for r in message.mention_role_ids], "mention_everyone": message.mention_everyone,
            "pinned": False, "tts": message.tts, "timestamp": iso(message.created_at),
            "edited_timestamp": iso(message.edited_at) if message.edited_at else None, "flags": message.flags}
        if message.interaction_metadata is not None:
            meta = message.interaction_metadata
            payload.update(webhook_id=str(self.application_id), application_id=str(self.application_id),
                           interaction_metadata=meta)
            payload["interaction"] = {k: meta[k] for k in ("id", "type", "name", "user")}  # deprecated twin
        if message.message_reference:
            payload["message_reference"] = {"type": 0, "channel_id": str(message.channel_id),
                                            **message.message_reference}
        if message.thread_id is not None:
            payload["thread"] = self.channels[message.thread_id]
        return payload

    def attachment(self, message: StoredMessage, attachment: Attachment, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/attachments/{message.channel_id}/{attachment.id}/{attachment.filename}"
        payload = {"id": str(attachment.id), "filename": attachment.filename, "size": len(attachment.data),
                   "url": url, "proxy_url": url,
                   "content_type": mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"}
        if message.ephemeral:
            payload["ephemeral"] = True
        if attachment.description:
            payload["description"] = attachment.description
        return payload


# --- the gateway -----------------------------------------------------------------------------------


def _guild_id(data: dict[str, Any]) -> int | None:
    """The guild an event belongs to (it decides the shard): `guild_id`, as Discord's events carry it."""
    value = data.get("guild_id") if isinstance(data, dict) else None
    return int(value) if value is not None else None


def _valid_shard(shard: Any) -> bool:
    """`[shard_id, num_shards]` with 0 <= shard_id < num_shards, else Discord closes with 4010 "Invalid shard"."""
    return (isinstance(shard, list) and len(shard) == 2 and all(isinstance(n, int) for n in shard)
            and 0 <= shard[0] < shard[1])


class _Encoder:
    """Turns one gateway payload into one WebSocket frame, keeping the per-connection compression context."""

    def __init__(self, compress: str | None) -> None:
        self.compress = compress
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream":
            if _zstandard is not None:
                self._zstd = _zstandard.ZstdCompressor().compressobj()
            elif _stdlib_zstd is not None:
                self._zstd = _stdlib_zstd.ZstdCompressor()
            else:
                raise ValueError("zstd-stream requested but no zstd module is installed")
        elif compress not in (None, "", "zlib-stream"):
            raise ValueError(f"unknown compress={compress!r}")

    def encode(self, payload: dict[str, Any]) -> str | bytes:
        text = json.dumps(payload, separators=(",", ":"))
        if self._zlib is not None:
            return self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            frame: bytes
            if _zstandard is not None:
                frame = self._zstd.compress(text.encode()) + self._zstd.flush(_zstandard.COMPRESSOBJ_FLUSH_BLOCK)
            else:
                frame = self._zstd.compress(text.encode(), mode=_stdlib_zstd.ZstdCompressor.FLUSH_BLOCK)
            return frame
        return text


@dataclass
class GatewayConnection:
    """One accepted WebSocket: what the client asked for and how it ended (tests read `fake.gateway.log`)."""

    query: dict[str, str]
    opened_at: float
    session_id: str | None = None
    identified: bool = False
    resumed: bool = False
    closed_at: float | None = None
    close_code: int | None = None  # the code the fake closed with, or the client's


@dataclass
class GatewaySession:
    """A Discord session: survives a dropped socket so RESUME can replay what the client missed."""

    id: str
    token: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # every dispatch, in order, for replay
    valid: bool = True
    conn: _Conn | None = None

    @property
    def shard_id(self) -> int:
        return self.shard[0] if self.shard else 0

    @property
    def shard_count(self) -> int:
        """Without `shard` in its IDENTIFY a session is the only shard of one: it gets everything."""
        return self.shard[1] if self.shard else 1

    def receives(self, guild_id: int | None) -> bool:
        return self.valid and shard_of(guild_id, self.shard_count) == self.shard_id


class _Conn:
    """A live socket: frames go through one queue and one writer task so compression sees them in order."""

    def __init__(self, ws: web.WebSocketResponse, encoder: _Encoder, record: GatewayConnection) -> None:
        self.ws = ws
        self.encoder = encoder
        self.record = record
        self.session: GatewaySession | None = None
        self.queue: asyncio.Queue[dict[str, Any] | Callable[[], None]] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write(), name="fake-discord-gateway-writer")

    def send(self, payload: dict[str, Any]) -> None:
        self.queue.put_nowait(payload)

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every frame queued before it has been written to the socket."""
        self.queue.put_nowait(callback)

    async def _write(self) -> None:
        while True:
            item = await self.queue.get()
            if callable(item):
                item()
                continue
            frame = self.encoder.encode(item)
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return  # socket gone; the session keeps the events for a RESUME

    async def close(self, code: int) -> None:
        self.record.close_code = self.record.close_code or code
        await self.ws.close(code=code)


class FakeGateway:
    """Gateway state machine. `FakeDiscord` owns it and routes `/gateway` WebSockets to `handle`."""

    def __init__(self, *, token: str, objects: DiscordObjects, url: Callable[[], str], privileged_intents: int,
                 changed: Callable[[], None], max_concurrency: int = 1, enforce_identify_limit: bool = False) -> None:
        self._token, self._objects, self._url = token, objects, url
        self._privileged = privileged_intents
        self._changed = changed
        self.max_concurrency = max_concurrency  # what `GET /gateway/bot` says in `session_start_limit`
        self.enforce_identify_limit = enforce_identify_limit  # op 9 for IDENTIFYs beyond max_concurrency per 5 s
        self._identified_at: dict[int, float] = {}  # rate-limit key → when an IDENTIFY last went through
        self.sessions: dict[str, GatewaySession] = {}
        self.current: GatewaySession | None = None  # the latest session identified or resumed (`drop`, `send_op`)
        self.rate_limited_identifies: list[list[int] | None] = []  # the `shard` of each IDENTIFY refused with op 9
        self._held: asyncio.Event | None = None  # set: new sockets wait for it before their HELLO
        self.conns: set[_Conn] = set()
        self.log: list[GatewayConnection] = []
        self.identify_count = 0
        self.resume_count = 0
        self.ready_count = 0  # READY (+ GUILD_CREATEs) or RESUMED frames actually written
        self.heartbeats = 0
        self.identify_payloads: list[dict[str, Any]] = []
        self.identify_refusals: list[int] = []  # close codes for the next IDENTIFYs, whatever they carry

    # --- what the server side does --------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any], *, session: str | None = None) -> int:
        """Send an op 0 event to every valid session of the shard its `guild_id` falls on (shard 0 without one),
        or only to session `session` (an id from `sessions`: one process of several); buffered for RESUME where
        the socket is down; returns its sequence number on the latest session it went to."""
        if session is not None:
            target = self.sessions.get(session)
            if target is None or not target.valid:
                raise RuntimeError(f"no gateway session {session!r} (or it is no longer valid)")
            return self._dispatch(target, event, data)
        sessions = self.receivers(_guild_id(data))
        if not sessions:
            raise RuntimeError("no gateway session for this event's shard: start the client and "
                               "`await fake.wait_for_ready()` first")
        return [self._dispatch(receiver, event, data) for receiver in sessions][-1]

    def receivers(self, guild_id: int | None) -> list[GatewaySession]:
        """The valid sessions that get the events of `guild_id` (None: a DM), oldest first."""
        return [session for session in self.sessions.values() if session.receives(guild_id)]

    def session_of_shard(self, shard_id: int) -> GatewaySession | None:
        """The latest valid session of shard `shard_id` (an unsharded session is shard 0)."""
        found = [session for session in self.sessions.values() if session.valid and session.shard_id == shard_id]
        return found[-1] if found else None

    def _dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> int:
        session.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(payload)
        if session.conn is not None:
            session.conn.send(payload)
        return session.seq

    async def drop(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Close the current session's socket (or shard `shard`'s) with `code` (4007/4009 also end the session, as
        on Discord)."""
        session = self.current if shard is None else self.session_of_shard(shard)
        if session is None or session.conn is None:
            raise RuntimeError("no connected gateway session to drop")
        if code in SESSION_ENDING_CODES:
            session.valid = False
        await session.conn.close(code)

    def send_op(self, op: int, data: Any = None) -> None:
        """Send a raw non-dispatch opcode (7 RECONNECT, 9 INVALID_SESSION, 1 HEARTBEAT request)."""
        session = self.current
        if session is None or session.conn is None:
            raise RuntimeError("no connected gateway session")
        if op == INVALID_SESSION and data is False:
            session.valid = False
        session.conn.send({"op": op, "d": data, "s": None, "t": None})

    def hold_connections(self) -> None:
        """New sockets are accepted but get no HELLO until `release_connections()`: a reconnect that hangs."""
        self._held = asyncio.Event()

    def release_connections(self) -> None:
        if self._held is not None:
            self._held.set()
            self._held = None

    async def close(self) -> None:
        self.release_connections()
        for conn in list(self.conns):
            await conn.close(1001)

    # --- the socket --------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        record = GatewayConnection(query=dict(request.query), opened_at=time.monotonic())
        try:
            encoder = _Encoder(request.query.get("compress"))
        except ValueError as error:
            raise web.HTTPBadRequest(text=str(error)) from error
        ws = web.WebSocketResponse(timeout=5.0, max_msg_size=0, autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, encoder, record)
        self.conns.add(conn)
        self.log.append(record)
        self._changed()
        if self._held is not None:
            await self._held.wait()
        if request.query.get("encoding", "json") != "json":
            await conn.close(4002)  # "Decode error": the fake only speaks JSON, not ETF
        else:
            conn.send({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fake-gateway"]},
                       "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue  # discord.py only sends JSON text frames
                try:
                    payload = json.loads(msg.data)
                except ValueError:
                    await conn.close(4002)
                    break
                await self._on_message(conn, payload)
                self._changed()
        finally:
            if record.close_code is None:
                record.close_code = ws.close_code
            record.closed_at = time.monotonic()
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            conn.writer.cancel()
            try:
                await conn.writer
            except asyncio.CancelledError:
                pass
            self.conns.discard(conn)
            self._changed()
        return ws

    async def _on_message(self, conn: _Conn, payload: dict[str, Any]) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == HEARTBEAT:
            self.heartbeats += 1
            conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(conn, data or {})
        elif op == RESUME:
            await self._resume(conn, data or {})
        elif conn.session is None:
            await conn.close(4003)  # "Not authenticated"
        elif op == REQUEST_MEMBERS:
            self._member_chunk(conn.session, data or {})
        elif op in (PRESENCE, VOICE_STATE):
            pass  # accepted and ignored, as far as these tests care
        else:
            await conn.close(4001)  # "Unknown opcode"

    async def _identify(self, conn: _Conn, data: dict[str, Any]) -> None:
        self.identify_payloads.append(data)
        if conn.session is not None:
            await conn.close(4005)  # "Already authenticated"
            return
        if self.identify_refusals:
            await conn.close(self.identify_refusals.pop(0))
            return
        if data.get("token") != self._token:
            await conn.close(4004)  # "Authentication failed"
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await conn.close(4013)  # "Invalid intent(s)"
            return
        if intents & PRIVILEGED_INTENTS & ~self._privileged:
            await conn.close(4014)  # "Disallowed intent(s)": not enabled for this app in the portal
            return
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await conn.close(INVALID_SHARD)
            return
        if self.enforce_identify_limit and not self._identify_allowed(shard):
            self.rate_limited_identifies.append(shard)
            conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        self.identify_count += 1
        session = GatewaySession(id=secrets.token_hex(16), token=data["token"], intents=intents, shard=shard)
        self.sessions[session.id] = session
        self.current = session
        session.conn, conn.session = conn, session
        conn.record.session_id, conn.record.identified = session.id, True
        self._dispatch(session, "READY", self._objects.ready(session, self._url()))
        for guild_id in self._objects.guilds_of(session):
            self._dispatch(session, "GUILD_CREATE", self._objects.guild(guild_id))
        conn.then(self._mark_ready)

    def _identify_allowed(self, shard: list[int] | None) -> bool:
        """One IDENTIFY per rate-limit key (`shard_id % max_concurrency`) per `IDENTIFY_WINDOW_S`."""
        key = (shard[0] if shard else 0) % self.max_concurrency
        now = time.monotonic()
        last = self._identified_at.get(key)
        if last is not None and now - last < IDENTIFY_WINDOW_S:
            return False
        self._identified_at[key] = now
        return True

    async def _resume(self, conn: _Conn, data: dict[str, Any]) -> None:
        if data.get("token") != self._token:
            await conn.close(4004)
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or not session.valid or not isinstance(seq, int) or seq > session.seq:
            conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        if session.conn is not None and session.conn is not conn:
            await session.conn.close(4000)
        self.resume_count += 1
        self.current = session
        session.conn, conn.session = conn, session
        conn.record.session_id, conn.record.resumed = session.id, True
        for event in session.events:
            if event["s"] > seq:
                conn.send(event)
        self._dispatch(session, "RESUMED", {"_trace": ["fake-gateway"]})
        conn.then(self._mark_ready)

    def _member_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild_id = int(data.get("guild_id", 0))
        chunk: dict[str, Any] = {"guild_id": str(guild_id), "members": [self._objects.bot_member(guild_id)],
                                 "chunk_index": 0, "chunk_count": 1, "not_found": [], "presences": []}
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        self._dispatch(session, "GUILD_MEMBERS_CHUNK", chunk)

    def _mark_ready(self) -> None:
        self.ready_count += 1
        self._changed()
