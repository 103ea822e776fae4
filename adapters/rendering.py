"""Post once, then edit on a timer: the streaming renderer shared by the Slack and Discord adapters.

Why a timer: chat APIs rate-limit edits (Slack: Tier 3 per workspace; Discord: ~5 per 5 s per
channel), while models emit tokens many times a second. Deltas go into a buffer; one task per reply
renders the latest text at most once per `edit_interval_s`, skips unchanged text, honours
Retry-After, and never lets a failed interim edit stall the model. The final text is always
delivered and never waits behind a rate limit: it is edited in while the budget allows, otherwise
posted as new messages that take the old ones' place (which are then removed).

Buttons (for a target that shows them, `ButtonTarget`) ride on calls that happen anyway: Stop on the message the
answer is being written into (the last one, so it moves on when the answer overflows into a new message, in the
same round of edits), and Again on the last message of the finished answer, put there by the final edit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from bot.text import SplitPoint, split_from, split_message

log = logging.getLogger(__name__)

CURSOR = " ▍"


class RateLimited(Exception):
    """Raised by a target whose platform said "slow down" and whose SDK did not already wait."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited for {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class MessageTarget(Protocol):
    """Where a reply's messages live (a Slack thread, a Discord interaction)."""

    async def post(self, text: str) -> str:
        """Send a new message; return its id."""

    async def edit(self, message_id: str, text: str) -> None:
        """Replace a message's text."""

    async def delete(self, message_id: str) -> None:
        """Remove a continuation message the final text no longer needs."""


@dataclass(frozen=True)
class Buttons:
    """The buttons under one message: Stop while its answer is being written, Again once it is finished (each
    holds the id its press hands to the core)."""

    stop_id: str | None = None
    again_id: str | None = None


NO_BUTTONS = Buttons()


class ButtonTarget(MessageTarget, Protocol):
    """A target whose messages can carry buttons; each post and edit says which (an edit replaces them)."""

    async def post(self, text: str, buttons: Buttons = NO_BUTTONS) -> str:
        """Send a new message with `buttons`; return its id."""

    async def edit(self, message_id: str, text: str, buttons: Buttons = NO_BUTTONS) -> None:
        """Replace a message's text and buttons."""


class _WithoutButtons:
    """A plain `MessageTarget` as the renderer talks to every target (the buttons it is handed are all none)."""

    def __init__(self, target: MessageTarget) -> None:
        self._target = target

    async def post(self, text: str, buttons: Buttons = NO_BUTTONS) -> str:
        return await self._target.post(text)

    async def edit(self, message_id: str, text: str, buttons: Buttons = NO_BUTTONS) -> None:
        await self._target.edit(message_id, text)

    async def delete(self, message_id: str) -> None:
        await self._target.delete(message_id)


class EditBudget:
    """A token bucket for interim edits shared by every reply in one rate-limit scope (a Slack workspace).

    Interim edits take a token or are skipped; final edits always go but are counted, so a crowd of
    finished answers spends the budget first and progress edits wait. When the bucket is overdrawn, or
    the platform said "slow down" (`pause`), `exhausted` tells the renderer to post a final answer as a
    new message instead of editing.
    """

    def __init__(self, per_minute: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate_per_s = per_minute / 60.0
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._updated = clock()
        self._paused_until = 0.0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate_per_s)
        self._updated = now

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1 and not self.paused:
            self._tokens -= 1
            return True
        return False

    async def take_soon(self) -> bool:
        """`try_take` for a caller that may wait a moment (a budget kept elsewhere looks there first)."""
        return self.try_take()

    def spend(self) -> None:
        self._refill()
        self._tokens -= 1

    def pause(self, seconds: float) -> None:
        """The platform answered 429: no edit in this scope is worth trying for `seconds`."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    @property
    def paused(self) -> bool:
        return self._clock() < self._paused_until

    @property
    def exhausted(self) -> bool:
        self._refill()
        return self._tokens < 0 or self.paused

    @property
    def left(self) -> float:
        """Interim edits that may go now (below zero: overdrawn by final edits); read by the metrics."""
        self._refill()
        return self._tokens


@dataclass(frozen=True)
class RenderLimits:
    max_chars: int
    edit_interval_s: float


class StreamingReply:
    """One answer rendered into one or more messages; the first may already exist (a placeholder) or not.

    With `stop_id` the target must be a `ButtonTarget`: the message being written carries Stop (a placeholder
    given as `first_message_id` was posted with it), and `finish`/`replace` may put Again on the last message.
    """

    def __init__(
        self,
        target: MessageTarget,
        first_message_id: str | None,
        limits: RenderLimits,
        *,
        budget: EditBudget | None = None,
        final_edit_prepaid: bool = False,
        prepare_text: Callable[[str], str] = lambda text: text,
        shown_text: str = "",
        stop_id: str | None = None,
        on_first_message: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Only a caller that shows buttons passes `stop_id`, and it passes a ButtonTarget (a Protocol can't be
        # checked at run time: a plain target's post() would simply not take the buttons).
        self._target: ButtonTarget = cast(ButtonTarget, target) if stop_id is not None else _WithoutButtons(target)
        self._stop = Buttons(stop_id=stop_id) if stop_id is not None else NO_BUTTONS
        self._limits = limits
        self._budget = budget
        self._final_edit_prepaid = final_edit_prepaid  # its token was taken when the placeholder was posted
        self._prepare = prepare_text
        self._on_first_message = on_first_message  # told the id of the answer's first message once it is posted
        self._clock = clock
        self._message_ids = [first_message_id] if first_message_id is not None else []
        self._shown = [shown_text] if first_message_id is not None else []
        self._buttons = [self._stop] if first_message_id is not None else []  # what each message carries now
        self._status = ""
        self._text = ""
        # The streamed text's chunks that are full stay as they are while more arrives: only the text after
        # them (from `_settled_at`) is split again at each edit, so a long answer costs no more per edit.
        self._settled: list[str] = []
        self._settled_at: SplitPoint | None = None
        self._settled_source = ""  # the prepared text the settled chunks were cut from
        self._dirty = asyncio.Event()
        self._next_edit_at = 0.0  # when the pump may try again (an edit the budget refused counts: it retries later)
        self._edit_allowed_at = 0.0  # when the platform takes this reply's next edit: an interval after the last one
        self._lock = asyncio.Lock()  # one platform call at a time per reply keeps edits in order
        self._pump = asyncio.create_task(self._pump_edits(), name="streaming-reply")
        self.edits = 0
        self.posts = 0

    @property
    def message_ids(self) -> list[str]:
        return list(self._message_ids)

    @property
    def text(self) -> str:
        """The text streamed so far (before `prepare_text`): what an interrupted answer still has to show."""
        return self._text

    def set_status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self._dirty.set()

    def append(self, delta: str) -> None:
        if delta:
            self._text += delta
            self._dirty.set()

    async def finish(self, final_text: str, *, again_id: str | None = None) -> None:
        """Stop streaming and make the messages say exactly `final_text` (already in platform form); the last one
        carries Again when `again_id` is given, and none carries Stop any more."""
        await self._stop_pump()
        chunks = split_message(final_text, self._limits.max_chars)
        await self._settle(chunks, _final_buttons(len(chunks), again_id))

    async def replace(self, text: str, *, again_id: str | None = None) -> None:
        """Stop streaming and show `text` (an error, a caption) in the first message only (with Again, if given)."""
        await self._stop_pump()
        await self._settle([text], _final_buttons(1, again_id))

    async def _settle(self, chunks: list[str], buttons: list[Buttons]) -> None:
        async with self._lock:
            for index, chunk in enumerate(chunks):
                if index >= len(self._message_ids):
                    await self._post(chunk, buttons[index])
                elif (self._shown[index], self._buttons[index]) != (chunk, buttons[index]) and \
                        not await self._final_edit(index, chunk, buttons[index]):
                    await self._repost_from(index, chunks, buttons)
                    return
            await self._delete(self._message_ids[len(chunks):])
            del self._message_ids[len(chunks):], self._shown[len(chunks):], self._buttons[len(chunks):]

    async def aclose(self) -> None:
        await self._stop_pump()

    async def _stop_pump(self) -> None:
        # Taking the lock first lets an edit or post already on the wire finish: cancelling it midway
        # could leave a message the platform created but we never learnt about.
        async with self._lock:
            if not self._pump.done():
                self._pump.cancel()
        await asyncio.gather(self._pump, return_exceptions=True)

    def _interim_chunks(self) -> list[str]:
        if not self._text:
            return [self._status] if self._status else []
        prepared = self._prepare(self._text)
        if self._settled_at is not None and not prepared.startswith(self._settled_source):
            self._settled, self._settled_at, self._settled_source = [], None, ""  # prepare_text is not piecewise
        tail, points = split_from(prepared + CURSOR, self._limits.max_chars, self._settled_at)
        chunks = self._settled + tail
        # A chunk is settled once the text after it begins inside what was streamed (not in the cursor).
        settle = [index for index, point in enumerate(points) if point.offset <= len(prepared)]
        if settle:
            last = settle[-1]
            self._settled = self._settled + tail[: last + 1]
            self._settled_at = points[last]
            self._settled_source = prepared[: points[last].offset]
        return chunks

    async def _pump_edits(self) -> None:
        while True:
            await self._dirty.wait()
            delay = self._next_edit_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)  # coalesce: everything that arrives meanwhile goes in one edit
            self._dirty.clear()
            chunks = self._interim_chunks()
            buttons = self._interim_buttons(len(chunks))
            changed = any(shown != (chunk, button) for chunk, button, shown
                          in zip(chunks, buttons, zip(self._shown, self._buttons, strict=True), strict=False))
            if not changed and len(chunks) <= len(self._shown):
                continue
            if self._budget is not None and not self._budget.try_take():
                self._next_edit_at = self._clock() + self._limits.edit_interval_s  # nothing was sent
                self._dirty.set()
                continue
            try:
                async with self._lock:
                    await self._apply_interim(chunks, buttons)
                self._edited(wait_s=self._limits.edit_interval_s)
            except RateLimited as limited:
                self._edited(wait_s=max(limited.retry_after_s, self._limits.edit_interval_s))
                if self._budget is not None:
                    self._budget.pause(limited.retry_after_s)  # the limit is the scope's, not just this reply's
                self._dirty.set()
            except Exception as error:  # an interim edit is disposable; the final one is not
                log.warning("Interim edit failed (%s); will try again", type(error).__name__)
                self._edited(wait_s=self._limits.edit_interval_s)

    def _edited(self, *, wait_s: float) -> None:
        """An edit went to the platform: the next one, interim or final, waits `wait_s`."""
        self._next_edit_at = self._edit_allowed_at = self._clock() + wait_s

    def _interim_buttons(self, count: int) -> list[Buttons]:
        """Stop on the message being written (the last), nothing on those already full."""
        return [NO_BUTTONS] * (count - 1) + [self._stop] if count else []

    async def _apply_interim(self, chunks: list[str], buttons: list[Buttons]) -> None:
        for index, (chunk, button) in enumerate(zip(chunks, buttons, strict=True)):
            if index < len(self._message_ids):
                if (self._shown[index], self._buttons[index]) != (chunk, button):
                    await self._target.edit(self._message_ids[index], chunk, button)
                    self._shown[index], self._buttons[index] = chunk, button
                    self.edits += 1
            else:
                await self._post(chunk, button)

    async def _post(self, text: str, buttons: Buttons) -> None:
        message_id = await self._target.post(text, buttons)
        if not self._message_ids:
            self._on_first_message(message_id)
        self._message_ids.append(message_id)
        self._shown.append(text)
        self._buttons.append(buttons)
        self.posts += 1

    async def _final_edit(self, index: int, text: str, buttons: Buttons) -> bool:
        """Edit message `index` to its final text if that can happen now; False means "post it instead"."""
        if self._budget is not None:
            if self._budget.paused or (self._budget.exhausted and not self._final_edit_prepaid):
                return False  # the scope's edits are spent: a new message arrives now, an edit would queue
            if self._final_edit_prepaid:
                self._final_edit_prepaid = False
            else:
                self._budget.spend()
        delay = self._edit_allowed_at - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)  # the final edit too keeps to one edit per interval per message
        try:
            await self._target.edit(self._message_ids[index], text, buttons)
        except RateLimited as limited:
            log.info("Final edit rate limited for %.1fs; posting the text as a new message", limited.retry_after_s)
            if self._budget is not None:
                self._budget.pause(limited.retry_after_s)
            return False
        except Exception as error:
            log.warning("Final edit failed (%s); posting the text as a new message", type(error).__name__)
            return False
        self._shown[index], self._buttons[index] = text, buttons
        self.edits += 1
        return True

    async def _repost_from(self, index: int, chunks: list[str], buttons: list[Buttons]) -> None:
        """Post `chunks[index:]` as new messages (keeping their order), then remove the ones they replace."""
        stale = self._message_ids[index:]
        del self._message_ids[index:], self._shown[index:], self._buttons[index:]
        for chunk, button in zip(chunks[index:], buttons[index:], strict=True):
            await self._post(chunk, button)
        await self._delete(stale)

    async def _delete(self, message_ids: list[str]) -> None:
        """Leftovers (a cursor's extra message, a stale draft) go; failing that, they stay, logged."""
        for message_id in message_ids:
            try:
                await self._target.delete(message_id)
            except Exception as error:
                log.warning("Could not delete a leftover message (%s)", type(error).__name__)


def _final_buttons(count: int, again_id: str | None) -> list[Buttons]:
    """A finished answer's buttons: Again (if it has one) on its last message, no Stop anywhere."""
    last = Buttons(again_id=again_id) if again_id is not None else NO_BUTTONS
    return [NO_BUTTONS] * (count - 1) + [last]
