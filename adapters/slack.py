"""Slack: `/ask` and `/imagine` in channels, answered in threads, over Socket Mode or HTTP (Events API).

Flow per command: parse and validate (no I/O) → ack at once (bad input is answered in the ack,
privately) → post a visible parent message → stream the answer into one thread reply: natively
(`adapters.slack_stream`) while the workspace's stream budget lasts, else as a placeholder edited into the
answer (Markdown in a markdown block; edits coalesced per message and budgeted per workspace), else posted once
→ images uploaded as files into the thread. While the answer is written its message carries Stop (a native
stream can't: the asker gets Stop privately); the finished answer carries Again (`adapters.slack_buttons`).

Slack failing is not the answer failing: 5xx answers and dropped connections are retried by slack_sdk's
own handlers, and if the bot still can't post in the channel (not invited, or Slack down), the user is
told privately and answered through the command's `response_url`. Only if that fails too is the
command given up, and its prediction cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, assert_never

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.jitter import Jitter
from slack_sdk.web.async_client import AsyncWebClient

from adapters import slack_format as fmt
from adapters.base import CommandIntake
from adapters.rendering import Buttons, EditBudget, RenderLimits, StreamingReply
from adapters.shared_budget import SlackEditBudgets
from adapters.slack_admin import SlackAdministration
from adapters.slack_buttons import SlackButtons
from adapters.slack_conversations import SlackConversations, link_thread
from adapters.slack_payloads import command_delivery_key, command_origin
from adapters.slack_startup import startup_call
from adapters.slack_stream import STREAMING_SCOPE, NativeStreaming, NativeStreamReply
from adapters.slack_thread import DELIVERY_ERRORS, SlackThread, call, error_code
from bot.core import CommandCore
from bot.inflight import Destination
from bot.replies import Failure, Images, ReplyEvent, Status, TextDelta, TextDone
from bot.requests import CommandName, CommandRequest
from bot.text import close_open_fence
from config.settings import Settings, SlackSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
RATE_LIMIT_RETRIES = 3  # slack_sdk waits Retry-After between tries
TRANSIENT_RETRIES = 2  # a 500/503 or a dropped connection: each call is tried three times in all
WEB_API_TIMEOUT_S = 30  # slack_sdk's own default, which a shared session must carry itself
SOCKET_PING_INTERVAL_S = 3.0  # bolt's 10 s default notices a dead socket only after 40 s (4 missed pings)
CANNOT_POST_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived", "restricted_action"})
# An answer's message or channel that no longer takes it (https://docs.slack.dev/reference/methods/chat.update).
GONE_ERRORS = CANNOT_POST_ERRORS | {"message_not_found", "cant_update_message"}
WORKING_TEXT = "_⏳ Working on it…_"

Respond = AsyncRespond
Reply = StreamingReply | NativeStreamReply  # an answer being shown: edited in, or natively streamed
Tell = Callable[[str], Awaitable[bool]]  # one private message to the user; False if it did not arrive


@dataclass(frozen=True)
class RetryBackoff:
    """The wait before retry n (0-based) of a transient failure: `first_wait_s` × 2ⁿ plus up to `jitter_s` at
    random. The defaults are slack_sdk's own (`BackoffRetryIntervalCalculator` with `RandomJitter`)."""

    first_wait_s: float = 0.5
    jitter_s: float = 1.0


RETRY_BACKOFF = RetryBackoff()  # read when an adapter is built


class _BoundedJitter(Jitter):
    """slack_sdk's `RandomJitter` always adds up to 1 s; this adds up to `RetryBackoff.jitter_s`."""

    def __init__(self, max_s: float) -> None:
        self._max_s = max_s

    def recalculate(self, duration: float) -> float:
        return duration + random.random() * self._max_s


def _retry_handlers(*, wait_out_rate_limits: bool) -> list[AsyncRetryHandler]:
    """slack_sdk's own handlers: 5xx and dropped connections are retried with backoff; 429s, when asked,
    after Retry-After. All of them share one count of attempts per call (slack_sdk's `RetryState`)."""
    backoff = BackoffRetryIntervalCalculator(
        backoff_factor=RETRY_BACKOFF.first_wait_s, jitter=_BoundedJitter(RETRY_BACKOFF.jitter_s)
    )
    handlers: list[AsyncRetryHandler] = [
        AsyncServerErrorRetryHandler(max_retry_count=TRANSIENT_RETRIES, interval_calculator=backoff),
        AsyncConnectionErrorRetryHandler(max_retry_count=TRANSIENT_RETRIES, interval_calculator=backoff),
    ]
    if wait_out_rate_limits:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES))
    return handlers


async def _tell(respond: Respond, text: str) -> bool:
    """One private message through the command's response_url; False if it did not arrive."""
    try:
        response = await respond(text=text, response_type="ephemeral", replace_original=False)
    except (aiohttp.ClientError, TimeoutError) as error:
        log.warning("Slack: response_url unreachable (%s)", type(error).__name__)
        return False
    if response.status_code != 200:
        log.warning("Slack: response_url refused a message (HTTP %s)", response.status_code)
        return False
    return True


async def _prefetched(
    first: Awaitable[ReplyEvent], rest: AsyncIterator[ReplyEvent]
) -> AsyncGenerator[ReplyEvent, None]:
    """A command's events when the first one was asked for early (the prediction starting meanwhile)."""
    yield await first
    async for event in rest:
        yield event


async def _first_of(signal: Coroutine[Any, Any, object], task: asyncio.Future[Any]) -> None:
    """Returns when `signal` returns or `task` ends, whichever is first (`task` is left running)."""
    waiting = asyncio.ensure_future(signal)
    try:
        await asyncio.wait((waiting, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()


class SlackAdapter:
    """Holds the core; turns Slack slash commands into core requests and reply events into Slack messages."""

    name = "slack"

    def __init__(self, core: CommandCore, config: SlackSettings, intake: CommandIntake) -> None:
        self._core = core
        self._config = config
        self._intake = intake
        self.client = AsyncWebClient(
            token=config.bot_token, base_url=config.api_url, retry_handlers=_retry_handlers(wait_out_rate_limits=True)
        )
        self._edit_client = AsyncWebClient(
            token=config.bot_token, base_url=config.api_url, retry_handlers=_retry_handlers(wait_out_rate_limits=False)
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=config.signing_secret or "",
            request_verification_enabled=config.app_token is None,
            # The listener only validates, acks and spawns the answer, so bolt can answer Slack as soon as
            # it returns. The default polls for the ack every 10 ms, and meanwhile the answer's first
            # Web API and Replicate calls would overtake the ack.
            process_before_response=True,
            # Who we are comes from the auth.test made at start-up: bolt would otherwise call it lazily inside
            # the first command's ack path (https://tools.slack.dev/bolt-python/concepts/authorization). A
            # lambda, because bolt fills a callable's parameters by name and would pass `self=None` too.
            authorize=lambda: self._authorize(),
        )
        self._authorization: AuthorizeResult | None = None
        self.app.command("/ask")(self._on_command)
        self.app.command("/imagine")(self._on_command)
        SlackAdministration(self.app, intake)
        SlackConversations(self.app, core, intake, answer=self.answer_turn, tell=self.tell_privately,
                           bot_user_id=lambda: self.bot_user_id)
        SlackButtons(self.app, core, intake, answer=self.answer_turn, respond_privately=_tell)
        self._socket_handler: AsyncSocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        # Per workspace, and shared with the bot's other processes when its state store is theirs too.
        self._budgets = SlackEditBudgets(lambda: core.shared_state)
        self._native: dict[str, NativeStreaming] = {}
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
        self._authorization = self._authorization_of(auth)
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

    async def _authorize(self) -> AuthorizeResult:
        """bolt's authorize hook: the start-up auth.test's answer (asked again only for a request before start)."""
        if self._authorization is None:
            self._authorization = self._authorization_of(await self.client.auth_test())
        return self._authorization

    def _authorization_of(self, auth: Any) -> AuthorizeResult:
        """Who we are, and which scopes the token holds (Slack says in auth.test's X-OAuth-Scopes header)."""
        return AuthorizeResult.from_auth_test_response(
            bot_token=self._config.bot_token, auth_test_response=auth,
            bot_scopes=auth.headers.get("X-OAuth-Scopes") if auth.headers else None,
        )

    async def wait_closed(self) -> None:
        """Never, by itself: slack_sdk reconnects a dropped socket, and in HTTP mode Slack calls us."""
        await asyncio.get_running_loop().create_future()

    async def is_connected(self) -> bool:
        if self._socket_handler is None:
            return True  # HTTP mode: Slack calls us
        return await self._socket_handler.client.is_connected()

    async def close(self) -> None:
        if self._socket_handler is not None:
            await self._socket_handler.close_async()
        await self._budgets.aclose()
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

    async def _on_command(self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond) -> None:
        async def refuse(message: str) -> None:
            await ack(text=fmt.escape(message))  # an ack's text is ephemeral: only the user sees it

        async def answer(request: CommandRequest, ack_latency_s: float) -> None:
            open_thread = functools.partial(self._open_thread_and_answer, request, respond)
            await self._answer(request, ack_latency_s, open_thread, {"channel": request.origin.channel_id})

        await self._intake.take(
            delivery_key=command_delivery_key(command),
            origin=command_origin(command),
            command=command.get("command", ""),
            text=command.get("text", ""),
            acknowledge=ack,
            refuse=refuse,
            answer=answer,
            redelivered=ack,  # a command we already took: acked again, answered once
        )

    async def answer_turn(
        self, request: CommandRequest, latency_s: float, channel: str, thread_ts: str, user_id: str
    ) -> None:
        """A conversation's turn, or a command run again (its Again button), answered in its thread like /ask or
        /imagine; if the thread won't take the final reply, the user gets it privately (an ephemeral message in
        the thread)."""
        thread = SlackThread(self.client, self._edit_client, channel, thread_ts, _markup_of(request))
        tell = functools.partial(self.tell_privately, channel, user_id, thread_ts)
        await self._answer(request, latency_s, functools.partial(self._answer_in_thread, request, thread, tell),
                           {"channel": channel, "thread_ts": thread_ts})

    async def tell_privately(self, channel: str, user_id: str, thread_ts: str | None, text: str) -> bool:
        """One ephemeral message (mrkdwn, already escaped) only `user_id` sees; False if it did not arrive."""
        try:
            await call(self.client.chat_postEphemeral(channel=channel, user=user_id, thread_ts=thread_ts, text=text))
        except DELIVERY_ERRORS as error:
            log.warning("Slack: a private message did not reach %s in %s (%s)", user_id, channel, error_code(error))
            return False
        return True

    async def _answer(
        self,
        request: CommandRequest,
        ack_latency_s: float,
        deliver: Callable[[AsyncIterator[ReplyEvent]], Awaitable[None]],
        destination: Destination,
    ) -> None:
        # Noted first, so the journal entry written before the create already has it: a survivor knows where the
        # answer goes (and opens the thread itself) if this process dies before `deliver` could (`resume`).
        self._core.note_destination(request.request_id, destination)
        under_way = asyncio.Event()
        events = self._core.execute(request, ack_latency_s=ack_latency_s, on_under_way=under_way.set)
        # Ask for the first event now: the prediction starts while the thread is being opened.
        first_event = asyncio.ensure_future(anext(events))
        try:
            # The thread opens once the create is on its way (or the command is queued, or over): under a burst of
            # commands the predictions start first, and their run time covers the posts (`bin/bench`).
            await _first_of(under_way.wait(), first_event)
            async with aclosing(_prefetched(first_event, events)) as stream:
                await deliver(stream)
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
            thread_ts = await self._post_parent(request, channel)
        except DELIVERY_ERRORS as error:
            if isinstance(error, SlackApiError) and error.response.get("error") in CANNOT_POST_ERRORS:
                log.info("Slack: cannot post in %s (%s); answering privately", channel, error_code(error))
                notice = fmt.not_in_channel_text(self.bot_user_id)
            else:
                log.warning(
                    "Slack: could not open a thread in %s (%s); answering privately", channel, error_code(error)
                )
                notice = fmt.PRIVATE_FALLBACK_TEXT
            await self._answer_privately(respond, events, notice)
            return
        thread = SlackThread(self.client, self._edit_client, channel, thread_ts, _markup_of(request))
        await self._answer_in_thread(request, thread, functools.partial(_tell, respond), events)

    async def resume(
        self, request: CommandRequest, destination: Mapping[str, Any], events: AsyncIterator[ReplyEvent]
    ) -> None:
        """An answer a stopped process began (`adapters.base.Adapter.resume`): written on into the message it was
        being written in (or a new one in its thread, or a thread opened now if it died before it opened one), as a
        live one; if that message or its channel is gone, left unread (the prediction is cancelled)."""
        channel, thread_ts = str(destination.get("channel") or ""), str(destination.get("thread_ts") or "")
        message_ts = destination.get("message_ts")
        if channel and not thread_ts:
            thread_ts = await self._open_thread_for(request, channel) or ""
        if not (channel and thread_ts):
            return
        thread = SlackThread(self.client, self._edit_client, channel, thread_ts, _markup_of(request))
        if message_ts:
            try:  # says at once that it goes on, and whether it still can
                await thread.edit(str(message_ts), WORKING_TEXT, Buttons(stop_id=request.request_id))
            except DELIVERY_ERRORS as error:
                gone = isinstance(error, SlackApiError) and error.response.get("error") in GONE_ERRORS
                what = "can't be resumed: it is gone" if gone else "goes on after a failed edit"
                log.warning("Slack: the answer in %s %s (%s)", channel, what, error_code(error))
                if gone:
                    return
        tell = functools.partial(self.tell_privately, channel, request.origin.user_id, thread_ts)
        await self._answer_in_thread(request, thread, tell, events, written_in=str(message_ts or "") or None)

    async def _post_parent(self, request: CommandRequest, channel: str) -> str:
        """The visible message that opens a command's thread (who asked what); its ts. Raises DELIVERY_ERRORS."""
        parent = await call(self.client.chat_postMessage(
            channel=channel, text=fmt.parent_text(request), unfurl_links=False, unfurl_media=False
        ))
        if request.conversation_id is not None:  # a reply in this thread continues the conversation
            await link_thread(self._core, channel, parent["ts"], request.conversation_id)
        return str(parent["ts"])

    async def _open_thread_for(self, request: CommandRequest, channel: str) -> str | None:
        """A resumed command's thread, opened now (its process died first); None if the channel won't take it."""
        try:
            return await self._post_parent(request, channel)
        except DELIVERY_ERRORS as error:
            log.warning("Slack: a resumed answer cannot open its thread in %s (%s)", channel, error_code(error))
            return None

    async def _answer_in_thread(
        self, request: CommandRequest, thread: SlackThread, tell: Tell, events: AsyncIterator[ReplyEvent],
        *, written_in: str | None = None,
    ) -> None:
        # Before any await (see `_answer`): the thread is known, its message not yet.
        self._core.note_destination(request.request_id, {"channel": thread.channel, "thread_ts": thread.thread_ts})
        budget = self._budget(request.origin.workspace_id or "")
        stop = Buttons(stop_id=request.request_id)  # on the message being written, until the final edit

        def edit_path(first_message_id: str | None, shown_text: str, prepare: bool) -> StreamingReply:
            return StreamingReply(
                thread,
                first_message_id,
                RenderLimits(max_chars=fmt.CHAT_UPDATE_MAX_CHARS, edit_interval_s=fmt.EDIT_INTERVAL_S),
                budget=budget,
                final_edit_prepaid=False,
                prepare_text=functools.partial(fmt.inert, markup=thread.markup) if prepare else _as_is,
                shown_text=shown_text,
                stop_id=stop.stop_id,
            )

        # Every budget the workspace gives, best first: a native stream while its start budget lasts (text
        # answers: a stream shows Markdown), else placeholder-and-edit while the edit budget lasts, else one post.
        reply: StreamingReply | NativeStreamReply | None = None
        workspace_id = request.origin.workspace_id
        if written_in is None and thread.markup is fmt.Markup.MARKDOWN and workspace_id and self._may_stream_natively:
            reply = await NativeStreamReply.open(
                thread, self._native_streaming(workspace_id), user_id=request.origin.user_id, team_id=workspace_id,
                stop_id=stop.stop_id, hand_over=edit_path,
            )
        if reply is None:
            reply = await self._placeholder_reply(request, thread, budget, stop, written_in)
        else:  # a survivor answers in a new message: a stream's own can't be edited until Slack ends it
            self._core.note_destination(request.request_id, {
                "channel": thread.channel, "thread_ts": thread.thread_ts, "message_ts": None})
        try:
            await self._render(events, reply, thread, tell)
        finally:
            await reply.aclose()

    async def _placeholder_reply(
        self, request: CommandRequest, thread: SlackThread, budget: EditBudget, stop: Buttons, written_in: str | None
    ) -> StreamingReply:
        """The edit path: a placeholder (with Stop) edited into the answer, or, with the workspace's edits spent,
        the answer posted once when it is ready."""
        # A placeholder is only worth posting if it can be edited into the answer later: its final edit
        # is paid for now. With the workspace's edits spent (many answers at once), the answer is
        # posted once when it is ready instead of a placeholder being posted, then deleted.
        placeholder = written_in  # a resumed answer goes on in its message
        if placeholder is None and await budget.take_soon():
            try:
                placeholder = await thread.post(WORKING_TEXT, stop)
            except DELIVERY_ERRORS as error:  # the answer is posted when it has something to show instead
                log.warning("Slack: could not post the placeholder in %s (%s)", thread.channel, error_code(error))
        # Where a survivor finishes this answer if this process dies (`Adapter.resume`): the placeholder, or the
        # answer's first message once it is posted.
        def note_message(message_ts: str | None) -> None:
            self._core.note_destination(request.request_id, {
                "channel": thread.channel, "thread_ts": thread.thread_ts, "message_ts": message_ts})

        note_message(placeholder)
        return StreamingReply(
            thread,
            placeholder,
            RenderLimits(max_chars=fmt.CHAT_UPDATE_MAX_CHARS, edit_interval_s=fmt.EDIT_INTERVAL_S),
            budget=budget,
            final_edit_prepaid=placeholder is not None and written_in is None,
            prepare_text=functools.partial(fmt.inert, markup=thread.markup),
            shown_text=WORKING_TEXT,
            stop_id=stop.stop_id,
            on_first_message=note_message,
        )

    async def _render(
        self, events: AsyncIterator[ReplyEvent], reply: Reply, thread: SlackThread, tell: Tell
    ) -> None:
        async for event in events:
            match event:
                case Status():
                    reply.set_status(fmt.status_text(event))
                case TextDelta():
                    reply.append(event.text)
                case TextDone() | Images() | Failure():
                    await self._settle(event, reply, thread, tell)
                case _:
                    assert_never(event)

    async def _settle(
        self, event: TextDone | Images | Failure, reply: Reply, thread: SlackThread, tell: Tell
    ) -> None:
        """The final reply into the thread; if Slack won't take it there, privately (`tell`)."""
        partial = reply.text
        try:
            match event:
                case TextDone():
                    await reply.finish(fmt.inert(event.text, thread.markup), again_id=event.again_id)
                case Images():
                    await self._post_images(event, reply, thread)
                case Failure() if partial.strip():
                    # What was written stays, settled; the error follows it in the thread.
                    failure = fmt.failure_text(event.message, thread.markup)
                    await reply.finish(fmt.inert(close_open_fence(partial), thread.markup) + "\n\n" + failure)
                case Failure():
                    await reply.replace(fmt.failure_text(event.message, thread.markup))
                case _:
                    assert_never(event)
        except DELIVERY_ERRORS as error:
            log.warning("Slack: a final reply did not reach its thread (%s); answering privately", error_code(error))
            for text in [fmt.PRIVATE_FALLBACK_TEXT, *fmt.private_texts(event, partial)]:
                if not await tell(text):
                    log.error("Slack: the user could not be given the answer in the thread or privately")
                    return

    async def _post_images(self, images: Images, reply: Reply, thread: SlackThread) -> None:
        """Upload the bytes (Replicate deletes outputs after an hour); post links only if the upload fails."""
        uploads = [
            {"content": image.data, "filename": image.filename, "title": f"{images.prompt[:80]} ({index})"}
            for index, image in enumerate(images.images, start=1)
            if image.data
        ]
        missing = [image for image in images.images if not image.data]
        try:
            if uploads:
                await self.client.files_upload_v2(
                    file_uploads=uploads, channel=thread.channel, thread_ts=thread.thread_ts
                )
        except Exception as error:  # any failure of the three-step upload: fall back to links, once
            log.warning("Slack: image upload failed (%s); posting links instead", type(error).__name__)
            missing = list(images.images)
        # Again goes on the caption, which this edit writes anyway: the uploaded files' message takes no blocks.
        caption = fmt.image_caption(images, fmt.missing_images_note(images, missing))
        await reply.replace(caption, again_id=images.again_id)

    async def _answer_privately(self, respond: Respond, events: AsyncIterator[ReplyEvent], notice: str) -> None:
        """No thread to answer in: `notice` first, then the final reply through response_url (5 uses). If the
        user can't be reached this way either, the command is given up (closing `events` cancels its prediction)."""
        if not await _tell(respond, notice):
            log.error("Slack: the user could not be told in the channel or privately; giving up on the command")
            return
        async for event in events:
            match event:
                case Status() | TextDelta():
                    continue
                case TextDone() | Images() | Failure():
                    for text in fmt.private_texts(event):
                        await _tell(respond, text)
                case _:
                    assert_never(event)

    def edit_budget_left(self) -> dict[str, float]:
        """Interim edits each workspace may still make now (`GET /metrics` reads it at each scrape)."""
        return self._budgets.left()

    @property
    def _may_stream_natively(self) -> bool:
        """The app was granted Slack's AI-app scope (or auth.test did not say which scopes it has)."""
        scopes = self._authorization.bot_scopes if self._authorization is not None else None
        return scopes is None or STREAMING_SCOPE in scopes

    def _native_streaming(self, workspace_id: str) -> NativeStreaming:
        """The workspace's native streaming budgets (Tier 2 starts and stops, Tier 4 appends) and refusal."""
        native = self._native.get(workspace_id)
        if native is None:
            native = self._native[workspace_id] = NativeStreaming()
        return native

    def _budget(self, workspace_id: str) -> EditBudget:
        return self._budgets.of(workspace_id)


def _as_is(text: str) -> str:
    return text


def _markup_of(request: CommandRequest) -> fmt.Markup:
    """Answers are Markdown; an image's caption is Slack's own mrkdwn."""
    return fmt.Markup.MARKDOWN if request.command is CommandName.ASK else fmt.Markup.MRKDWN


def build_slack_adapter(settings: Settings, core: CommandCore, intake: CommandIntake) -> SlackAdapter | None:
    """The Slack adapter, when SLACK_BOT_TOKEN is set (Socket Mode with SLACK_APP_TOKEN, else HTTP mode)."""
    return SlackAdapter(core, settings.slack, intake) if settings.slack is not None else None
