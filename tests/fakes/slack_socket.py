"""What Slack sends to apps: Socket Mode (server side), slash-command and event payloads, HTTP-mode signing.

`FakeSlack` owns a `SocketModeHub` and routes `GET /socket-mode?ticket=…` to it. The protocol is the one
`slack_sdk.socket_mode.aiohttp.SocketModeClient` (and so bolt's `AsyncSocketModeHandler`) speaks:

- `apps.connections.open` (app token) hands out `ws://…/socket-mode?ticket=…`; the client dials it.
- The server greets every connection with `{"type": "hello", …}`.
- Requests arrive as envelopes `{"envelope_id", "type", "payload", "accepts_response_payload", …}`; the app
  acknowledges each with a text frame `{"envelope_id": …, "payload"?: …}`, on whichever connection it likes.
- `{"type": "disconnect", "reason": …}` asks the client to reconnect; the client opens a new URL and closes
  the old socket itself (the server closes it shortly after anyway).
- WebSocket pings (the SDK sends `sdk-ping-pong:<time>` every `ping_interval`) are answered with pongs.
- An app may hold several connections (one per process; at most 10 per app): Slack sends each envelope to one of
  them, and redelivers an envelope that was not acknowledged, maybe to another. Tests choose the connection
  (`send_slash_command_on`, or a `connection=` index) and redeliver with `redeliver`: the same payload in a new
  envelope, an event's carrying `retry_attempt`/`retry_reason` (bolt's `X-Slack-Retry-Num`/`-Reason` headers).

In HTTP mode the same payloads are POSTed to the app, signed: `slash_command_form` and `signed_headers` build
such a request for bolt's `AsyncBoltRequest` (or an HTTP client pointed at the bot). A button press
(`block_actions_payload`) goes over Socket Mode in an `interactive` envelope, and in HTTP mode as a form whose
field `payload` holds its JSON (`interactive_form`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web


def slash_command_payload(
    *, command: str = "/ask", text: str = "", user_id: str = "U0USER", user_name: str = "alice",
    channel_id: str = "C0CHAN", channel_name: str = "general", team_id: str = "T0TEAM", team_domain: str = "fake",
    api_app_id: str = "A0APP", response_url: str = "https://hooks.slack.com/commands/T0TEAM/1/fake",
    trigger_id: str | None = None, token: str = "fake-verification-token", **extra: str,
) -> dict[str, str]:
    """A slash command's fields in Slack's order; every value is a string, as in the HTTP form body
    (`is_enterprise_install` is the string "false", not a boolean)."""
    fields = {
        "token": token, "team_id": team_id, "team_domain": team_domain, "channel_id": channel_id,
        "channel_name": channel_name, "user_id": user_id, "user_name": user_name, "command": command,
        "text": text, "api_app_id": api_app_id, "is_enterprise_install": "false", "response_url": response_url,
        "trigger_id": trigger_id or f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}",
    }
    fields.update(extra)
    return fields


def event_callback_payload(
    event: dict[str, Any], *, team_id: str = "T0TEAM", api_app_id: str = "A0APP", bot_user_id: str = "U0BOT",
    event_id: str | None = None, event_time: int | None = None, token: str = "fake-verification-token",
) -> dict[str, Any]:
    """The Events API `event_callback` body (the same in HTTP mode and inside a Socket Mode envelope)."""
    return {
        "token": token, "team_id": team_id, "context_team_id": team_id, "context_enterprise_id": None,
        "api_app_id": api_app_id, "event": event, "type": "event_callback",
        "event_id": event_id or new_event_id(), "event_time": event_time or int(time.time()),
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": bot_user_id, "is_bot": True,
                            "is_enterprise_install": False}],
        "is_ext_shared_channel": False, "event_context": "4-" + secrets.token_urlsafe(48),
    }


def block_actions_payload(
    *, message: dict[str, Any], channel_id: str, button: dict[str, Any], block_id: str, user_id: str = "U0USER",
    user_name: str = "alice", team_id: str = "T0TEAM", team_domain: str = "fake", api_app_id: str = "A0APP",
    response_url: str, trigger_id: str | None = None, token: str = "fake-verification-token",
) -> dict[str, Any]:
    """A press of `button` (a button element of `message`'s blocks) as Slack sends it
    (https://api.slack.com/reference/interaction-payloads/block-actions); `message` is the message's JSON."""
    action_ts = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": api_app_id, "token": token,
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel_id,
                      "is_ephemeral": False, **({"thread_ts": message["thread_ts"]} if "thread_ts" in message else {})},
        "trigger_id": trigger_id or f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}",
        "team": {"id": team_id, "domain": team_domain}, "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "general"}, "message": message, "state": {"values": {}},
        "response_url": response_url,
        "actions": [{"action_id": button["action_id"], "block_id": block_id, "text": button.get("text"),
                     "value": button.get("value"), "type": "button", "action_ts": action_ts,
                     **({"style": button["style"]} if "style" in button else {})}],
    }


def interactive_form(payload: dict[str, Any]) -> str:
    """An interaction as Slack POSTs it in HTTP mode: urlencoded, its JSON in the field `payload`."""
    return urlencode({"payload": json.dumps(payload)})


def slash_command_form(**fields: Any) -> str:
    """A slash command as Slack POSTs it in HTTP mode (urlencoded, Slack's field order). Takes the fields of
    `slash_command_payload` (command, text, user_id, channel_id, response_url, team_id, …); pass a
    `fake.new_response_url()` as `response_url` so `respond()` lands in the fake."""
    return urlencode(slash_command_payload(**{k: str(v) for k, v in fields.items()}))


def signed_headers(signing_secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers that make `body` pass bolt's request verification: `v0=` + hex HMAC-SHA256 of `v0:{ts}:{body}`.
    Content-Type is form-urlencoded, or JSON when the body is a JSON object (Events API callbacks)."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(signing_secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    is_json = body.lstrip().startswith("{")
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/json" if is_json else "application/x-www-form-urlencoded"}


def new_event_id() -> str:
    return "Ev" + secrets.token_hex(5).upper()


@dataclass
class SocketConnection:
    """One WebSocket the app opened; `ready_at` is when the hello went out."""

    index: int  # 1-based, in order of opening
    ticket: str
    opened_at: float  # time.monotonic()
    ws: web.WebSocketResponse = field(repr=False)
    transport: asyncio.Transport | None = field(default=None, repr=False)
    ready_at: float | None = None
    closed_at: float | None = None
    close_code: int | None = None
    closed_by_server: bool = False
    pings: int = 0
    disconnect_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


@dataclass
class SentEnvelope:
    """An envelope the fake wrote, and the ack it got (if any)."""

    envelope_id: str
    type: str  # "slash_commands", "events_api", "interactive"
    payload: dict[str, Any]
    message: dict[str, Any]  # the whole frame as sent
    connection: int  # SocketConnection.index it went out on
    sent_at: float  # time.monotonic()
    response_url: str | None = None
    ack: dict[str, Any] | None = None
    redelivery_of: str | None = None  # the envelope id of the first delivery, for a redelivery

    @property
    def ack_latency(self) -> float | None:
        """Seconds from sending to the ack arriving (Slack gives up after 3)."""
        return None if self.ack is None else self.ack["at"] - self.sent_at


class SocketModeHub:
    """Server side of Socket Mode: tickets, connections, envelopes out, acks in."""

    def __init__(self, *, app_id: str, changed: Callable[[], None], host: str = "applink-fake") -> None:
        self.app_id, self.host = app_id, host
        self._changed = changed
        self.tickets: list[str] = []  # every ticket issued by apps.connections.open, in order
        self.connections: list[SocketConnection] = []
        self.envelopes: dict[str, SentEnvelope] = {}
        self.acks: list[dict[str, Any]] = []
        self.client_errors: list[str] = []  # protocol violations by the client (non-JSON frames, acks without id, …)
        self._delayed_closes: set[asyncio.Task[None]] = set()

    # --- state -------------------------------------------------------------------------------------

    def issue_url(self, origin_ws: str) -> str:
        ticket = secrets.token_hex(16)
        self.tickets.append(ticket)
        return f"{origin_ws}/socket-mode?ticket={ticket}"

    @property
    def ready_count(self) -> int:
        return sum(1 for c in self.connections if c.ready_at is not None)

    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if c.open]

    def current(self) -> SocketConnection | None:
        """The newest open connection that has had its hello: where new envelopes go."""
        for conn in reversed(self.connections):
            if self._usable(conn):
                return conn
        return None

    def connection(self, index: int) -> SocketConnection:
        """Connection `index` (1-based, in order of opening), which must be open and greeted."""
        if not 1 <= index <= len(self.connections) or not self._usable(self.connections[index - 1]):
            raise RuntimeError(f"Socket Mode connection {index} is not open and ready "
                               f"(open: {[c.index for c in self.connections if self._usable(c)]})")
        return self.connections[index - 1]

    @staticmethod
    def _usable(conn: SocketConnection) -> bool:
        return conn.open and conn.ready_at is not None and conn.disconnect_reason is None

    # --- the socket --------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self.tickets:
            raise web.HTTPUnauthorized(text="invalid_ticket")
        ws = web.WebSocketResponse(timeout=2.0, autoping=False, max_msg_size=0)
        await ws.prepare(request)
        conn = SocketConnection(index=len(self.connections) + 1, ticket=ticket, opened_at=time.monotonic(), ws=ws,
                                transport=request.transport)
        self.connections.append(conn)
        self._changed()
        try:
            await ws.send_str(json.dumps({
                "type": "hello", "num_connections": len(self.open_connections()),
                "debug_info": {"host": self.host, "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }))
            conn.ready_at = time.monotonic()
            self._changed()
            async for msg in ws:
                if msg.type is WSMsgType.PING:
                    conn.pings += 1
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self.client_errors.append(f"connection {conn.index}: unexpected binary frame")
                # PONG (answers to our pings, if any): nothing to do
        except (ConnectionError, RuntimeError):
            pass  # dropped mid-write
        finally:
            conn.closed_at = time.monotonic()
            conn.close_code = ws.close_code
            self._changed()
        return ws

    def _on_text(self, conn: SocketConnection, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self.client_errors.append(f"connection {conn.index}: non-JSON frame {data[:80]!r}")
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not envelope_id:
            self.client_errors.append(f"connection {conn.index}: frame without envelope_id {data[:80]!r}")
            return
        ack = {**message, "at": time.monotonic(), "connection": conn.index}
        self.acks.append(ack)
        sent = self.envelopes.get(envelope_id)
        if sent is None:
            self.client_errors.append(f"connection {conn.index}: ack for unknown envelope {envelope_id}")
        elif sent.ack is None:
            sent.ack = ack
        else:
            self.client_errors.append(f"connection {conn.index}: second ack for envelope {envelope_id}")
        self._changed()

    # --- what the server side does -----------------------------------------------------------------

    async def send_envelope(self, conn: SocketConnection, type_: str, payload: dict[str, Any],
                            response_url: str | None = None, redelivery_of: str | None = None,
                            **extra: Any) -> SentEnvelope:
        envelope_id = str(uuid.uuid4())
        message = {"envelope_id": envelope_id, "payload": payload, "type": type_, **extra}
        sent = SentEnvelope(envelope_id, type_, payload, message, conn.index, time.monotonic(), response_url,
                            redelivery_of=redelivery_of)
        self.envelopes[envelope_id] = sent  # before the write: an ack may race the return
        await conn.ws.send_str(json.dumps(message))
        self._changed()
        return sent

    async def send_disconnect(self, conn: SocketConnection, reason: str, close_after: float | None) -> None:
        conn.disconnect_reason = reason
        await conn.ws.send_str(json.dumps({"type": "disconnect", "reason": reason,
                                           "debug_info": {"host": self.host}}))
        self._changed()
        if close_after is not None:
            task = asyncio.create_task(self._close_later(conn, close_after), name="fake-slack-disconnect-close")
            self._delayed_closes.add(task)
            task.add_done_callback(self._delayed_closes.discard)

    async def _close_later(self, conn: SocketConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        if conn.open:
            conn.closed_by_server = True
            await conn.ws.close(code=1000)

    def drop(self, conn: SocketConnection) -> None:
        """Cut the TCP connection: no close frame, as when a network path dies."""
        conn.closed_by_server = True
        if conn.transport is not None:
            conn.transport.abort()

    async def close(self) -> None:
        for task in list(self._delayed_closes):
            task.cancel()
        await asyncio.gather(*self._delayed_closes, return_exceptions=True)
        for conn in self.open_connections():
            conn.closed_by_server = True
            await conn.ws.close(code=1001, message=b"server shutting down")


class SocketModeControls:
    """`FakeSlack`'s Socket Mode side, for tests: deliver slash commands and events, watch acks, disconnect.
    Mixed into `FakeSlack`, which provides the attributes and hooks declared here."""

    socket: SocketModeHub
    team_id: str
    team_domain: str
    app_id: str
    bot_user_id: str
    verification_token: str

    def new_response_url(self) -> str:
        raise NotImplementedError

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, *, what: str = "") -> None:
        raise NotImplementedError

    def _next_ts(self) -> str:
        raise NotImplementedError

    def _remember_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- delivering requests and watching acks --------------------------------------------------------

    @property
    def socket_connections(self) -> int:
        """Socket Mode connections opened so far (a reconnect makes it 2)."""
        return len(self.socket.connections)

    @property
    def acks(self) -> list[dict[str, Any]]:
        """Every ack frame received: its JSON (`envelope_id`, `payload`?) plus `at` (monotonic), `connection`."""
        return self.socket.acks

    @property
    def sent_envelopes(self) -> dict[str, SentEnvelope]:
        return self.socket.envelopes

    async def wait_for_socket(self, n: int = 1, timeout: float = 5.0) -> None:
        """Until n connections have been opened and greeted with hello."""
        await self.wait_until(lambda: self.socket.ready_count >= n, timeout, what=f"{n} socket(s) ready")

    async def send_slash_command(self, command: str = "/ask", text: str = "", user_id: str = "U0USER",
                                 channel_id: str = "C0CHAN", user_name: str = "alice",
                                 channel_name: str = "general", **extra: str) -> str:
        """Deliver a `slash_commands` envelope with a fresh response_url on the newest socket; returns the envelope
        id (`fake.sent_envelopes[id].response_url` is the URL)."""
        return await self._send_slash_command(None, command, text, user_id, channel_id, user_name, channel_name,
                                              extra)

    async def send_slash_command_on(self, connection: int, command: str = "/ask", text: str = "",
                                    user_id: str = "U0USER", channel_id: str = "C0CHAN", user_name: str = "alice",
                                    channel_name: str = "general", **extra: str) -> str:
        """`send_slash_command` on socket `connection` (1-based, in order of opening): one process of several."""
        return await self._send_slash_command(connection, command, text, user_id, channel_id, user_name,
                                              channel_name, extra)

    async def _send_slash_command(self, connection: int | None, command: str, text: str, user_id: str,
                                  channel_id: str, user_name: str, channel_name: str, extra: dict[str, str]) -> str:
        url = self.new_response_url()
        payload = slash_command_payload(
            command=command, text=text, user_id=user_id, user_name=user_name, channel_id=channel_id,
            channel_name=channel_name, team_id=self.team_id, team_domain=self.team_domain, api_app_id=self.app_id,
            response_url=url, token=self.verification_token, **extra)
        conn = await self._socket_for_send(connection)
        sent = await self.socket.send_envelope(conn, "slash_commands", payload, response_url=url,
                                               accepts_response_payload=True)
        return sent.envelope_id

    async def send_event(self, event: dict[str, Any], event_id: str | None = None, retry_attempt: int = 0,
                         retry_reason: str = "", connection: int | None = None) -> str:
        """Deliver an `events_api` envelope (event_callback payload); returns the envelope id. A message or
        app_mention event also becomes a `Message`, so the bot can thread under it. `connection`: that socket
        (1-based), else the newest."""
        payload = event_callback_payload(event, team_id=self.team_id, api_app_id=self.app_id,
                                         bot_user_id=self.bot_user_id, event_id=event_id or new_event_id(),
                                         token=self.verification_token)
        self._remember_event(event)
        conn = await self._socket_for_send(connection)
        sent = await self.socket.send_envelope(conn, "events_api", payload, accepts_response_payload=False,
                                               retry_attempt=retry_attempt, retry_reason=retry_reason)
        return sent.envelope_id

    def mention_event(self, text: str, user_id: str = "U0USER", channel_id: str = "C0CHAN",
                      thread_ts: str | None = None) -> dict[str, Any]:
        """An `app_mention` event ("<@bot> text") with a fresh ts, for `send_event`."""
        ts = self._next_ts()
        event = {"type": "app_mention", "user": user_id, "text": f"<@{self.bot_user_id}> {text}", "ts": ts,
                 "channel": channel_id, "event_ts": ts, "team": self.team_id}
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def message_event(self, text: str, user_id: str = "U0USER", channel_id: str = "C0CHAN",
                      thread_ts: str | None = None, channel_type: str = "channel", ts: str | None = None,
                      **extra: Any) -> dict[str, Any]:
        """A `message` event with a fresh ts (or `ts`: the same message again), for `send_event`. A reply
        (`thread_ts`) carries `parent_user_id`, the thread root's author, as Slack's do; `extra` adds fields
        such as `subtype` or `bot_id`."""
        ts = ts or self._next_ts()
        event: dict[str, Any] = {"type": "message", "user": user_id, "text": text, "ts": ts, "channel": channel_id,
                                 "event_ts": ts, "team": self.team_id, "channel_type": channel_type}
        if thread_ts:
            event["thread_ts"] = thread_ts
            root = self._root_author(channel_id, thread_ts)
            if root is not None:
                event["parent_user_id"] = root
        event.update(extra)
        return event

    def _root_author(self, channel: str, thread_ts: str) -> str | None:
        raise NotImplementedError

    async def send_interactive(self, payload: dict[str, Any], connection: int | None = None) -> str:
        """Deliver an `interactive` envelope (a button press: `press`); the same payload again is a redelivery.
        Returns the envelope id. `connection`: that socket (1-based), else the newest."""
        conn = await self._socket_for_send(connection)
        sent = await self.socket.send_envelope(conn, "interactive", payload,
                                               response_url=payload.get("response_url"),
                                               accepts_response_payload=False)
        return sent.envelope_id

    async def redeliver(self, envelope_id: str, connection: int | None = None, retry_reason: str = "timeout") -> str:
        """Slack's retry of envelope `envelope_id`: the same payload (same trigger_id or event_id) in a new
        envelope, on socket `connection` (1-based; else the newest). An event's retry counts up `retry_attempt`
        and says why (`retry_reason`), as Slack's Events API retries do. Returns the new envelope id."""
        first = self.socket.envelopes[envelope_id]
        original = self.socket.envelopes.get(first.redelivery_of or "", first)
        extra: dict[str, Any] = {"accepts_response_payload": first.message.get("accepts_response_payload", False)}
        if first.type == "events_api":
            extra.update(retry_attempt=int(first.message.get("retry_attempt") or 0) + 1, retry_reason=retry_reason)
        conn = await self._socket_for_send(connection)
        sent = await self.socket.send_envelope(conn, first.type, first.payload, response_url=first.response_url,
                                               redelivery_of=original.envelope_id, **extra)
        return sent.envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ack frame for `envelope_id` (plus `at` and `connection`), once it arrives."""
        sent = self.socket.envelopes[envelope_id]
        await self.wait_until(lambda: sent.ack is not None, timeout, what=f"ack of {envelope_id}")
        assert sent.ack is not None
        return sent.ack

    async def send_disconnect(self, reason: str = "refresh_requested", close_after: float | None = 1.0) -> None:
        """Send `{"type": "disconnect", …}` on the current socket, then close it after `close_after` s if the
        client has not (slack_sdk reconnects at once and closes the old socket itself)."""
        conn = self.socket.current()
        if conn is None:
            raise RuntimeError("no ready Socket Mode connection to disconnect")
        await self.socket.send_disconnect(conn, reason, close_after)

    def drop_socket(self) -> None:
        """Abort the current socket's TCP connection without a close frame."""
        conn = self.socket.current() or next(iter(reversed(self.socket.open_connections())), None)
        if conn is None:
            raise RuntimeError("no open Socket Mode connection to drop")
        self.socket.drop(conn)

    async def _socket_for_send(self, connection: int | None = None) -> SocketConnection:
        if connection is not None:
            return self.socket.connection(connection)
        if self.socket.current() is None:
            try:
                await self.wait_until(lambda: self.socket.current() is not None, 2.0, what="a ready socket")
            except TimeoutError:
                raise RuntimeError("no Socket Mode connection is open: connect the app and "
                                   "`await fake.wait_for_socket()` first") from None
        conn = self.socket.current()
        assert conn is not None
        return conn
