"""Slack: `/ask` and `/imagine` in channels, answered in threads, over Socket Mode or HTTP (Events API).

Flow per command: parse and validate (no I/O) → ack at once (bad input is answered in the ack,
privately) → post a visible parent message → stream the answer into one thread reply (edits
coalesced per message and budgeted per workspace) → images uploaded as files into the thread.
If the bot can't post in the channel, the user is told privately and answered through the
command's `response_url`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, assert_never

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import AsyncSingleTeamAuthorization
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_format as fmt
from adapters.rendering import EditBudget, RateLimited, RenderLimits, StreamingReply
from adapters.slack_startup import startup_call
from bot.core import CommandCore
from bot.replies import Failure, Images, ReplyEvent, Status, TextDelta, TextDone
from bot.requests import CommandRequest, Origin
from bot.tasks import BackgroundTasks
from bot.text import split_message

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RATE_LIMIT_RETRIES = 3  # slack_sdk waits Retry-After between tries
WEB_API_TIMEOUT_S = 30  # slack_sdk's own default, which a shared session must carry itself
SOCKET_PING_INTERVAL_S = 3.0  # bolt's 10 s default notices a dead socket only after 40 s (4 missed pings)
CANNOT_POST_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
WORKING_TEXT = "_⏳ Working on it…_"

Respond = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class SlackConfig:
    bot_token: str
    api_url: str
    app_token: str | None = None  # Socket Mode when set
    signing_secret: str | None = None  # HTTP mode


class SlackThread:
    """A command's thread, as the streaming renderer sees it.

    Edits go through `edit_client`, which does not wait out 429s: the renderer decides what a rate
    limit means (skip a progress edit; post a final answer anew), so a finished answer never sleeps
    behind Retry-After. Posts and deletes go through `client`, whose retry handlers wait it out.
    """

    def __init__(self, client: AsyncWebClient, edit_client: AsyncWebClient, channel: str, thread_ts: str) -> None:
        self._client = client
        self._edit_client = edit_client
        self._channel = channel
        self._thread_ts = thread_ts

    async def post(self, text: str) -> str:
        response = await _call(self._client.chat_postMessage(
            channel=self._channel, thread_ts=self._thread_ts, text=text, unfurl_links=False, unfurl_media=False
        ))
        return str(response["ts"])

    async def edit(self, message_id: str, text: str) -> None:
        await _call(self._edit_client.chat_update(channel=self._channel, ts=message_id, text=text))

    async def delete(self, message_id: str) -> None:
        await _call(self._client.chat_delete(channel=self._channel, ts=message_id))


async def _prefetched(first: Awaitable[ReplyEvent], rest: AsyncIterator[ReplyEvent]) -> AsyncIterator[ReplyEvent]:
    """A command's events when the first one was asked for early (the prediction starting meanwhile)."""
    yield await first
    async for event in rest:
        yield event


async def _call(request: Awaitable[Any]) -> Any:
    """A Web API call whose 429, once slack_sdk's own retries are spent, becomes `RateLimited`."""
    try:
        return await request
    except SlackApiError as error:
        if error.response.status_code == 429:
            retry_after = error.response.headers.get("Retry-After") or error.response.headers.get("retry-after") or 1
            raise RateLimited(float(retry_after)) from error
        raise


class SlackAdapter:
    """Holds the core; turns Slack slash commands into core requests and reply events into Slack messages."""

    def __init__(self, core: CommandCore, config: SlackConfig, tasks: BackgroundTasks) -> None:
        self._core = core
        self._config = config
        self._tasks = tasks
        self.client = AsyncWebClient(
            token=config.bot_token,
            base_url=config.api_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
            ],
        )
        self._edit_client = AsyncWebClient(
            token=config.bot_token, base_url=config.api_url, retry_handlers=[AsyncConnectionErrorRetryHandler()]
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=config.signing_secret or "",
            request_verification_enabled=config.app_token is None,
            # The listener only validates, acks and spawns the answer, so bolt can answer Slack as soon as
            # it returns. The default polls for the ack every 10 ms, and meanwhile the answer's first
            # Web API and Replicate calls would overtake the ack.
            process_before_response=True,
        )
        self.app.command("/ask")(self._on_command)
        self.app.command("/imagine")(self._on_command)
        self._socket_handler: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._budgets: dict[str, EditBudget] = {}
        self.bot_user_id: str | None = None

    @property
    def socket_mode(self) -> bool:
        return self._config.app_token is not None

    async def start(self) -> None:
        """auth.test now, not on the first command (it would delay that ack); then connect the socket.

        A refused token or an unreachable API raises `StartupError`, naming the variable and the fix.
        """
        # One session for every Web API call: without it slack_sdk opens a session (and a TCP connection)
        # per call. Made here, not in __init__, because a session belongs to the running loop.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEB_API_TIMEOUT_S))
        self.client.session = self._edit_client.session = self._session
        auth = await startup_call("auth.test", self.client.auth_test(), self._config.api_url)
        self.bot_user_id = auth.get("user_id")
        for middleware in self.app._async_middleware_list:
            # bolt calls auth.test lazily inside the first request's ack path; hand it the answer up front.
            if isinstance(middleware, AsyncSingleTeamAuthorization):
                middleware.auth_test_result = auth
        log.info("Slack: signed in as %s in %s", auth.get("user"), auth.get("team"))
        if self._config.app_token:
            self._socket_handler = AsyncSocketModeHandler(
                self.app, self._config.app_token, ping_interval=SOCKET_PING_INTERVAL_S
            )
            # The socket URL is asked for here, where a refusal can stop start-up: slack_sdk's connect() would
            # retry a refused app token forever, logging a traceback each time
            # (slack_sdk/socket_mode/aiohttp/__init__.py, `connect`); given a URL, it connects to it.
            opened = await startup_call(
                "apps.connections.open",
                self.client.apps_connections_open(app_token=self._config.app_token),
                self._config.api_url,
            )
            self._socket_handler.client.wss_uri = opened["url"]
            await self._socket_handler.connect_async()
            log.info("Slack: Socket Mode connected")

    async def is_connected(self) -> bool:
        if self._socket_handler is None:
            return True  # HTTP mode: Slack calls us
        return await self._socket_handler.client.is_connected()

    async def close(self) -> None:
        if self._socket_handler is not None:
            await self._socket_handler.close_async()
        if self._session is not None:
            await self._session.close()  # later calls, if any, fall back to slack_sdk's own sessions

    async def handle_http(self, request: web.Request) -> web.Response:
        """HTTP mode: bolt verifies the signature (401 otherwise) and dispatches.

        A timestamp that is not a number is refused here with bolt's own 401: slack_sdk's verifier calls `int()`
        on it unguarded (slack_sdk/signature/__init__.py, `is_valid`), which bolt turns into a 500 and an ERROR
        with a traceback for anyone who sends `X-Slack-Request-Timestamp: abc`.
        """
        for timestamp in request.headers.getall("X-Slack-Request-Timestamp", []):
            try:
                int(timestamp)
            except ValueError:
                log.info("Slack: refused a request whose X-Slack-Request-Timestamp is not a number")
                return web.json_response({"error": "invalid request"}, status=401)
        bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    def http_routes(self) -> list[web.RouteDef]:
        return [web.post(EVENTS_PATH, self.handle_http)] if not self.socket_mode else []

    # --- commands ---------------------------------------------------------------------------------

    async def _on_command(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any], respond: Respond) -> None:
        received = time.monotonic()
        if not self._core.claim_delivery(f"slack:{command.get('team_id')}:{command.get('trigger_id')}"):
            await ack()  # a redelivery of a command we already took: answer it once, not twice
            log.info("Slack: dropped a repeated delivery of trigger %s", command.get("trigger_id"))
            return
        origin = Origin(
            platform="slack",
            user_id=command.get("user_id", ""),
            channel_id=command.get("channel_id", ""),
            user_name=command.get("user_name"),
            workspace_id=command.get("team_id"),
        )
        prepared = self._core.prepare(command.get("command", ""), command.get("text", ""), origin)
        if isinstance(prepared, Failure):
            await ack(text=prepared.message)  # an ack's text is ephemeral: only the user sees it
            return
        await ack()
        ack_latency_s = time.monotonic() - received
        self._tasks.spawn(self._answer(prepared, respond, ack_latency_s), name=f"slack-{prepared.request_id}")

    async def _answer(self, request: CommandRequest, respond: Respond, ack_latency_s: float) -> None:
        events = self._core.execute(request, ack_latency_s=ack_latency_s)
        # Ask for the first event now: the prediction starts while the thread is being opened.
        first_event = asyncio.ensure_future(anext(events))
        try:
            async with aclosing(_prefetched(first_event, events)) as stream:
                await self._open_thread_and_answer(request, respond, stream)
        finally:
            if not first_event.done():
                first_event.cancel()
            await asyncio.gather(first_event, return_exceptions=True)
            await events.aclose()  # ends the command (and its prediction) if we stopped early

    async def _open_thread_and_answer(
        self, request: CommandRequest, respond: Respond, events: AsyncIterator[ReplyEvent]
    ) -> None:
        channel = request.origin.channel_id
        try:
            parent = await _call(self.client.chat_postMessage(
                channel=channel, text=fmt.parent_text(request), unfurl_links=False, unfurl_media=False
            ))
            budget = self._budget(request.origin.workspace_id or "")
            # A placeholder is only worth posting if it can be edited into the answer later: its final edit
            # is paid for now. With the workspace's edits spent (many answers at once), the answer is
            # posted once when it is ready instead of a placeholder being posted, then deleted.
            placeholder = None if not budget.try_take() else await _call(self.client.chat_postMessage(
                channel=channel, thread_ts=parent["ts"], text=WORKING_TEXT, unfurl_links=False, unfurl_media=False
            ))
        except SlackApiError as error:
            code = error.response.get("error", "")
            if code in CANNOT_POST_ERRORS:
                log.info("Slack: cannot post in %s (%s); answering privately", channel, code)
                await self._answer_privately(respond, events)
                return
            log.error("Slack: could not start the thread in %s: %s", channel, code)
            await respond(text=fmt.failure_text("I couldn't post in this channel. Try again in a moment."))
            return
        thread = SlackThread(self.client, self._edit_client, channel, parent["ts"])
        reply = StreamingReply(
            thread,
            placeholder["ts"] if placeholder is not None else None,
            RenderLimits(max_chars=fmt.CHAT_UPDATE_MAX_CHARS, edit_interval_s=fmt.EDIT_INTERVAL_S),
            budget=budget,
            final_edit_prepaid=placeholder is not None,
            prepare_text=fmt.escape,
            shown_text=WORKING_TEXT,
        )
        try:
            await self._render(events, reply, channel, parent["ts"])
        finally:
            await reply.aclose()

    async def _render(
        self, events: AsyncIterator[ReplyEvent], reply: StreamingReply, channel: str, thread_ts: str
    ) -> None:
        async for event in events:
            match event:
                case Status():
                    reply.set_status(fmt.status_text(event))
                case TextDelta():
                    reply.append(event.text)
                case TextDone():
                    await reply.finish(fmt.escape(event.text))
                case Images():
                    await self._post_images(event, reply, channel, thread_ts)
                case Failure() if reply.text.strip():
                    # What was written stays, settled; the error follows it in the thread.
                    await reply.finish(fmt.escape(reply.text) + "\n\n" + fmt.failure_text(event.message))
                case Failure():
                    await reply.replace(fmt.failure_text(event.message))
                case _:
                    assert_never(event)

    async def _post_images(self, images: Images, reply: StreamingReply, channel: str, thread_ts: str) -> None:
        """Upload the bytes (Replicate deletes outputs after an hour); post links only if the upload fails."""
        uploads = [
            {"content": image.data, "filename": image.filename, "title": f"{images.prompt[:80]} ({index})"}
            for index, image in enumerate(images.images, start=1)
            if image.data
        ]
        missing = [image for image in images.images if not image.data]
        try:
            if uploads:
                await self.client.files_upload_v2(file_uploads=uploads, channel=channel, thread_ts=thread_ts)
        except Exception as error:  # any failure of the three-step upload: fall back to links, once
            log.warning("Slack: image upload failed (%s); posting links instead", type(error).__name__)
            missing = list(images.images)
        note = ""
        if missing:
            links = fmt.image_links(images, missing)
            note = links + " (links expire in an hour)" if links else "The image could not be fetched."
        await reply.replace(fmt.image_caption(images, note))

    async def _answer_privately(self, respond: Respond, events: AsyncIterator[ReplyEvent]) -> None:
        """No channel access: the answer goes through response_url (5 uses), final text only."""
        tell = functools.partial(respond, response_type="ephemeral", replace_original=False)
        await tell(text=fmt.not_in_channel_text(self.bot_user_id))
        async for event in events:
            match event:
                case Status() | TextDelta():
                    continue
                case TextDone():
                    chunks = split_message(fmt.escape(event.text), fmt.CHAT_UPDATE_MAX_CHARS)
                    for chunk in chunks[: fmt.RESPONSE_URL_MAX_USES - 1]:
                        await tell(text=chunk)
                case Images():
                    await tell(text=fmt.image_caption(event, fmt.image_links(event) or "(no link available)"))
                case Failure():
                    await tell(text=fmt.failure_text(event.message))
                case _:
                    assert_never(event)

    def _budget(self, workspace_id: str) -> EditBudget:
        budget = self._budgets.get(workspace_id)
        if budget is None:
            budget = self._budgets[workspace_id] = EditBudget(fmt.INTERIM_EDITS_PER_MINUTE, fmt.INTERIM_EDIT_BURST)
        return budget
