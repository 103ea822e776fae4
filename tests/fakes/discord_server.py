"""`FakeDiscord`: Discord's REST API (v10) and gateway on 127.0.0.1, for driving the real discord.py in tests.

Why a server and not mocks: the bot's Discord adapter is only as right as its use of discord.py, and
discord.py's behaviour (rate-limit buckets, 429 retries, multipart uploads, resume after a dropped socket)
lives in its HTTP and gateway code. Pointing the unmodified library at this server exercises all of it:

    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)

Responses follow Discord's wire formats (snowflakes as strings, `Content-Type: application/json` exactly,
error bodies `{"message", "code"}`), and Discord's rules that bots trip over are enforced: the 3 s deadline
for the first interaction response, 2,000 characters per message, one acknowledgement per interaction, a
deferred "thinking" message that the first follow-up replaces, mentions parsed unless `allowed_mentions`
says otherwise. Faults are scripted by HTTP method and path regex (`fail`, `rate_limit`; the vocabulary shared
by every fake is in `base.py`). Everything received is recorded for assertions (`requests`, `callbacks`,
messages).
"""

from __future__ import annotations

import hashlib
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import BodyPartReader, web

from .base import LocalServer
from .discord_gateway import (
    EVERYONE_MENTION,
    USER_MENTION,
    ApiError,
    Attachment,
    DiscordObjects,
    FakeGateway,
    MessageOp,
    StoredMessage,
    apply_message,
    form_error,
)

API_PREFIX = "/api/v10"
DENIAL_MESSAGES = {50001: "Missing Access", 50007: "Cannot send messages to this user", 50013: "Missing Permissions"}
# Intents that decide which MESSAGE_CREATEs a session gets, and whether it sees their text
# (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 9, 1 << 12, 1 << 15
JSON_KEY: web.RequestKey[Any] = web.RequestKey("discord_json", object)
UPLOADS_KEY: web.RequestKey[list[Attachment]] = web.RequestKey("discord_uploads", list)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """JSON with `Content-Type: application/json` verbatim: discord.py parses nothing else (no charset!)."""
    return web.Response(status=status, body=json.dumps(data).encode(),
                        headers={"Content-Type": "application/json", "Via": "1.1 google", **(headers or {})})


def _no_content() -> web.Response:
    return web.Response(status=204, headers={"Via": "1.1 google"})


@dataclass
class RecordedRequest:
    """One REST request as the fake saw it; `status` is what it answered (429s included)."""

    method: str
    path: str  # relative to the API base, e.g. "/webhooks/111/<token>/messages/@original"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any  # the JSON body, or the parsed `payload_json` of a multipart body
    files: list[tuple[str, bytes, str]]  # (filename, bytes, content type of the multipart part)
    at: float  # time.monotonic()
    status: int = 0


@dataclass
class Callback:
    interaction_id: int
    token: str
    type: int  # 4 message, 5 deferred message, 9 modal, ...
    data: dict[str, Any]
    at: float
    files: list[Attachment] = field(default_factory=list)


@dataclass
class CommandPut:
    guild_id: int | None
    body: list[dict[str, Any]]
    at: float


@dataclass
class InteractionState:
    id: int
    token: str
    name: str
    guild_id: int | None
    channel_id: int
    user_id: int
    payload: dict[str, Any]
    created: float  # time.monotonic()
    callback_type: int | None = None
    original: StoredMessage | None = None
    followups: list[StoredMessage] = field(default_factory=list)


@dataclass
class SentInteraction:
    """What `send_interaction` returns: enough to look the interaction's replies up."""

    id: int
    token: str
    guild_id: int | None
    channel_id: int
    user_id: int
    payload: dict[str, Any]


@dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    times: int
    respond: Callable[[str], web.Response]


class FakeDiscord(LocalServer):
    """A Discord REST + gateway server for one bot. See the module docstring; tests read the recorded state."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        application_id: int = 111,
        bot_user_id: int | None = None,
        guilds: Mapping[int, Sequence[int]] | None = None,
        bot_username: str = "fakebot",
        ack_deadline: float | None = 3.0,
        token_ttl: float = 900.0,
        privileged_intents: int = 0,
        bucket_limit: int = 1000,
        bucket_window: float = 1.0,
        enforce_buckets: bool = False,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
        enforce_identify_limit: bool = False,
    ) -> None:
        super().__init__()
        self.token, self.application_id = token, application_id
        self.bot_user_id = bot_user_id if bot_user_id is not None else application_id
        self.objects = DiscordObjects(application_id=application_id, bot_user_id=self.bot_user_id,
                                      bot_username=bot_username, guilds=guilds or {})
        self.guilds = self.objects.guilds
        self.ack_deadline, self.token_ttl = ack_deadline, token_ttl
        self.privileged_intents = privileged_intents  # what the app has enabled in the Developer Portal
        self.bucket_limit, self.bucket_window, self.enforce_buckets = bucket_limit, bucket_window, enforce_buckets
        self.requests: list[RecordedRequest] = []
        self.callbacks: list[Callback] = []
        self.command_puts: list[CommandPut] = []
        self.messages: dict[int, StoredMessage] = {}
        self.message_ops: list[MessageOp] = []
        self.interactions: dict[str, InteractionState] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._injections: list[_Injection] = []
        self._uploads_denied: set[int] = set()
        self._buckets: dict[str, tuple[float, int]] = {}
        self._attachments: dict[int, Attachment] = {}
        self.recommended_shards = recommended_shards  # `shards` in `GET /gateway/bot`
        self.gateway = FakeGateway(token=token, objects=self.objects, url=lambda: self.gateway_url,
                                    privileged_intents=privileged_intents, changed=self._changed,
                                    max_concurrency=max_concurrency, enforce_identify_limit=enforce_identify_limit)

    # --- lifecycle ---------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/gateway/", self.gateway.handle)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/users/@me", self._users_me),
            ("GET", "/oauth2/applications/@me", self._app_info),
            ("GET", "/applications/@me", self._app_info),
            ("POST", "/users/@me/channels", self._open_dm),
            ("GET", "/gateway", self._gateway_info),
            ("GET", "/gateway/bot", self._gateway_info),
            ("*", "/applications/{app_id}/commands", self._commands_route),
            ("*", "/applications/{app_id}/guilds/{guild_id}/commands", self._commands_route),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._execute_webhook),
            ("*", "/webhooks/{app_id}/{token}/messages/{message_id}", self._webhook_message),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("*", "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("POST", "/channels/{channel_id}/threads", self._create_thread),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._create_thread),
            ("POST", "/channels/{channel_id}/typing", self._typing),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, API_PREFIX + path, handler)
        return app

    async def _before_close(self) -> None:
        """Close gateway sockets (1001, as Discord does when it goes away); the HTTP server stops after."""
        await self.gateway.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # --- test controls -----------------------------------------------------------------------------

    def deny_channel(self, channel_id: int, code: int = 50013) -> None:
        """Posting in (or threading from) this channel answers 403 `code` from now on."""
        self.objects.denied[int(channel_id)] = code
        self._changed()

    def refuse_dms(self, user_id: int) -> None:
        """Messages to this user's DM channel answer 403 50007 (DMs closed, no shared server, or blocked)."""
        self.deny_channel(self.objects.dm_channel(user_id), 50007)

    def deny_uploads(self, channel_id: int) -> None:
        """Posting files in this channel answers 403 50013 from now on (Attach Files taken away)."""
        self._uploads_denied.add(int(channel_id))

    def allow_channel(self, channel_id: int) -> None:
        self.objects.denied.pop(int(channel_id), None)

    def rate_limit(self, method: str, path_regex: str, times: int = 1, retry_after: float = 0.3,
                   is_global: bool = False) -> None:
        """The next `times` `method` requests whose path (below /api/v10) matches answer 429 like Discord: JSON
        `retry_after`/`global`, `Retry-After`, `X-RateLimit-*` (a per-route bucket, or `X-RateLimit-Global`)."""
        def respond(path: str) -> web.Response:
            headers = {"Retry-After": str(math.ceil(retry_after)),
                       "X-RateLimit-Scope": "global" if is_global else "user"}
            if is_global:
                headers["X-RateLimit-Global"] = "true"
            else:
                headers.update({"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                                "X-RateLimit-Bucket": hashlib.sha1(path.encode()).hexdigest()[:32]})
            body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
            return json_response(body, 429, headers)
        self._injections.append(_Injection(method.upper(), re.compile(path_regex), times, respond))

    def fail(self, method: str, path_regex: str, status: int = 500, code: int = 0, message: str | None = None,
             times: int = 1) -> None:
        """The next `times` matching requests answer `status` with Discord's error body `{"message", "code"}`
        (e.g. 404/10062 "Unknown interaction")."""
        if status == 429:
            raise ValueError("a 429 is `rate_limit(method, path_regex, …)`")
        body = {"message": message or f"{status}: {HTTPStatus(status).phrase}", "code": code}
        self._injections.append(_Injection(method.upper(), re.compile(path_regex), times,
                                           lambda _path: json_response(body, status)))

    def set_commands(self, commands: list[dict[str, Any]], guild_id: int | None = None) -> list[dict[str, Any]]:
        """Pre-register commands (as if PUT by an earlier run) without recording a PUT."""
        self._commands[guild_id] = self._build_commands(commands, guild_id)
        return self._commands[guild_id]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        return list(self._commands.get(guild_id, []))

    async def send_interaction(
        self, name: str = "ask", options: Mapping[str, Any] | None = None, *, guild_id: int | None = None,
        channel_id: int | None = None, user_id: int = 444, dm: bool = False,
        app_permissions: str | None = None, locale: str = "en-US", subcommand: str | None = None,
        member_permissions: int = 0, session: str | None = None,
    ) -> SentInteraction:
        """Dispatch INTERACTION_CREATE for slash command `name`, shaped exactly like Discord's (to every session of
        its shard, or to gateway session `session` only: one process of several).

        Guild commands registered for the guild take precedence (the payload then carries `data.guild_id`,
        as Discord's does), else the global command; option types follow the registered command. With
        `subcommand`, `options` are that subcommand's (nested as Discord nests them); user options come with
        their `resolved` user. `member_permissions` are added to the invoking member's (e.g. Manage Server).
        """
        if dm:
            guild_id = None
            channel_id = channel_id or self.objects.dm_channel(user_id)
        else:
            guild_id = guild_id if guild_id is not None else next(iter(self.guilds), None)
            if guild_id not in self.guilds:
                raise ValueError(f"unknown guild {guild_id}; the fake has {list(self.guilds)}")
            channel_id = channel_id if channel_id is not None else self.guilds[guild_id][0]
            channel = self.objects.channels.get(channel_id)
            if channel is None or channel.get("guild_id") != str(guild_id):
                raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
        command, command_guild = self._find_command(name, guild_id)
        data: dict[str, Any] = {"id": command["id"] if command else str(self.objects.snowflake()), "name": name,
                                "type": 1}
        declared = command
        if subcommand is not None:
            declared = next((o for o in (command or {}).get("options", []) if o.get("name") == subcommand), None)
        typed = [self._option(key, value, declared) for key, value in (options or {}).items()]
        if subcommand is not None:
            data["options"] = [{"type": 1, "name": subcommand, **({"options": typed} if typed else {})}]
        elif typed:
            data["options"] = typed
        users = [int(option["value"]) for option in typed if option.get("type") == 6]
        if users:
            data["resolved"] = {"users": {str(user): self.objects.user(user) for user in users}}
        if command_guild is not None:
            data["guild_id"] = str(command_guild)
        interaction_id = self.objects.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        perms = app_permissions if app_permissions is not None else str(self.objects.app_permissions(channel_id, dm))
        payload = self.objects.interaction(interaction_id=interaction_id, token=token, data=data, guild_id=guild_id,
                                           channel_id=channel_id, user_id=user_id, app_permissions=perms, locale=locale,
                                           member_permissions=member_permissions)
        self.interactions[token] = InteractionState(interaction_id, token, name, guild_id, channel_id, user_id,
                                                    payload, time.monotonic())
        self.gateway.dispatch("INTERACTION_CREATE", payload, session=session)
        self._changed()
        return SentInteraction(interaction_id, token, guild_id, channel_id, user_id, payload)

    def press_button(self, message: StoredMessage, custom_id: str, *, user_id: int = 444,
                     member_permissions: int = 0) -> SentInteraction:
        """Dispatch INTERACTION_CREATE for a click on `message`'s button `custom_id` (a MESSAGE_COMPONENT, type 3),
        shaped like Discord's: `data.custom_id`, `data.component_type` 2, the message as it is now, the presser as
        member (guild) or user (DM). Its callback may be 4, 5, 6 (deferred update) or 7 (update message)."""
        buttons = [c for row in message.components for c in row.get("components") or [row]]
        if not any(c.get("custom_id") == custom_id for c in buttons):
            raise ValueError(f"message {message.id} has no button {custom_id!r}: {message.components}")
        dm = message.guild_id is None
        interaction_id = self.objects.snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload = self.objects.interaction(
            interaction_id=interaction_id, token=token, data={"custom_id": custom_id, "component_type": 2},
            guild_id=message.guild_id, channel_id=message.channel_id, user_id=user_id,
            app_permissions=str(self.objects.app_permissions(message.channel_id, dm)), locale="en-US",
            member_permissions=member_permissions)
        payload.update(type=3, message=self.objects.message(message, self.base_url))
        if message.guild_id is not None:
            payload["message"]["guild_id"] = str(message.guild_id)  # as the gateway sends it
        self.interactions[token] = InteractionState(interaction_id, token, custom_id, message.guild_id,
                                                    message.channel_id, user_id, payload, time.monotonic())
        self.gateway.dispatch("INTERACTION_CREATE", payload)
        self._changed()
        return SentInteraction(interaction_id, token, message.guild_id, message.channel_id, user_id, payload)

    def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send any gateway event on the current session; returns its sequence number."""
        seq = self.gateway.dispatch(event, data)
        self._changed()
        return seq

    def send_message(
        self, content: str, *, user_id: int = 444, guild_id: int | None = None, channel_id: int | None = None,
        dm: bool = False, reply_to: int | None = None, ping_on_reply: bool = False, author_is_bot: bool = False,
    ) -> dict[str, Any]:
        """A user's message, dispatched as MESSAGE_CREATE the way Discord sends it to the bot; returns the event's
        data (dispatch it again to redeliver it).

        Mentions are parsed from `content` (`<@id>`), plus the replied-to author with `ping_on_reply`; a reply
        (`reply_to`) carries `message_reference` and `referenced_message` (null when that message is gone). As on
        Discord, a session without the GUILD_MESSAGES (DMs: DIRECT_MESSAGES) intent gets nothing, and one without
        MESSAGE_CONTENT gets an empty `content` unless the message mentions the bot or is a DM
        (https://discord.com/developers/docs/events/gateway#message-content-intent)."""
        if dm:
            guild_id, channel_id = None, self.objects.dm_channel(user_id)
        else:
            guild_id = guild_id if guild_id is not None else next(iter(self.guilds))
            channel_id = channel_id if channel_id is not None else self.guilds[guild_id][0]
        referenced = self.messages.get(reply_to) if reply_to is not None else None
        mentioned = [int(u) for u in dict.fromkeys(USER_MENTION.findall(content))]
        if ping_on_reply and referenced is not None:
            replied_author = referenced.author_id if referenced.author_id is not None else self.bot_user_id
            mentioned = list(dict.fromkeys([*mentioned, replied_author]))
        stored = StoredMessage(self.objects.snowflake(), channel_id, guild_id, author_id=user_id, content=content,
                               mention_user_ids=mentioned, mention_everyone=bool(EVERYONE_MENTION.search(content)))
        if reply_to is not None:
            stored.message_reference = {"message_id": str(reply_to), "channel_id": str(channel_id),
                                        **({"guild_id": str(guild_id)} if guild_id else {})}
        self.messages[stored.id] = stored
        data = self.objects.message(stored, self.base_url)
        author = self.objects.user(user_id)
        author["bot"] = author["bot"] or author_is_bot
        data["author"] = author
        if reply_to is not None:
            data["referenced_message"] = None if referenced is None or referenced.deleted else \
                self.objects.message(referenced, self.base_url)
        if guild_id is not None:
            data["guild_id"] = str(guild_id)
            data["member"] = {k: v for k, v in self.objects.member(user_id).items() if k != "user"}
            data["mentions"] = [{**self.objects.user(u), "member": {k: v for k, v in self.objects.member(u).items()
                                                                     if k != "user"}} for u in mentioned]
        receivers = self.gateway.receivers(guild_id)
        intents = receivers[-1].intents if receivers else 0  # one bot's sessions all ask for the same intents
        if not intents & (DIRECT_MESSAGES if dm else GUILD_MESSAGES):
            return data  # Discord doesn't send it to this session at all
        if not intents & MESSAGE_CONTENT and not dm and self.bot_user_id not in mentioned:
            data.update(content="", embeds=[], attachments=[], components=[])
        self.dispatch("MESSAGE_CREATE", data)
        return data

    def replies_to(self, message_id: int) -> list[StoredMessage]:
        """The bot's messages that reply to message `message_id` (not deleted), oldest first."""
        return [m for m in self.messages.values() if m.author_id is None and not m.deleted
                and (m.message_reference or {}).get("message_id") in (message_id, str(message_id))]

    async def drop_gateway(self, code: int = 4000, *, shard: int | None = None) -> None:
        """Close the gateway socket (the latest session's, or shard `shard`'s) with `code`; discord.py resumes
        (4007/4009: Discord ends the session too)."""
        await self.gateway.drop(code, shard=shard)

    def refuse_identify(self, code: int = 4004) -> None:
        """The next IDENTIFY is answered by closing the socket with `code` (4004 "Authentication failed": the
        token was reset after the REST login had succeeded; 4014 "Disallowed intent(s)")."""
        self.gateway.identify_refusals.append(code)

    def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: discord.py closes and resumes."""
        self.gateway.send_op(7)

    def invalidate_session(self, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; with `resumable=False` discord.py identifies afresh."""
        self.gateway.send_op(9, resumable)

    # --- what tests read ---------------------------------------------------------------------------

    def original_message(self, token: str) -> StoredMessage | None:
        state = self.interactions.get(token)
        return state.original if state else None

    def followups(self, token: str) -> list[StoredMessage]:
        state = self.interactions.get(token)
        return [m for m in state.followups if not m.deleted] if state else []

    def channel_messages(self, channel_id: int) -> list[StoredMessage]:
        """Messages posted with POST /channels/{id}/messages (not interaction responses), oldest first."""
        return [m for m in self.messages.values()
                if m.channel_id == channel_id and m.token is None and m.author_id is None and not m.deleted]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """The `method` requests whose path (below /api/v10) matches `path_regex` (searched), in order."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    @property
    def gateway_connections(self) -> int:
        """WebSocket connections accepted; `fake.gateway.log` has each one's query and close code."""
        return len(self.gateway.log)

    def identified_shards(self) -> list[list[int] | None]:
        """The `shard` of every IDENTIFY received, in order (None: an unsharded IDENTIFY)."""
        return [payload.get("shard") for payload in self.gateway.identify_payloads]

    @property
    def identify_count(self) -> int:
        return self.gateway.identify_count

    @property
    def resume_count(self) -> int:
        return self.gateway.resume_count

    @property
    def ready_count(self) -> int:
        """READY (with every GUILD_CREATE) or RESUMED handshakes written to the client so far."""
        return self.gateway.ready_count

    async def wait_for_ready(self, n: int = 1, timeout: float = 10.0) -> None:
        """Until n READY (with every GUILD_CREATE) or RESUMED handshakes have been written to the client."""
        await self.wait_until(lambda: self.ready_count >= n, timeout, what=f"{n} READY/RESUMED handshake(s)")

    def _describe(self) -> str:
        recent = ", ".join(f"{r.method} {r.path[:60]} → {r.status}" for r in self.requests[-8:]) or "none"
        return (f"requests={len(self.requests)} (last: {recent}); callbacks={len(self.callbacks)}; gateway "
                f"connections={self.gateway_connections} identifies={self.identify_count} resumes={self.resume_count} "
                f"ready={self.ready_count}")

    # --- HTTP plumbing -----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            try:
                return await handler(request)  # the gateway socket and attachment downloads
            except (web.HTTPException, ConnectionError):
                raise  # an answer, or the client went away
            except Exception as error:  # a bug in the fake: kept for the test to see
                self._fake_error(f"{request.method} {request.path}", error)
                raise
        path = request.path[len(API_PREFIX):]
        record = RecordedRequest(request.method, path, dict(request.query), dict(request.headers), None, [],
                                 time.monotonic())
        self.requests.append(record)
        response: web.StreamResponse
        try:
            record.json, uploads = await self._read_body(request)
            record.files = [(a.filename, a.data, a.content_type) for a in uploads]
            request[JSON_KEY], request[UPLOADS_KEY] = record.json, uploads
            response = self._injected(request.method, path) or await self._authorized(request, path, handler)
        except ApiError as error:
            response = json_response(error.body, error.status)
        except web.HTTPException as error:  # unknown route or method
            response = json_response({"message": f"{error.status}: {error.reason}", "code": 0}, error.status)
        except Exception as error:  # a bug in the fake: keep it for the test to see, answer like Discord's 500
            self._fake_error(f"{request.method} {path}", error)
            response = json_response({"message": "500: Internal Server Error", "code": 0}, 500)
        record.status = response.status
        self._changed()
        return response

    async def _authorized(self, request: web.Request, path: str,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        token_routes = path.startswith("/interactions/") or re.match(r"^/webhooks/\d+/[^/]+", path)
        if not token_routes and path != "/gateway" and request.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")
        headers, reset_after = self._bucket(request)
        if self.enforce_buckets and reset_after is not None:
            return json_response({"message": "You are being rate limited.", "retry_after": reset_after,
                                  "global": False}, 429,
                                 {**headers, "Retry-After": str(math.ceil(reset_after)), "X-RateLimit-Scope": "user"})
        response = await handler(request)
        response.headers.update(headers)
        return response

    def _injected(self, method: str, path: str) -> web.Response | None:
        for injection in self._injections:
            if injection.times > 0 and injection.method in (method, "*") and injection.pattern.search(path):
                injection.times -= 1
                return injection.respond(path)
        return None

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Attachment]]:
        if not request.body_exists:
            return None, []
        if request.content_type.startswith("multipart/"):
            payload: Any = None
            uploads: list[Attachment] = []
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, BodyPartReader)  # Discord's form has no nested multipart
                if part.name == "payload_json":
                    payload = self._parse_json(await part.text())
                elif part.filename is not None:
                    match = re.fullmatch(r"files\[(\d+)\]", part.name or "")
                    index = int(match.group(1)) if match else len(uploads)
                    uploads.append(Attachment(index, part.filename,
                                              bytes(await part.read(decode=False)),
                                              part.headers.get("Content-Type", "application/octet-stream")))
            return payload, uploads
        text = await request.text()
        return (self._parse_json(text) if text else None), []

    @staticmethod
    def _parse_json(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise ApiError(400, 50109, "The request body contains invalid JSON.") from None

    def _bucket(self, request: web.Request) -> tuple[dict[str, str], float | None]:
        """Count the request in its bucket (route + major parameter) and return Discord-style X-RateLimit-*
        headers, plus the seconds until reset if this request went over `bucket_limit` in `bucket_window`."""
        if self.bucket_limit <= 0 or request.match_info.route.resource is None:
            return {}, None
        template = request.match_info.route.resource.canonical
        major = "+".join(v for k, v in request.match_info.items() if k in ("channel_id", "guild_id", "token"))
        key, now = f"{request.method} {template}:{major}", time.monotonic()
        start, count = self._buckets.get(key, (now, 0))
        if now - start >= self.bucket_window:
            start, count = now, 0
        count += 1
        self._buckets[key] = (start, count)
        reset_after = max(start + self.bucket_window - now, 0.001)
        headers = {"X-RateLimit-Limit": str(self.bucket_limit),
                   "X-RateLimit-Remaining": str(max(self.bucket_limit - count, 0)),
                   "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                   "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                   "X-RateLimit-Bucket": hashlib.sha1(f"{request.method} {template}".encode()).hexdigest()[:32]}
        return headers, (reset_after if count > self.bucket_limit else None)

    # --- REST: identity, gateway, commands ---------------------------------------------------------

    async def _users_me(self, request: web.Request) -> web.Response:
        return json_response(self.objects.user(self.bot_user_id, full=True))

    async def _app_info(self, request: web.Request) -> web.Response:
        owner = self.objects.user(999)
        return json_response({
            "id": str(self.application_id), "name": self.objects.bot_username, "icon": None, "description": "",
            "summary": "", "type": None, "hook": True, "bot_public": True, "bot_require_code_grant": False,
            "verify_key": "0" * 64, "flags": 0, "owner": owner, "team": None, "rpc_origins": [],
            "redirect_uris": [], "interactions_endpoint_url": None, "tags": [],
            "bot": self.objects.user(self.bot_user_id), "approximate_guild_count": len(self.guilds),
            "integration_types_config": {"0": {}}})

    async def _open_dm(self, request: web.Request) -> web.Response:
        """Create DM: opening the channel always works; whether a message gets through is decided on posting."""
        body = request[JSON_KEY] or {}
        recipient = str(body.get("recipient_id", ""))
        if not recipient.isdigit():
            raise form_error("recipient_id", f'Value "{recipient}" is not snowflake.')
        return json_response(self.objects.channels[self.objects.dm_channel(int(recipient))])

    async def _gateway_info(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = {"url": self.gateway_url}
        if request.path.endswith("/bot"):
            limit = {"total": 1000, "remaining": 1000 - self.identify_count, "reset_after": 14400000,
                     "max_concurrency": self.gateway.max_concurrency}
            body.update(shards=self.recommended_shards, session_start_limit=limit)
        return json_response(body)

    async def _commands_route(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        if request.match_info["app_id"] != str(self.application_id) or (guild_id and guild_id not in self.guilds):
            raise ApiError(403, 50001, "Missing Access")
        if request.method == "GET":
            return json_response(self.commands(guild_id))
        if request.method != "PUT":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT"])
        body = request[JSON_KEY]
        if not isinstance(body, list):
            raise form_error("_root", "Must be an array of application commands.")
        self._commands[guild_id] = self._build_commands(body, guild_id)
        self.command_puts.append(CommandPut(guild_id, body, time.monotonic()))
        return json_response(self._commands[guild_id])

    def _build_commands(self, body: list[dict[str, Any]], guild_id: int | None) -> list[dict[str, Any]]:
        """Validate like Discord (names, descriptions, duplicates) and add id/application_id/version."""
        seen: set[tuple[str, int]] = set()
        built = []
        for index, command in enumerate(body):
            name, ctype = str(command.get("name", "")), int(command.get("type", 1))
            if not re.fullmatch(r"[-_\w]{1,32}", name) or (ctype == 1 and name != name.lower()):
                raise form_error(f"{index}.name", "Command name is invalid")
            if ctype == 1 and not 1 <= len(command.get("description") or "") <= 100:
                raise form_error(f"{index}.description", "Must be between 1 and 100 in length.")
            if (name, ctype) in seen:
                raise form_error(f"{index}.name", "Application command names must be unique")
            seen.add((name, ctype))
            command_id = self._command_ids.setdefault((guild_id, name, ctype), self.objects.snowflake())
            item = {"default_member_permissions": None, "nsfw": False, "contexts": None,
                    **self._normalized(command), "id": str(command_id), "application_id": str(self.application_id),
                    "type": ctype, "version": str(self.objects.snowflake())}
            item["integration_types"] = command.get("integration_types") or [0]
            if item["default_member_permissions"] is not None:  # a bit set, which Discord echoes as a string
                item["default_member_permissions"] = str(item["default_member_permissions"])
            if guild_id is not None:
                item["guild_id"] = str(guild_id)
            built.append(item)
        return built

    @classmethod
    def _normalized(cls, node: dict[str, Any]) -> dict[str, Any]:
        """As Discord echoes commands: no localizations (unless asked), no nulls, no `required: false`."""
        out = {k: v for k, v in node.items() if v is not None and k not in ("name_localizations",
               "description_localizations") and not (k in ("required", "autocomplete") and v is False)}
        if "options" in out:
            out["options"] = [cls._normalized(o) for o in out["options"]]
        return out

    def _find_command(self, name: str, guild_id: int | None) -> tuple[dict[str, Any] | None, int | None]:
        for scope in ([guild_id] if guild_id is not None else []) + [None]:
            for command in self._commands.get(scope, []):
                if command["name"] == name and command["type"] == 1:
                    return command, scope
        return None, None

    @staticmethod
    def _option(name: str, value: Any, command: dict[str, Any] | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return {"name": name, **value}
        declared = next((o for o in (command or {}).get("options", []) if o.get("name") == name), None)
        if declared is not None:
            kind = declared["type"]
        else:
            kind = 5 if isinstance(value, bool) else 4 if isinstance(value, int) else 10 \
                if isinstance(value, float) else 3
        return {"name": name, "type": kind, "value": value}

    # --- REST: interactions and their webhooks -----------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        state = self.interactions.get(request.match_info["token"])
        late = self.ack_deadline is not None and state is not None and \
            time.monotonic() - state.created > self.ack_deadline
        if state is None or str(state.id) != request.match_info["interaction_id"] or late:
            raise ApiError(404, 10062, "Unknown interaction")
        if state.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = request[JSON_KEY] or {}
        kind, data, uploads = body.get("type"), body.get("data") or {}, request[UPLOADS_KEY]
        component = state.payload.get("type") == 3
        if kind not in (4, 5, 9, 10, 12) and not (component and kind in (6, 7)):
            raise form_error("type", "Value must be one of {4, 5, 9, 10, 12}.")  # 6 and 7 answer only components
        message = None
        if kind == 4:
            message = self._new_message(state.channel_id, state.guild_id, state, original=True)
            message.flags = int(data.get("flags", 0)) & (4 | 64 | 4096 | 32768)
            self._apply(message, data, uploads, creating=True)
        elif kind == 5:
            message = self._new_message(state.channel_id, state.guild_id, state, original=True)
            message.flags = 128 | (int(data.get("flags", 0)) & 64)
            self._record(message, "create", data, [])
        elif kind == 7:  # the clicked message itself is updated
            clicked = self.messages.get(int(state.payload["message"]["id"]))
            if clicked is not None and not clicked.deleted:
                self._apply(clicked, data, uploads, creating=False)
        state.callback_type, state.original = kind, message
        self.callbacks.append(Callback(state.id, state.token, kind, data, time.monotonic(), uploads))
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return _no_content()
        interaction: dict[str, Any] = {"id": str(state.id), "type": state.payload.get("type", 2)}
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            interaction.update(response_message_id=str(message.id), response_message_loading=message.loading,
                               response_message_ephemeral=message.ephemeral)
            resource["message"] = self.objects.message(message, self.base_url)
        return json_response({"interaction": interaction, "resource": resource})

    def _webhook_state(self, request: web.Request) -> InteractionState:
        state = self.interactions.get(request.match_info["token"])
        if request.match_info["app_id"] != str(self.application_id) or state is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        if time.monotonic() - state.created > self.token_ttl:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return state

    async def _execute_webhook(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        if state.callback_type not in (4, 5, 6, 7):
            raise ApiError(404, 10015, "Unknown Webhook")  # no follow-ups before the interaction is answered
        payload, uploads = request[JSON_KEY] or {}, request[UPLOADS_KEY]
        original = state.original
        if original is not None and original.loading and not original.deleted:
            # Discord: the first follow-up after a deferral replaces the "thinking…" message, keeping the
            # deferral's visibility (a follow-up's ephemeral flag cannot change it).
            message = original
            self._apply(message, payload, uploads, creating=True)
            message.flags &= ~128
        else:
            message = self._new_message(state.channel_id, state.guild_id, state)
            message.flags = int(payload.get("flags", 0)) & (4 | 64 | 4096 | 32768)
            self._apply(message, payload, uploads, creating=True)
            state.followups.append(message)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return _no_content()
        return json_response(self.objects.message(message, self.base_url))

    async def _webhook_message(self, request: web.Request) -> web.Response:
        state = self._webhook_state(request)
        wanted = request.match_info["message_id"]
        candidates = ([state.original] if state.original else []) + state.followups
        message = state.original if wanted == "@original" else \
            next((m for m in candidates if str(m.id) == wanted), None)
        if message is None or message.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        if request.method == "PATCH":
            self._apply(message, request[JSON_KEY] or {}, request[UPLOADS_KEY], creating=False)
            message.flags &= ~128  # the first edit of a deferred response fills it
        elif request.method == "DELETE":
            message.deleted = True
            self._record(message, "delete", {}, [])
            return _no_content()
        elif request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PATCH", "DELETE"])
        return json_response(self.objects.message(message, self.base_url))

    # --- REST: channels, messages, threads ---------------------------------------------------------

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.objects.channels.get(int(channel_id)) if channel_id.isdigit() else None
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _check_denied(self, channel: dict[str, Any]) -> None:
        for cid in (channel["id"], channel.get("parent_id")):
            code = self.objects.denied.get(int(cid)) if cid else None
            if code is not None:
                raise ApiError(403, code, DENIAL_MESSAGES.get(code, "Forbidden"))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._channel(request.match_info["channel_id"])
        if self.objects.denied.get(int(channel["id"])) == 50001:
            raise ApiError(403, 50001, "Missing Access")
        return json_response(channel)

    async def _post_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request.match_info["channel_id"])
        self._check_denied(channel)
        if request[UPLOADS_KEY] and int(channel["id"]) in self._uploads_denied:
            raise ApiError(403, 50013, DENIAL_MESSAGES[50013])
        payload = request[JSON_KEY] or {}
        guild_id = int(channel["guild_id"]) if channel.get("guild_id") else None
        message = self._new_message(int(channel["id"]), guild_id, None)
        message.flags = int(payload.get("flags", 0)) & (4 | 4096 | 32768)
        reference = payload.get("message_reference")
        if reference and reference.get("fail_if_not_exists", True) and \
                self.messages.get(int(reference.get("message_id") or 0)) is None:
            raise form_error("message_reference", "Unknown message")
        message.message_reference = reference
        self._apply(message, payload, request[UPLOADS_KEY], creating=True)
        replied = self.messages.get(int(reference.get("message_id") or 0)) if reference else None
        allowed = payload.get("allowed_mentions")
        if replied is not None and replied.author_id is not None and (allowed is None or allowed.get("replied_user")):
            message.mention_user_ids.append(replied.author_id)  # a reply pings its author unless told not to
        return json_response(self.objects.message(message, self.base_url))

    def _visible_message(self, channel_id: int, message_id: str) -> StoredMessage:
        message = self.messages.get(int(message_id)) if message_id.isdigit() else None
        if message is None or message.channel_id != channel_id or message.deleted or message.ephemeral:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def _channel_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request.match_info["channel_id"])
        message = self._visible_message(int(channel["id"]), request.match_info["message_id"])
        if request.method == "GET":
            return json_response(self.objects.message(message, self.base_url))
        if request.method not in ("PATCH", "DELETE"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PATCH", "DELETE"])
        self._check_denied(channel)
        if message.token is not None or message.author_id is not None:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        if request.method == "DELETE":
            message.deleted = True
            self._record(message, "delete", {}, [])
            return _no_content()
        self._apply(message, request[JSON_KEY] or {}, request[UPLOADS_KEY], creating=False)
        return json_response(self.objects.message(message, self.base_url))

    async def _create_thread(self, request: web.Request) -> web.Response:
        parent = self._channel(request.match_info["channel_id"])
        if parent["type"] not in (0, 5):
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        self._check_denied(parent)
        body = request[JSON_KEY] or {}
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise form_error("name", "Must be between 1 and 100 in length.")
        starter = None
        if "message_id" in request.match_info:
            starter = self._visible_message(int(parent["id"]), request.match_info["message_id"])
            if starter.thread_id is not None:
                raise ApiError(400, 160004, "A thread has already been created for this message")
        thread_id = starter.id if starter else self.objects.snowflake()  # a message's thread shares its id
        thread = self.objects.thread(thread_id, parent, name, 11 if starter else int(body.get("type", 12)), body)
        if starter is not None:
            starter.thread_id, starter.flags = thread_id, starter.flags | 32  # HAS_THREAD
        receivers = self.gateway.receivers(int(thread["guild_id"]))
        if receivers and receivers[-1].intents & 1:  # GUILDS intent
            self.gateway.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return json_response(thread, 201)

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel(request.match_info["channel_id"])
        return _no_content()

    async def _cdn(self, request: web.Request) -> web.Response:
        """Serves attachment URLs (Discord's CDN) so a bot can download what it uploaded."""
        attachment = self._attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None:
            raise web.HTTPNotFound()
        content_type = mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
        return web.Response(body=attachment.data, headers={"Content-Type": content_type})

    # --- message state -----------------------------------------------------------------------------

    def _new_message(self, channel_id: int, guild_id: int | None, state: InteractionState | None,
                     original: bool = False) -> StoredMessage:
        if state is None:
            return StoredMessage(self.objects.snowflake(), channel_id, guild_id)
        meta = {"id": str(state.id), "type": 2, "user": self.objects.user(state.user_id), "name": state.name,
                "command_type": 1,
                "authorizing_integration_owners": state.payload["authorizing_integration_owners"]}
        return StoredMessage(self.objects.snowflake(), channel_id, guild_id, token=state.token,
                             interaction_id=state.id, is_original=original, interaction_metadata=meta)

    def _apply(self, message: StoredMessage, payload: dict[str, Any], uploads: list[Attachment], *,
               creating: bool) -> None:
        new = apply_message(message, payload, uploads, creating=creating, new_id=self.objects.snowflake)
        self._attachments.update((a.id, a) for a in new)
        self._record(message, "create" if creating else "edit", payload, new)

    def _record(self, message: StoredMessage, kind: str, payload: dict[str, Any], files: list[Attachment]) -> None:
        self.messages.setdefault(message.id, message)
        op = MessageOp(kind, message.id, payload, files, time.monotonic())
        message.history.append(op)
        self.message_ops.append(op)

