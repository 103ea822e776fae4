"""Slack's native streaming (chat.startStream / appendStream / stopStream) for one answer, within the
workspace's limits.

Why: `chat.update` is Tier 3 for the whole app (about 50 a minute per workspace), so a busy workspace gets few
progress edits. A native stream has budgets of its own: appends are Tier 4, while starting and stopping are
Tier 2 (about 20 streams a minute) (https://docs.slack.dev/apis/web-api/rate-limits). An answer streams natively
while the workspace's start budget lasts; the adapter falls back to placeholder-and-edit (`StreamingReply`), and
then to one final post, beyond it.

The stream's text is append-only, so what it shows is always a prefix of the answer: the text (made inert, as
in the edit path: no live `<@U…>` or `<!here>`) goes out on a timer, once a second per stream and as the
workspace's append budget allows, never waiting for a full buffer. The finished answer stops the stream with the
rest of the text and Again under it. A streaming message can carry no buttons, so Stop comes to the asker as an
ephemeral message in the thread (only they, or an admin, may stop an answer anyway).

Native streaming is tried when the app holds `STREAMING_SCOPE` (or its scopes are unknown). Falling back,
cleanly: a workspace that refuses native streaming (`feature_not_enabled`, `unknown_method`,
`messages_tab_disabled`, …) is not asked again for `STREAM_REFUSAL_RETRY_S`, and the answer takes the edit path.
A stream that expired (Slack ends them ~5 minutes after they start: `message_not_in_streaming_state`), or whose
final stop failed, is handed to a `StreamingReply` that edits its message (chat.update works once a stream is
over) or, without edit budget, posts the final text anew. An answer longer than one streamed message ends the
stream at a paragraph or line boundary and continues in new messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from slack_sdk.errors import SlackApiError

from adapters import slack_format as fmt
from adapters.rendering import NO_BUTTONS, Buttons, EditBudget, RateLimited, StreamingReply
from adapters.slack_thread import DELIVERY_ERRORS, SlackThread, error_code
from bot.text import close_open_fence, split_from

log = logging.getLogger(__name__)

# Answers that mean "this workspace (or app) does not do native streaming": the method's page lists the last
# three; vercel/chat's Slack adapter falls back on the first two as well.
WORKSPACE_REFUSALS = frozenset({
    "feature_not_enabled", "unknown_method", "messages_tab_disabled", "missing_scope", "not_allowed_token_type",
})
EXPIRED = "message_not_in_streaming_state"
# Slack's "Agents & AI Apps" feature, which grants this scope, is what turns native streaming on for an app (our
# manifests ask for it); an app without the scope is not made to try (and be refused) at every start.
STREAMING_SCOPE = "assistant:write"
_FENCE_LINE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)", re.MULTILINE)

# Builds the edit-path reply an answer falls back to: (first message id or None, the text it shows, whether the
# text it is given still needs making inert).
HandOver = Callable[[str | None, str, bool], StreamingReply]


class StreamStarts:
    """Tier 2 for one workspace: at most `limit` chat.startStream calls in any `window_s`, and as many
    chat.stopStream. A start is taken only if its stop will fit too (`try_take`); each stop is counted (`spend`).
    The same public verbs as `EditBudget`, so a budget shared across processes can replace it alike."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._starts: deque[float] = deque()
        self._stops: deque[float] = deque()
        self._open = 0  # streams started and not yet stopped: each holds a stop
        self._paused_until = 0.0

    def _prune(self, now: float) -> None:
        for times in (self._starts, self._stops):
            while times and times[0] <= now - self._window_s:
                times.popleft()

    def try_take(self) -> bool:
        """A stream may start now (and is counted), its stop reserved."""
        now = self._clock()
        self._prune(now)
        if self.paused or len(self._starts) >= self._limit or len(self._stops) + self._open >= self._limit:
            return False
        self._starts.append(now)
        self._open += 1
        return True

    def spend(self) -> None:
        """A stop is sent (stops always go: they deliver a finished answer)."""
        now = self._clock()
        self._prune(now)
        self._stops.append(now)
        self._open = max(0, self._open - 1)

    def release(self) -> None:
        """A started stream will not be stopped (it expired, or never started): its reserved stop is free again."""
        self._open = max(0, self._open - 1)

    def pause(self, seconds: float) -> None:
        """Slack answered 429: no stream starts in this workspace for `seconds`."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    @property
    def exhausted(self) -> bool:
        now = self._clock()
        self._prune(now)
        return self.paused or len(self._starts) >= self._limit or len(self._stops) + self._open >= self._limit


class NativeStreaming:
    """What one workspace allows of native streaming: its start/stop budget (Tier 2), its append budget (Tier 4),
    and whether it refused the feature lately."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.starts = StreamStarts(fmt.STREAM_STARTS_PER_MINUTE, fmt.STREAM_RATE_WINDOW_S, clock)
        self.appends = EditBudget(fmt.STREAM_APPENDS_PER_MINUTE, fmt.STREAM_APPEND_BURST, clock)
        self._refused_until = 0.0
        self._works = False  # a stream started here since the last refusal
        self._probe: asyncio.Event | None = None  # set when the first start of an unknown workspace has its answer

    async def settled(self) -> None:
        """Until the workspace is known to stream, one start asks and the others wait for its answer, so that a
        workspace without the feature refuses once, not once per answer of a crowd."""
        if self._works:
            return
        if self._probe is None:
            self._probe = asyncio.Event()  # this caller asks; it calls `answered` when it knows
            return
        await self._probe.wait()

    def answered(self, *, works: bool) -> None:
        self._works = self._works or works
        if self._probe is not None:
            self._probe.set()
            self._probe = None

    def refuse(self) -> None:
        self._refused_until = self._clock() + fmt.STREAM_REFUSAL_RETRY_S
        self._works = False

    @property
    def refused(self) -> bool:
        return self._clock() < self._refused_until


class NativeStreamReply:
    """One answer in a native stream, with `StreamingReply`'s verbs (set_status, append, text, finish, replace,
    aclose); when the stream can't go on, the rest of the answer is handed to the edit path (`hand_over`)."""

    def __init__(self, thread: SlackThread, stream_ts: str, native: NativeStreaming, hand_over: HandOver, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._thread = thread
        self._ts = stream_ts
        self._native = native
        self._hand_over = hand_over
        self._clock = clock
        self._text = ""  # as the model wrote it
        self._shown = ""  # what the stream shows: a prefix of the inert text
        self._rest: StreamingReply | None = None  # the edit path, once it has taken over
        self._dirty = asyncio.Event()
        self._next_flush_at = 0.0
        self._lock = asyncio.Lock()  # one call at a time for this stream keeps its appends in order
        self._pump = asyncio.create_task(self._pump_appends(), name="native-stream")

    @classmethod
    async def open(cls, thread: SlackThread, native: NativeStreaming, *, user_id: str, team_id: str,
                   stop_id: str | None, hand_over: HandOver) -> NativeStreamReply | None:
        """A started stream for the answer, or None when the workspace can't have one now (no budget, refused,
        rate limited, Slack failing): the caller then takes the edit path."""
        await native.settled()
        if native.refused or not native.starts.try_take():
            native.answered(works=False)
            return None
        try:
            stream_ts = await thread.start_stream(user_id, team_id)
        except DELIVERY_ERRORS as error:
            native.answered(works=False)
            native.starts.release()
            if isinstance(error, RateLimited) and error.retry_after_s >= fmt.STREAM_TIER_PAUSE_MIN_S:
                native.starts.pause(error.retry_after_s)  # the workspace's Tier 2, not one channel's posting burst
            elif isinstance(error, SlackApiError) and error.response.get("error") in WORKSPACE_REFUSALS:
                native.refuse()
                log.info("Slack: native streaming refused (%s); answers are edited in for %.0f s, then it is "
                         "tried again", error_code(error), fmt.STREAM_REFUSAL_RETRY_S)
            else:
                log.warning("Slack: could not start a stream in %s (%s); editing instead", thread.channel,
                            error_code(error))
            return None
        native.answered(works=True)
        if stop_id is not None:
            try:
                await thread.post_privately(user_id, fmt.STREAM_STOP_TEXT, Buttons(stop_id=stop_id))
            except DELIVERY_ERRORS as error:  # the answer streams all the same; only the early Stop is missing
                log.warning("Slack: the Stop button did not reach %s (%s)", user_id, error_code(error))
        return cls(thread, stream_ts, native, hand_over)

    @property
    def message_ids(self) -> list[str]:
        return self._rest.message_ids if self._rest is not None else [self._ts]

    @property
    def text(self) -> str:
        """The text streamed so far (before it is made inert)."""
        return self._text

    def set_status(self, text: str) -> None:
        """A stream only grows, so a status can't come and go in it; the edit path, once in charge, shows them."""
        if self._rest is not None:
            self._rest.set_status(text)

    def append(self, delta: str) -> None:
        if not delta:
            return
        self._text += delta
        if self._rest is not None:
            self._rest.append(delta)
        else:
            self._dirty.set()

    async def finish(self, final_text: str, *, again_id: str | None = None) -> None:
        """End with exactly `final_text` (already inert) shown, Again under its last message when given."""
        await self._stop_pump()
        if self._rest is not None:
            await self._rest.finish(final_text, again_id=again_id)
            return
        if not final_text.startswith(self._shown):  # the stream can't take text back: edit it once it is over
            await self._stop_then_hand_over(final_text, again_id, replace=False)
            return
        head, tail = self._cut(final_text)
        last = Buttons(again_id=again_id) if again_id is not None and not tail else NO_BUTTONS
        if not await self._stop(head[len(self._shown):], last):
            await self._take_over(self._shown).finish(final_text, again_id=again_id)
            return
        if tail:  # the rest of a long answer: new messages, split like the edit path's
            await self._hand_over(None, "", False).finish(tail, again_id=again_id)

    async def replace(self, text: str, *, again_id: str | None = None) -> None:
        """End with only `text` (already inert: an error) shown, with Again if given."""
        await self._stop_pump()
        if self._rest is not None:
            await self._rest.replace(text, again_id=again_id)
        elif self._shown:
            await self._stop_then_hand_over(text, again_id, replace=True)
        elif not await self._stop(text, Buttons(again_id=again_id) if again_id is not None else NO_BUTTONS):
            await self._take_over("").replace(text, again_id=again_id)

    async def aclose(self) -> None:
        await self._stop_pump()
        if self._rest is not None:
            await self._rest.aclose()

    # --- the stream ---------------------------------------------------------------------------------------

    def _pending(self) -> str:
        """Inert text the stream does not show yet, up to what one streamed message may hold."""
        prepared = fmt.escape_markdown(self._text)
        horizon = fmt.STREAM_MAX_CHARS - fmt.STREAM_CLOSING_RESERVE_CHARS
        if not prepared.startswith(self._shown) or len(self._shown) >= horizon:
            return ""
        return prepared[len(self._shown):horizon]

    async def _pump_appends(self) -> None:
        """Once a flush interval at most, what arrived goes out in one append, as the append budget allows."""
        while self._rest is None:
            await self._dirty.wait()
            delay = self._next_flush_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)  # coalesce what arrives meanwhile
            self._dirty.clear()
            addition = self._pending()
            if not addition:
                continue
            self._next_flush_at = self._clock() + fmt.STREAM_FLUSH_INTERVAL_S
            if not self._native.appends.try_take():
                self._dirty.set()  # the workspace's appends are spent for now: try again next interval
                continue
            try:
                async with self._lock:
                    await self._thread.append_stream(self._ts, addition)
                    self._shown += addition
            except RateLimited as limited:
                self._native.appends.pause(limited.retry_after_s)
                self._next_flush_at = self._clock() + max(limited.retry_after_s, fmt.STREAM_FLUSH_INTERVAL_S)
                self._dirty.set()
            except SlackApiError as error:
                if error.response.get("error") == EXPIRED:
                    log.info("Slack: a stream in %s expired; its answer goes on by edits", self._thread.channel)
                    self._native.starts.release()
                    self._take_over(self._shown)
                    return
                log.warning("Slack: an append failed (%s); will try again", error_code(error))
                self._dirty.set()
            except DELIVERY_ERRORS as error:  # an append is disposable; the stop carries everything
                log.warning("Slack: an append failed (%s); will try again", error_code(error))
                self._dirty.set()

    async def _stop_pump(self) -> None:
        # Taking the lock first lets an append already on the wire finish and be counted as shown.
        async with self._lock:
            if not self._pump.done():
                self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    async def _stop(self, markdown: str, buttons: Buttons) -> bool:
        """Stop the stream with `markdown` added and `buttons` under it; False if the stream would not stop."""
        self._native.starts.spend()
        try:
            await self._thread.stop_stream(self._ts, markdown, buttons)
        except DELIVERY_ERRORS as error:
            log.warning("Slack: a stream did not stop (%s); the answer is edited in instead", error_code(error))
            return False
        self._shown += markdown
        return True

    async def _stop_then_hand_over(self, text: str, again_id: str | None, *, replace: bool) -> None:
        """The stream shows text the answer no longer starts with: end it as it is, then edit it into `text`."""
        await self._stop("", NO_BUTTONS)
        self._take_over(self._shown)
        assert self._rest is not None
        if replace:
            await self._rest.replace(text, again_id=again_id)
        else:
            await self._rest.finish(text, again_id=again_id)

    def _take_over(self, shown: str) -> StreamingReply:
        """From now on the edit path renders this answer, starting from the stream's message as it stands."""
        rest = self._hand_over(self._ts, shown, True)
        rest.append(self._text)
        self._rest = rest
        return rest

    def _cut(self, final_text: str) -> tuple[str, str]:
        """The final text of the streamed message, and what follows it in new messages ("" if nothing does)."""
        if len(final_text) <= fmt.STREAM_MAX_CHARS:
            return final_text, ""
        chunks, points = split_from(final_text, fmt.STREAM_MAX_CHARS)
        if points and chunks[0].startswith(self._shown):
            return chunks[0], points[0].reopen + final_text[points[0].offset:]
        # The best cut falls inside what the stream already shows: it ends where the stream stands.
        head = close_open_fence(self._shown)
        reopen = _open_fence(self._shown)
        rest = final_text[len(self._shown):]
        return head, (reopen + "\n" + rest.lstrip("\n")) if reopen else rest.lstrip("\n")


def _open_fence(text: str) -> str:
    """The fence line (marker and language) of a code block left open at the end of `text`, or ""."""
    open_line = ""
    open_marker = ""
    for match in _FENCE_LINE.finditer(text):
        marker, info = match.group(1), match.group(2)
        if not open_marker:
            open_marker, open_line = marker, marker + info
        elif marker[0] == open_marker[0] and len(marker) >= len(open_marker) and not info:
            open_marker = open_line = ""
    return open_line
