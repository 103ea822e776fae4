"""`FakeSlack`: Slack's Web API, file uploads, response_urls and Socket Mode on 127.0.0.1, for the real SDKs.

Why a server and not mocks: the bot's Slack adapter is only as right as its use of slack_sdk and bolt, whose
behaviour (JSON vs form encoding, 429 handling and retry handlers, the three-step `files_upload_v2`, Socket Mode
acks and reconnects, bolt's lazy `auth.test`) lives in their HTTP and WebSocket code. Pointing the unmodified
libraries at this server exercises all of it:

    client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
    app = AsyncApp(client=client); handler = AsyncSocketModeHandler(app, fake.app_token)

Answers follow Slack's wire formats (HTTP 200 `{"ok": false, "error": …}` for API errors, 429 + `Retry-After`
for rate limits, `ok` as text/html from response_urls, `OK - <n>` as text/plain from upload URLs), and the
rules bots trip over are enforced: channel membership, 4,000 characters per `chat.update`, 40,000 per post,
block limits (markdown blocks: 12,000 characters per payload), `block_mismatch` when an edit swaps a markdown
message for another kind or back, 5 uses per response_url, optionally the documented rate-limit tiers.
Native streaming (`chat.startStream` / `appendStream` / `stopStream`) is refused by default, as for an app
without Slack's AI-app feature and its `assistant:write` scope (`allow_streaming` turns both on; `grant_scope` and
`refuse_streaming` make a workspace that grants the scope yet refuses); a stream's message exists from its start,
shows each appended text (`Message.history`), expires (`expire_stream`, or 5 minutes after its start) and refuses
`chat.update` while it streams (`streaming_state_conflict`).
Faults are scripted per method (`fail`: an API error, an outage's HTTP 5xx, or the connection dropped
unanswered; `rate_limit`: 429; the vocabulary shared by every fake is in `base.py`). Everything received is
recorded for assertions (`requests`, `messages`, `ephemerals`, `responses`, `uploads`, `acks`).
"""

from __future__ import annotations

import builtins
import json
import math
import mimetypes
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .base import LocalServer
from .slack_socket import (
    SentEnvelope,
    SocketModeControls,
    SocketModeHub,
    block_actions_payload,
    event_callback_payload,
    interactive_form,
    signed_headers,
    slash_command_form,
    slash_command_payload,
)

__all__ = ["FakeSlack", "Message", "RecordedRequest", "SentEnvelope", "Upload", "event_callback_payload",
           "interactive_form", "signed_headers", "slash_command_form", "slash_command_payload"]

POST_TEXT_LIMIT = 40_000
UPDATE_TEXT_LIMIT = 4_000
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60.0
JSON_FIELDS = ("blocks", "attachments", "files", "metadata")
# All markdown blocks of one payload together (docs.slack.dev/reference/block-kit/blocks/markdown-block).
MARKDOWN_BLOCKS_MAX_CHARS = 12_000
# Native streaming (docs.slack.dev/reference/methods/chat.startStream, .appendStream, .stopStream).
STREAM_TEXT_LIMIT = 12_000  # markdown_text per call
STREAM_LIFETIME_S = 300.0  # a stream leaves the streaming state about 5 minutes after it started
STREAMING_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
DEFAULT_STREAMING_REFUSAL = "feature_not_enabled"  # an app without Slack's AI-app feature
# Per-workspace tiers (calls per minute) of the methods the bot uses, as enforced by `enforce_tiers`
# (docs.slack.dev/apis/web-api/rate-limits and each method's page). chat.update's own number is a parameter.
METHOD_TIERS = {
    "chat.startStream": 20,  # Tier 2
    "chat.stopStream": 20,  # Tier 2
    "chat.appendStream": 100,  # Tier 4
    "chat.delete": 50,  # Tier 3
    "chat.postEphemeral": 100,  # Tier 4
    "files.getUploadURLExternal": 100,  # Tier 4
    "files.completeUploadExternal": 100,  # Tier 4
}
# Methods that create a message in a channel: "one message per second per channel", with short bursts.
POSTING_METHODS = ("chat.postMessage", "chat.startStream")
SERVER_ERRORS = {500: "internal_error", 502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}
MAGIC_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


# --- records -------------------------------------------------------------------------------------------

@dataclass
class RecordedRequest:
    """One request as the fake saw it (Web API methods, plus `upload` and `response_url` posts)."""

    method: str  # "chat.postMessage", ..., or "upload" / "response_url"
    params: dict[str, Any]  # query + form/JSON body; `blocks`/`attachments`/`files` JSON strings decoded
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    content_type: str
    status: int = 0
    response: dict[str, Any] = field(default_factory=dict)  # JSON answer ({"text": …} for text answers)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.response.get("ok", True) is True

    @property
    def error(self) -> str | None:
        return self.response.get("error")


@dataclass
class Message:
    """A message in a channel, as the fake holds it; `history` is its text over every edit, first included."""

    channel: str
    ts: str
    text: str
    user: str
    bot_id: str | None
    posted_at: float  # time.monotonic()
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None  # set on replies, and on a parent once it has replies (== ts)
    files: list[str] = field(default_factory=list)  # file ids shared with this message
    history: list[str] = field(default_factory=list)
    edit_times: list[float] = field(default_factory=list)
    markdown_history: list[str | None] = field(default_factory=list)  # per post/edit, as `markdown` read then
    buttons_history: list[dict[str, str]] = field(default_factory=list)  # per post/edit, as `buttons` read then
    streaming: bool = False  # started by chat.startStream and not yet stopped or expired
    stream_started_at: float | None = None
    stream_history: list[tuple[float, str]] = field(default_factory=list)  # (when, text shown) per stream call

    @property
    def markdown(self) -> str | None:
        """The text of the message's markdown blocks (joined by blank lines), or None if it has none."""
        return markdown_text(self.blocks)

    @property
    def buttons(self) -> dict[str, str]:
        """The buttons the message shows now: action_id → value."""
        return {str(button["action_id"]): str(button.get("value")) for _, button in button_elements(self.blocks)}

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def as_json(self, team_id: str, app_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {"user": self.user, "type": "message", "ts": self.ts, "text": self.text,
                                "team": team_id}
        if self.bot_id:
            data.update(bot_id=self.bot_id, app_id=app_id)
        if self.blocks is not None:
            data["blocks"] = self.blocks
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        return data


@dataclass
class Upload:
    """A file from `files.getUploadURLExternal` through the byte upload to `files.completeUploadExternal`."""

    file_id: str
    filename: str
    length: int  # as declared to getUploadURLExternal
    upload_url: str
    created_at: float
    alt_txt: str | None = None
    title: str | None = None
    uploaded_at: float | None = None
    upload_content_type: str | None = None  # of the byte upload (slack_sdk: application/octet-stream)
    completed: bool = False
    completed_at: float | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    message_ts: str | None = None  # the file message the share created
    bytes: builtins.bytes = b""

    @property
    def mimetype(self) -> str:
        for magic, mimetype in MAGIC_TYPES:
            if self.bytes.startswith(magic):
                return mimetype
        if self.bytes[:4] == b"RIFF" and self.bytes[8:12] == b"WEBP":
            return "image/webp"
        return mimetypes.guess_type(self.filename)[0] or "application/octet-stream"


class ApiError(Exception):
    """Answered as HTTP 200 `{"ok": false, "error": error, **extra}`, as Slack does."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error, self.extra = error, extra


@dataclass
class _Fault:
    error: str
    remaining: int
    status: int = 200  # 429: rate limited; ≥ 500: a server error, answered with this HTTP status
    retry_after: int = 0  # for a 429
    drop: bool = False  # the connection is closed without an answer
    when: Callable[[dict[str, Any]], bool] | None = None  # only calls whose params match count


class _Window:
    """Sliding-window limiter: at most `limit` accepted calls in any `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.times: deque[float] = deque()

    def admit(self, now: float) -> int | None:
        """None if admitted (and counted), else the Retry-After seconds until a slot frees (min 1)."""
        retry_after = self.retry_after(now)
        if retry_after is None:
            self.times.append(now)
        return retry_after

    def retry_after(self, now: float) -> int | None:
        """None if a call now would be admitted (nothing is counted), else the seconds until a slot frees."""
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return max(1, math.ceil(self.times[0] + self.window - now))
        return None


def markdown_text(blocks: list[dict[str, Any]] | None) -> str | None:
    """The text of the `markdown` blocks among `blocks` (joined by blank lines), or None if there are none."""
    texts = [str(block.get("text")) for block in blocks or [] if block.get("type") == "markdown"]
    return "\n\n".join(texts) if texts else None


def button_elements(blocks: list[dict[str, Any]] | None) -> list[tuple[str, dict[str, Any]]]:
    """The button elements of the `actions` blocks among `blocks`, each with its block's id."""
    return [(str(block.get("block_id", "")), element) for block in blocks or [] if block.get("type") == "actions"
            for element in block.get("elements") or [] if element.get("type") == "button"]


def _check_blocks(blocks: Any) -> list[dict[str, Any]] | None:
    """Blocks as Slack validates them (the limits bots hit: 50 blocks, 3,000 characters per section text,
    12,000 for all markdown blocks of a payload together)."""
    if blocks is None:
        return None
    if not isinstance(blocks, list):
        raise ApiError("invalid_blocks_format")
    errors: list[str] = []
    if len(blocks) > 50:
        errors.append("no more than 50 items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"missing required field: type [json-pointer:/blocks/{i}]")
            continue
        text = block.get("text")
        if not isinstance(text, dict):
            text = {}
        if block["type"] == "section":
            if len(str(text.get("text", ""))) > 3000:
                errors.append(f"must be less than 3001 characters [json-pointer:/blocks/{i}/text/text]")
            if len(block.get("fields") or []) > 10:
                errors.append(f"no more than 10 items allowed [json-pointer:/blocks/{i}/fields]")
        elif block["type"] == "header" and len(str(text.get("text", ""))) > 150:
            errors.append(f"must be less than 151 characters [json-pointer:/blocks/{i}/text/text]")
        elif block["type"] == "context" and len(block.get("elements") or []) > 10:
            errors.append(f"no more than 10 items allowed [json-pointer:/blocks/{i}/elements]")
        elif block["type"] == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > 25:
                errors.append(f"must provide 1 to 25 items [json-pointer:/blocks/{i}/elements]")
            for j, element in enumerate(elements):
                label = element.get("text") if isinstance(element, dict) else None
                if not isinstance(label, dict) or not 0 < len(str(label.get("text", ""))) <= 75:
                    errors.append(f"must be 1 to 75 characters [json-pointer:/blocks/{i}/elements/{j}/text]")
                elif len(str(element.get("value", ""))) > 2000 or not element.get("action_id"):
                    errors.append(f"invalid button [json-pointer:/blocks/{i}/elements/{j}]")
        elif block["type"] == "markdown":
            if not isinstance(block.get("text"), str) or not block["text"]:
                errors.append(f"missing required field: text [json-pointer:/blocks/{i}/text]")
            elif len(block["text"]) > MARKDOWN_BLOCKS_MAX_CHARS:
                errors.append(f"must be less than {MARKDOWN_BLOCKS_MAX_CHARS + 1} characters "
                              f"[json-pointer:/blocks/{i}/text]")
    if errors:
        raise ApiError("invalid_blocks", errors=errors,
                       response_metadata={"messages": [f"[ERROR] {e}" for e in errors]})
    markdown_chars = sum(len(block["text"]) for block in blocks if block["type"] == "markdown")
    if markdown_chars > MARKDOWN_BLOCKS_MAX_CHARS:
        raise ApiError("msg_blocks_too_long")  # what Slack answers past the payload's markdown total
    return blocks


# --- the server ----------------------------------------------------------------------------------------

class FakeSlack(LocalServer, SocketModeControls):  # LocalServer first: its wait_until is the real one
    """A Slack workspace with one bot. See the module docstring; tests read the recorded state."""

    def __init__(self, bot_token: str = "xoxb-test", app_token: str = "xapp-test", team_id: str = "T0TEAM",
                 bot_user_id: str = "U0BOT", bot_id: str = "B0BOT", *, app_id: str = "A0APP",
                 team_name: str = "Fake Team", team_domain: str = "fake", bot_name: str = "replicate-bot",
                 verification_token: str = "fake-verification-token") -> None:
        super().__init__()
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.team_name, self.team_domain = team_id, team_name, team_domain
        self.bot_user_id, self.bot_id, self.bot_name, self.app_id = bot_user_id, bot_id, bot_name, app_id
        self.verification_token = verification_token
        self.scopes = "app_mentions:read,chat:write,commands,files:write"  # X-OAuth-Scopes (bolt reads it)
        self.requests: list[RecordedRequest] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []  # {"url", "body", "at"} per accepted response_url POST
        self.uploads: dict[str, Upload] = {}
        self.deleted: list[Message] = []  # messages removed with chat.delete, in order
        self.socket = SocketModeHub(app_id=app_id, changed=self._changed)
        self._not_member: set[str] = set()
        self._missing: set[str] = set()
        self._faults: dict[str, list[_Fault]] = {}
        self._update_window: _Window | None = None
        self._method_windows: dict[str, _Window] = {}
        self.streaming_refusal: str | None = DEFAULT_STREAMING_REFUSAL
        self._post_windows: dict[str, _Window] = {}
        self._post_limit: tuple[int, float] | None = None
        self._response_urls: dict[str, dict[str, Any]] = {}  # path → {"created": t, "uses": n}
        self._ts_counter = 0
        self._file_counter = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "api.test": lambda params: {"args": params},
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.delete": self._delete,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    # --- lifecycle ---------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/commands/{team_id}/{n}/{secret}", self._response_url)
        app.router.add_get("/socket-mode", self.socket.handle)
        return app

    async def _before_close(self) -> None:
        """Close Socket Mode sockets (1001, going away); the HTTP server stops after."""
        await self.socket.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.origin + "/api/"

    # --- test controls -----------------------------------------------------------------------------

    def set_not_member(self, channel_id: str) -> None:
        """Posting in this channel answers `not_in_channel` (the bot was never invited) until `set_member`."""
        self._not_member.add(channel_id)

    def set_member(self, channel_id: str) -> None:
        self._not_member.discard(channel_id)

    def set_missing(self, channel_id: str) -> None:
        """This channel does not exist (or is private and hidden from the bot): `channel_not_found`."""
        self._missing.add(channel_id)

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1, *,
                   when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """The next `times` calls of `method` (whose params satisfy `when`, if given) answer 429 +
        `Retry-After`, body `{"ok": false, "error": "ratelimited"}`. `method` may also be "upload" (byte uploads:
        text/plain `ratelimited`) or "response_url" (text/html `rate_limited`)."""
        self._faults.setdefault(method, []).append(
            _Fault("ratelimited", times, status=429, retry_after=retry_after, when=when))

    def fail(self, method: str, error: str | None = None, times: int = 1, *, status: int = 200,
             drop: bool = False, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """The next `times` calls of `method` (whose params satisfy `when`, if given) fail; nothing they asked
        for happens. Status 200: Slack's API error `{"ok": false, "error": error}`. A 5xx: an outage, with the
        same JSON (`error` defaults to Slack's name for the status, e.g. `internal_error` for 500).
        `drop=True`: the connection is closed without an answer. For "upload" the byte upload answers HTTP
        `status` (500 unless a 5xx is given) with text `error`; for "response_url", HTTP 404 (or the 5xx)
        `error` (e.g. "expired_url")."""
        if status != 200 and status < 500:
            raise ValueError("a Slack API error is HTTP 200 or an outage's 5xx; a 429 is `rate_limit`")
        if error == "ratelimited":
            raise ValueError("a rate limit is `rate_limit(method, …)`")
        if drop and method in ("upload", "response_url"):
            raise ValueError("only Web API calls can be dropped")
        if error is None:
            if status == 200 and not drop:
                raise ValueError("an API error needs its `error` code")
            error = SERVER_ERRORS.get(status, "internal_error")
        self._faults.setdefault(method, []).append(_Fault(error, times, status=status, drop=drop, when=when))

    def enforce_tiers(self, chat_update_per_minute: int = 50, post_message_per_second_per_channel: float = 1.0,
                      *, post_message_burst: int = 1) -> None:
        """Slack's documented limits: `chat.update` (Tier 3) and every method in `METHOD_TIERS` per workspace in a
        sliding minute, and messages created per channel (`chat.postMessage`, `chat.startStream`): at most
        `post_message_burst` in any `post_message_burst / post_message_per_second_per_channel` seconds (Slack
        "allows bursts over that limit for short periods" without saying how long; 1 = no burst at all). Over a
        limit: 429 with Retry-After = seconds until a slot frees."""
        self._update_window = _Window(chat_update_per_minute, 60.0)
        self._method_windows = {method: _Window(limit, 60.0) for method, limit in METHOD_TIERS.items()}
        window = max(1.0, post_message_burst / post_message_per_second_per_channel)
        self._post_limit = (max(1, round(post_message_per_second_per_channel * window)), window)
        self._post_windows = {}

    def allow_streaming(self) -> None:
        """Native streaming works, as for an app with Slack's AI-app feature turned on (its `assistant:write`
        scope granted)."""
        self.streaming_refusal = None
        self.grant_scope("assistant:write")

    def grant_scope(self, scope: str) -> None:
        """`scope` joins the token's scopes (X-OAuth-Scopes, read from auth.test at start-up)."""
        if scope not in self.scopes.split(","):
            self.scopes += "," + scope

    def refuse_streaming(self, error: str = DEFAULT_STREAMING_REFUSAL) -> None:
        """Every streaming call answers `error` (e.g. `feature_not_enabled`, `unknown_method`,
        `messages_tab_disabled`), as a workspace without the feature does."""
        self.streaming_refusal = error

    def expire_stream(self, message: Message) -> None:
        """The stream leaves the streaming state now, as Slack's do ~5 minutes after they start: its text stays,
        and appends and stops answer `message_not_in_streaming_state`."""
        message.streaming = False
        self._changed()

    def streams(self) -> list[Message]:
        """Messages created by chat.startStream (deleted ones excluded), oldest first."""
        return sorted((m for m in self.messages.values() if m.stream_started_at is not None), key=lambda m: m.ts)

    def new_response_url(self) -> str:
        """A fresh response_url (`{origin}/commands/{team}/{n}/{secret}`), good for 5 posts in 30 minutes."""
        n = len(self._response_urls) + 1
        path = f"/commands/{self.team_id}/{n}/{secrets.token_urlsafe(18)}"
        self._response_urls[path] = {"created": time.monotonic(), "uses": 0}
        return self.origin + path

    def press(self, message: Message, action_id: str, user_id: str = "U0USER") -> dict[str, Any]:
        """The `block_actions` payload of `user_id` pressing the button `action_id` that `message` shows now (an
        AssertionError if it shows none), with a fresh response_url; deliver it with `send_interactive` or, in
        HTTP mode, POST `interactive_form(payload)`."""
        found = [(block_id, button) for block_id, button in button_elements(message.blocks)
                 if button.get("action_id") == action_id]
        assert found, f"message {message.ts} shows no {action_id!r} button (it shows {message.buttons})"
        block_id, button = found[0]
        return block_actions_payload(
            message=message.as_json(self.team_id, self.app_id), channel_id=message.channel, button=button,
            block_id=block_id, user_id=user_id, team_id=self.team_id, team_domain=self.team_domain,
            api_app_id=self.app_id, response_url=self.new_response_url(), token=self.verification_token)

    def press_ephemeral(self, ephemeral: dict[str, Any], action_id: str, user_id: str | None = None) -> dict[str, Any]:
        """The `block_actions` payload of the ephemeral message's user (or `user_id`) pressing its button
        `action_id`. An ephemeral message's press carries no `message` (Slack keeps no copy of it): its container
        says `is_ephemeral` and gives only its `message_ts` and channel."""
        found = [(block_id, button) for block_id, button in button_elements(ephemeral.get("blocks"))
                 if button.get("action_id") == action_id]
        assert found, f"the ephemeral message shows no {action_id!r} button"
        block_id, button = found[0]
        as_message = {"ts": ephemeral["message_ts"], "type": "message", "text": ephemeral.get("text") or ""}
        payload = block_actions_payload(
            message=as_message, channel_id=ephemeral["channel"], button=button, block_id=block_id,
            user_id=user_id or ephemeral["user"], team_id=self.team_id, team_domain=self.team_domain,
            api_app_id=self.app_id, response_url=self.new_response_url(), token=self.verification_token)
        payload.pop("message")
        payload["container"]["is_ephemeral"] = True
        return payload

    # --- reading what happened ---------------------------------------------------------------------

    def requests_to(self, method: str) -> list[RecordedRequest]:
        """The requests for Web API `method` ("upload" and "response_url" for those posts), in order."""
        return [c for c in self.requests if c.method == method]

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """Replies in the thread under `thread_ts`, oldest first (the parent itself is not included)."""
        replies = [m for m in self.messages.values()
                   if m.channel == channel and m.thread_ts == thread_ts and m.ts != thread_ts]
        return sorted(replies, key=lambda m: m.ts)

    def channel_messages(self, channel: str) -> list[Message]:
        """Top-level messages in `channel` (thread replies excluded), oldest first."""
        return sorted((m for m in self.messages.values() if m.channel == channel and not m.is_reply),
                      key=lambda m: m.ts)

    def response_url_posts(self, url: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.responses if r["url"] == url]

    def _root_author(self, channel: str, thread_ts: str) -> str | None:
        root = self.messages.get((channel, thread_ts))
        return root.user if root is not None else None

    def _remember_event(self, event: dict[str, Any]) -> None:
        """A user's message or app_mention becomes a `Message`, so the bot can thread under it."""
        if event.get("type") in ("message", "app_mention") and event.get("channel") and event.get("ts"):
            key = (event["channel"], event["ts"])
            if key not in self.messages:
                self.messages[key] = Message(event["channel"], event["ts"], event.get("text", ""),
                                             event.get("user", ""), event.get("bot_id"), time.monotonic(),
                                             thread_ts=event.get("thread_ts"), history=[event.get("text", "")])

    # --- waiting -----------------------------------------------------------------------------------

    def _describe(self) -> str:
        recent = ", ".join(f"{c.method}→{c.status}{'/' + c.error if c.error else ''}" for c in self.requests[-8:])
        hub = self.socket
        return (f"requests={len(self.requests)} (last: {recent or 'none'}); sockets opened={len(hub.connections)} "
                f"ready={hub.ready_count} open={len(hub.open_connections())}; envelopes={len(hub.envelopes)} "
                f"acks={len(hub.acks)}; client protocol errors={hub.client_errors!r}")

    # --- HTTP plumbing -----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as error:  # a bug in the fake: make it visible, answer like a broken Slack
            self._fake_error(f"{request.method} {request.path}", error)
            return web.json_response({"ok": False, "error": "fatal_error"}, status=500)

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.text())
                except ValueError:
                    raise ApiError("invalid_json") from None
                if not isinstance(body, dict):
                    raise ApiError("json_not_object")
                params.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                for key, value in (await request.post()).items():
                    params[key] = value.file.read() if isinstance(value, web.FileField) else value
            else:
                await request.read()
        for key in JSON_FIELDS:
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    pass  # left as a string: the method answers invalid_*_format
        return params

    def _record(self, method: str, request: web.Request, params: dict[str, Any]) -> RecordedRequest:
        call = RecordedRequest(method, params, dict(request.headers), time.monotonic(), request.content_type)
        self.requests.append(call)
        return call

    def _take_fault(self, method: str, params: dict[str, Any] | None = None) -> _Fault | None:
        faults = self._faults.get(method) or []
        fault = next((f for f in faults if f.when is None or f.when(params or {})), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            faults.remove(fault)
        return fault

    def _answer(self, call: RecordedRequest, body: dict[str, Any], status: int = 200,
                headers: Mapping[str, str] | None = None) -> web.Response:
        call.status, call.response = status, body
        self._changed()
        return web.json_response(body, status=status, headers={"X-OAuth-Scopes": self.scopes, **(headers or {})})

    @staticmethod
    def _ratelimited(retry_after: int) -> tuple[dict[str, Any], int, dict[str, str]]:
        return {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(retry_after)}

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await self._read_params(request)
        except ApiError as error:
            call = self._record(method, request, {})
            return self._answer(call, {"ok": False, "error": error.error})
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else str(params.pop("token", "") or "")
        params.pop("token", None)
        call = self._record(method, request, params)
        if not token:
            return self._answer(call, {"ok": False, "error": "not_authed"})
        if token not in (self.bot_token, self.app_token):
            return self._answer(call, {"ok": False, "error": "invalid_auth"})
        if (token == self.app_token) != (method == "apps.connections.open"):
            return self._answer(call, {"ok": False, "error": "not_allowed_token_type"})
        fault = self._take_fault(method, params)
        if fault is not None and fault.drop:
            call.status, call.response = 0, {"dropped": True}
            self._changed()
            assert request.transport is not None
            request.transport.abort()  # the client sees the server disconnect mid-request
            return web.Response()
        if fault is not None and fault.status == 429:
            return self._answer(call, *self._ratelimited(fault.retry_after))
        if fault is not None:
            return self._answer(call, {"ok": False, "error": fault.error}, fault.status)
        if method in STREAMING_METHODS and self.streaming_refusal is not None:
            return self._answer(call, {"ok": False, "error": self.streaming_refusal})
        retry_after = self._tier_check(method, params)
        if retry_after is not None:
            return self._answer(call, *self._ratelimited(retry_after))
        handler = self._handlers.get(method)
        if handler is None:
            return self._answer(call, {"ok": False, "error": "unknown_method", "req_method": method})
        try:
            return self._answer(call, {"ok": True, **handler(params)})
        except ApiError as error:
            return self._answer(call, {"ok": False, "error": error.error, **error.extra})

    def _tier_check(self, method: str, params: dict[str, Any]) -> int | None:
        """None if the call is within every limit that applies to it (and then it counts in each), else the
        Retry-After of the first limit it exceeds (a refused call counts in none)."""
        now = time.monotonic()
        windows = []
        if method == "chat.update" and self._update_window is not None:
            windows.append(self._update_window)
        if method in self._method_windows:
            windows.append(self._method_windows[method])
        if method in POSTING_METHODS and self._post_limit is not None:
            channel = str(params.get("channel", ""))
            windows.append(self._post_windows.setdefault(channel, _Window(*self._post_limit)))
        for window in windows:
            retry_after = window.retry_after(now)
            if retry_after is not None:
                return retry_after
        for window in windows:
            window.admit(now)
        return None

    # --- Web API methods (sync: each call's state change is atomic) ----------------------------------

    def _next_ts(self) -> str:
        self._ts_counter += 1
        micros = 1_700_000_000_000_000 + self._ts_counter * 100
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _check_channel(self, channel: Any) -> str:
        if not channel or not isinstance(channel, str) or channel in self._missing:
            raise ApiError("channel_not_found")
        if channel in self._not_member:
            raise ApiError("not_in_channel")
        return channel

    def _thread_root(self, channel: str, thread_ts: Any) -> str | None:
        """A reply to a reply lands in the same thread, as in Slack; the parent is marked as a thread."""
        if not thread_ts:
            return None
        root = str(thread_ts)
        parent = self.messages.get((channel, root))
        if parent is not None:
            if parent.is_reply:
                return parent.thread_ts
            parent.thread_ts = parent.ts
        return root

    def _message_content(self, params: dict[str, Any], limit: int) -> tuple[str | None, list[Any] | None]:
        text = params.get("text")
        text = None if text is None else str(text)
        blocks = _check_blocks(params.get("blocks"))
        if not text and not blocks and not params.get("attachments"):
            raise ApiError("no_text")
        if text is not None and len(text) > limit:
            raise ApiError("msg_too_long")
        return text, blocks

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"https://{self.team_domain}.slack.com/", "team": self.team_name, "user": self.bot_name,
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.socket.issue_url(f"ws://127.0.0.1:{self.port}")}

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        text, blocks = self._message_content(params, POST_TEXT_LIMIT)
        message = Message(channel, self._next_ts(), text or "", self.bot_user_id, self.bot_id, time.monotonic(),
                          blocks=blocks, thread_ts=self._thread_root(channel, params.get("thread_ts")),
                          history=[text or ""], markdown_history=[markdown_text(blocks)])
        message.buttons_history.append(message.buttons)
        self.messages[(channel, message.ts)] = message
        return {"channel": channel, "ts": message.ts, "message": message.as_json(self.team_id, self.app_id)}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self.messages.get((channel, str(params.get("ts", ""))))
        if message is None:
            raise ApiError("message_not_found")
        if message.user != self.bot_user_id:
            raise ApiError("cant_update_message")
        if message.streaming:
            raise ApiError("streaming_state_conflict")
        text, blocks = self._message_content(params, UPDATE_TEXT_LIMIT)
        replaces_blocks = blocks is not None or "blocks" in params  # without `blocks`, Slack keeps the old ones
        if replaces_blocks and (markdown_text(message.blocks) is None) != (markdown_text(blocks) is None):
            # "Rich-text blocks cannot be replaced with non-rich-text blocks" (chat.update). Whether a markdown
            # block counts as rich text is not documented, so both directions are refused here.
            raise ApiError("block_mismatch")
        if text is not None:
            message.text = text
        if replaces_blocks:
            message.blocks = blocks
        message.history.append(message.text)
        message.markdown_history.append(message.markdown)
        message.buttons_history.append(message.buttons)
        message.edit_times.append(time.monotonic())
        data = message.as_json(self.team_id, self.app_id)
        return {"channel": channel, "ts": message.ts, "text": message.text, "message": data}

    def _stream_text(self, params: dict[str, Any], *, required: bool) -> str:
        """What a streaming call adds: `markdown_text` and the text of `markdown_text` chunks (slack_sdk's
        `AsyncChatStream` sends `chunks`), each at most 12,000 characters."""
        pieces = [params["markdown_text"]] if isinstance(params.get("markdown_text"), str) else []
        chunks = params.get("chunks")
        if chunks is not None:
            if not isinstance(chunks, list) or not all(isinstance(c, dict) and c.get("type") for c in chunks):
                raise ApiError("invalid_chunks")
            pieces += [str(c.get("text", "")) for c in chunks if c.get("type") == "markdown_text"]
        if any(len(piece) > STREAM_TEXT_LIMIT for piece in pieces):
            raise ApiError("msg_too_long")
        if required and not "".join(pieces):
            raise ApiError("no_text")
        return "".join(pieces)

    def _streaming_message(self, params: dict[str, Any]) -> Message:
        channel = self._check_channel(params.get("channel"))
        message = self.messages.get((channel, str(params.get("ts", ""))))
        if message is None:
            raise ApiError("message_not_found")
        if message.streaming and message.stream_started_at is not None and \
                time.monotonic() - message.stream_started_at > STREAM_LIFETIME_S:
            message.streaming = False
        if not message.streaming:
            raise ApiError("message_not_in_streaming_state")
        return message

    def _show_stream_text(self, message: Message, added: str) -> None:
        message.text += added
        message.blocks = [{"type": "markdown", "text": message.text}] if message.text else None
        message.history.append(message.text)
        message.markdown_history.append(message.markdown)
        message.buttons_history.append(message.buttons)
        message.stream_history.append((time.monotonic(), message.text))

    def _start_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        if not params.get("thread_ts"):
            raise ApiError("invalid_arguments")
        if not channel.startswith("D"):  # "required when streaming to channels"
            if not params.get("recipient_user_id"):
                raise ApiError("missing_recipient_user_id")
            if not params.get("recipient_team_id"):
                raise ApiError("missing_recipient_team_id")
        text = self._stream_text(params, required=False)
        now = time.monotonic()
        message = Message(channel, self._next_ts(), "", self.bot_user_id, self.bot_id, now,
                          thread_ts=self._thread_root(channel, params.get("thread_ts")), streaming=True,
                          stream_started_at=now)
        self.messages[(channel, message.ts)] = message
        self._show_stream_text(message, text)
        return {"channel": channel, "ts": message.ts}

    def _append_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming_message(params)
        self._show_stream_text(message, self._stream_text(params, required=True))
        return {"channel": message.channel, "ts": message.ts}

    def _stop_stream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming_message(params)
        extra = _check_blocks(params.get("blocks"))
        added = self._stream_text(params, required=False)
        message.streaming = False
        self._show_stream_text(message, added)
        if extra:  # "rendered at the bottom of the finalized message"
            message.blocks = [*(message.blocks or []), *extra]
            message.buttons_history[-1] = message.buttons
        return {"channel": message.channel, "ts": message.ts, "message": message.as_json(self.team_id, self.app_id)}

    def _delete(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        message = self.messages.get((channel, str(params.get("ts", ""))))
        if message is None:
            raise ApiError("message_not_found")
        if message.user != self.bot_user_id:
            raise ApiError("cant_delete_message")
        self.deleted.append(self.messages.pop((channel, message.ts)))
        return {"channel": channel, "ts": message.ts}

    def _post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._check_channel(params.get("channel"))
        if not params.get("user"):
            raise ApiError("user_not_in_channel")
        text, blocks = self._message_content(params, POST_TEXT_LIMIT)
        message_ts = self._next_ts()
        self.ephemerals.append({"channel": channel, "user": params["user"], "text": text, "blocks": blocks,
                                "thread_ts": params.get("thread_ts"), "message_ts": message_ts,
                                "at": time.monotonic()})
        return {"message_ts": message_ts}

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        length: Any = params.get("length")  # as the client sent it: what `int()` refuses, Slack refuses
        try:
            size = int(length)
        except (TypeError, ValueError):
            size = 0
        if not filename or size <= 0:
            raise ApiError("invalid_arguments")
        self._file_counter += 1
        file_id = f"F0FAKE{self._file_counter:05d}"
        url = f"{self.origin}/upload/{file_id}"
        self.uploads[file_id] = Upload(file_id, str(filename), size, url, time.monotonic(),
                                       alt_txt=params.get("alt_txt"))
        return {"upload_url": url, "file_id": file_id}

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) and f.get("id") for f in files):
            raise ApiError("invalid_arguments")
        uploads = [self.uploads.get(str(f["id"])) for f in files]
        if any(u is None or u.uploaded_at is None or u.completed for u in uploads):
            raise ApiError("file_not_found")
        channels = [c for c in str(params.get("channels") or "").split(",") if c]
        channel_id = params.get("channel_id") or (channels[0] if channels else None)
        for channel in ([channel_id] if channel_id else []) + channels:
            self._check_channel(channel)
        thread_ts = self._thread_root(channel_id, params.get("thread_ts")) if channel_id else None
        comment = params.get("initial_comment")
        message_ts = None
        if channel_id:
            message = Message(channel_id, self._next_ts(), str(comment or ""), self.bot_user_id, self.bot_id,
                              time.monotonic(), thread_ts=thread_ts, files=[str(f["id"]) for f in files],
                              history=[str(comment or "")])
            self.messages[(channel_id, message.ts)] = message
            message_ts = message.ts
        now = time.monotonic()
        result = []
        for spec, upload in zip(files, uploads, strict=True):
            assert upload is not None
            upload.title = str(spec.get("title") or upload.filename)
            upload.completed, upload.completed_at = True, now
            upload.channel_id, upload.thread_ts, upload.initial_comment = channel_id, thread_ts, comment
            upload.message_ts = message_ts
            result.append(self._file_json(upload))
        return {"files": result}

    def _file_json(self, upload: Upload) -> dict[str, Any]:
        """A file object as completeUploadExternal returns it: sharing is asynchronous on Slack, so
        `shares`/`channels` are still empty here (don't take the message ts from them)."""
        name, mimetype = upload.filename, upload.mimetype
        filetype = (mimetypes.guess_extension(mimetype) or ".bin").lstrip(".")
        private = f"{self.origin}/files-pri/{self.team_id}-{upload.file_id}/{name}"
        data = {"id": upload.file_id, "created": int(time.time()), "timestamp": int(time.time()), "name": name,
                "title": upload.title, "mimetype": mimetype, "filetype": filetype, "pretty_type": filetype.upper(),
                "user": self.bot_user_id, "user_team": self.team_id, "editable": False, "size": len(upload.bytes),
                "mode": "hosted", "is_external": False, "external_type": "", "is_public": False,
                "public_url_shared": False, "display_as_bot": False, "username": "", "url_private": private,
                "url_private_download": private.replace("/files-pri/", "/files-pri/download/"),
                "permalink": f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{upload.file_id}/{name}",
                "comments_count": 0, "is_starred": False, "shares": {}, "channels": [], "groups": [], "ims": [],
                "has_more_shares": False, "has_rich_preview": False, "file_access": "visible"}
        if upload.alt_txt:
            data["alt_txt"] = upload.alt_txt
        return data

    # --- byte uploads and response_urls --------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL: slack_sdk POSTs the raw bytes (application/octet-stream); a multipart form with a
        file part is accepted too. Slack answers 200 `OK - <length>` as text/plain."""
        file_id = request.match_info["file_id"]
        upload = self.uploads.get(file_id)
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if isinstance(v, web.FileField)), None)
            data = part.file.read() if part is not None else b""
        else:
            data = await request.read()
        call = self._record("upload", request, {"file_id": file_id, "length": len(data)})
        fault = self._take_fault("upload", call.params)
        if upload is None or upload.completed:
            status, text = 404, "Not Found"
        elif fault is not None:
            status, text = (fault.status if fault.status != 200 else 500), fault.error
        else:
            upload.bytes, upload.uploaded_at = data, time.monotonic()
            upload.upload_content_type = request.content_type
            status, text = 200, f"OK - {len(data)}"
        call.status, call.response = status, {"text": text}
        self._changed()
        headers = {"Retry-After": str(fault.retry_after)} if status == 429 and fault else None
        return web.Response(status=status, text=text, content_type="text/plain", headers=headers)

    async def _response_url(self, request: web.Request) -> web.Response:
        """A response_url: JSON in, `ok` out (text/html); 5 uses, then 404 `used_url`."""
        raw = await request.text()
        try:
            if request.content_type == "application/x-www-form-urlencoded":
                payload = (await request.post()).get("payload", "")
                assert isinstance(payload, str)  # a url-encoded form holds only text
                body = json.loads(payload)
            else:
                body = json.loads(raw)
        except ValueError:
            body = None
        call = self._record("response_url", request, body if isinstance(body, dict) else {"raw": raw})
        state = self._response_urls.get(request.path)
        fault = self._take_fault("response_url", call.params)
        headers = None
        if state is None:
            status, text = 404, "invalid_url"
        elif fault is not None and fault.status == 429:
            status, text, headers = 429, "rate_limited", {"Retry-After": str(fault.retry_after)}
        elif fault is not None:
            status, text = (fault.status if fault.status != 200 else 404), fault.error
        elif time.monotonic() - state["created"] > RESPONSE_URL_TTL:
            status, text = 404, "expired_url"
        elif state["uses"] >= RESPONSE_URL_USES:
            status, text = 404, "used_url"
        elif not isinstance(body, dict):
            status, text = 400, "invalid_payload"
        elif not (body.get("text") or body.get("blocks") or body.get("attachments") or body.get("delete_original")):
            status, text = 400, "no_text"
        else:
            state["uses"] += 1
            self.responses.append({"url": self.origin + request.path, "body": body, "at": time.monotonic()})
            status, text = 200, "ok"
        call.status, call.response = status, {"text": text}
        self._changed()
        return web.Response(status=status, text=text, content_type="text/html", headers=headers)
