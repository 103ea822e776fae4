"""Owns each prediction's life on Replicate: create (with safe retries), stream or poll, download, cancel.

`replicate.async_run` / `async_stream` hide the prediction id (replicate/run.py, replicate/stream.py), so a
timeout or shutdown would leave the prediction running and billed. We create predictions ourselves and cancel
whatever we give up on. Creates are retried only when nothing can have been created: a 429 (after the wait the
API asks for) or a connection that never opened. A 5xx or timeout after sending is never retried:
the prediction may exist, so we look for it among our newest predictions (same model, same input,
made just now: `bot.orphans`) and follow it as if the create had answered. Found or not, nothing is paid twice.
A create cut off by the deadline or a shutdown is looked for the same way, and cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction

from bot.downloads import OutputFetcher, OutputRefused
from bot.errors import (
    EmptyOutput,
    FailureKind,
    PredictionCancelled,
    PredictionError,
    PredictionTimedOut,
    ReplicateUnavailable,
    describe_failure,
)
from bot.orphans import OwnedPredictions
from bot.replicate_client import last_retry_after_s
from bot.replicate_errors import api_error, model_error, retry_after_from_detail, stream_error_detail
from bot.replies import Image, Phase, RunInfo, Status, TextDelta, TextDone
from bot.sse import EventKind, stream_events
from bot.tasks import BackgroundTasks

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})
# Failures of the connection itself, before any byte of the request left: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# `Prefer: wait` ends this long before the deadline, so the answer (or the prediction's id) arrives in time.
CREATE_WAIT_MARGIN_S = 0.5
MAX_OUTPUT_FILES = 10  # a Discord message takes 10 attachments; no image model we know makes more per run
ORPHAN_SEARCHES = 2
ORPHAN_SEARCH_INTERVAL_S = 1.0
METRICS_LOOKUP_TIMEOUT_S = 5.0  # the spend estimate waits this long for a finished prediction's metrics
# Metrics lookups run a few at a time: answers that finish together would otherwise send a burst of GETs whose
# replies all land in one turn of the event loop, delaying everything else for the sake of bookkeeping.
METRICS_LOOKUPS_AT_ONCE = 4
_Number = TypeVar("_Number", int, float)


@dataclass(frozen=True)
class RunPolicy:
    """Timings and retry bounds for predictions; defaults suit production, tests shrink them."""

    timeout_s: float = 300.0
    create_attempts: int = 4
    max_retry_wait_s: float = 30.0
    base_backoff_s: float = 1.0
    poll_interval_s: float = 1.0
    create_wait_s: int = 5  # `Prefer: wait=N` for image creates: fast models finish in one request
    cancel_timeout_s: float = 10.0
    # A finished prediction is priced this long after its answer: answers finishing together are all posted
    # before any of them is priced (`bin/bench`, N=200: the last answer about 0.01× of the model time sooner).
    metrics_lookup_delay_s: float = 1.0


@dataclass(frozen=True)
class ImagesResult:
    images: tuple[Image, ...]
    run: RunInfo


class PredictionRunner:
    """Runs one model call per method call; every exit path leaves nothing running on Replicate."""

    def __init__(
        self,
        client: replicate.Client,
        outputs: OutputFetcher,
        policy: RunPolicy = RunPolicy(),
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._outputs = outputs
        self._policy = policy
        self._sleep = sleep
        self._jitter = jitter
        self._cancels = BackgroundTasks("cancel")
        self._owned = OwnedPredictions()
        self._cancels_finish_by: float | None = None
        self._metrics_lookups = asyncio.Semaphore(METRICS_LOOKUPS_AT_ONCE)
        self._stopping = asyncio.Event()

    async def stream_text(
        self, model: str, model_input: dict[str, Any], *, on_created: Callable[[str], None] = lambda _: None
    ) -> AsyncIterator[Status | TextDelta | TextDone]:
        """Yield status and text as the model writes; end with exactly one `TextDone` or raise.

        `on_created` gets the prediction id as soon as it exists, so whoever cancels the run can still name it.
        """
        async with self._prediction(model, model_input) as run:
            # A streamed create answers at once (no `Prefer: wait`), so "starting" follows it: the adapters edit at
            # most once a second per message, and that cadence then starts with the prediction, which a final
            # edit never waits behind for long. (Image creates wait for the picture: their status goes first.)
            prediction = await self._create(run, stream=True, wait=None)
            on_created(prediction.id)
            yield Status(Phase.STARTING)
            async for event in self._text_of(run, model, prediction):
                yield event

    async def follow_text(self, model: str, prediction_id: str) -> AsyncIterator[Status | TextDelta | TextDone]:
        """`stream_text` for a prediction made before (by a process that died): its text from the start, read
        from its stream (which replays what was written) or, once it ended, from the prediction itself."""
        async with self._prediction(model, {}) as run:
            prediction = await self._get(run, model, prediction_id)
            yield _status_of(prediction)
            async for event in self._text_of(run, model, prediction):
                yield event

    async def _text_of(self, run: _Run, model: str, prediction: Prediction) -> AsyncIterator[TextDelta | TextDone]:
        parts: list[str] = []
        async for piece in self._text_pieces(run.client, prediction, run.tracker):
            parts.append(piece)
            yield TextDelta(piece)
        text = "".join(parts)
        if not text.strip():
            raise EmptyOutput(describe_failure(FailureKind.EMPTY_OUTPUT, model=model), prediction_id=prediction.id)
        yield TextDone(text=text, run=_run_info(model, prediction))

    async def generate_images(
        self, model: str, model_input: dict[str, Any], *, on_created: Callable[[str], None] = lambda _: None
    ) -> AsyncIterator[Status | ImagesResult]:
        """Yield status while the model works; end with one `ImagesResult` holding every image's bytes."""
        async with self._prediction(model, model_input) as run:
            yield Status(Phase.STARTING)  # at once: a create that waits for the image takes seconds
            prediction = await self._create(run, stream=False, wait=self._create_wait_s(run.deadline))
            on_created(prediction.id)
            async for event in self._images_of(run, model, prediction):
                yield event

    async def follow_images(self, model: str, prediction_id: str) -> AsyncIterator[Status | ImagesResult]:
        """`generate_images` for a prediction made before (by a process that died)."""
        async with self._prediction(model, {}) as run:
            prediction = await self._get(run, model, prediction_id)
            async for event in self._images_of(run, model, prediction):
                yield event

    async def _get(self, run: _Run, model: str, prediction_id: str) -> Prediction:
        """An existing prediction, now owned by this frame (cancelled on every way out unless it ended)."""
        try:
            prediction = await run.client.predictions.async_get(prediction_id)
        except ReplicateError as error:
            raise api_error(model, error, prediction_id) from error
        except httpx.HTTPError as error:
            raise ReplicateUnavailable(describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error,
                                       prediction_id=prediction_id) from error
        self._owned.remember(prediction.id)
        run.tracker.prediction = prediction
        return prediction

    async def _images_of(self, run: _Run, model: str, prediction: Prediction) -> AsyncIterator[Status | ImagesResult]:
        async for status in self._until_terminal(prediction):
            yield status
        run.tracker.finished = True
        self._raise_for_outcome(model, prediction)
        urls = _output_urls(prediction.output)
        if not urls:
            raise EmptyOutput(describe_failure(FailureKind.EMPTY_OUTPUT, model=model), prediction_id=prediction.id)
        if len(urls) > MAX_OUTPUT_FILES:
            log.warning("Prediction %s returned %d outputs; keeping the first %d",
                        prediction.id, len(urls), MAX_OUTPUT_FILES)
        images = await asyncio.gather(*(self._download(url, i) for i, url in enumerate(urls[:MAX_OUTPUT_FILES])))
        yield ImagesResult(images=tuple(images), run=_run_info(model, prediction, image_count=len(images)))

    @contextlib.asynccontextmanager
    async def _prediction(self, model: str, model_input: dict[str, Any]) -> AsyncIterator[_Run]:
        """One prediction's frame, the same for every kind: the client, the deadline, and on every way out
        (an answer, an error, the deadline, the consumer leaving, shutdown) nothing left running on Replicate."""
        tracker = _PredictionTracker(model, model_input)
        deadline = asyncio.get_running_loop().time() + self._policy.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                yield _Run(self._client, tracker, deadline)
        except TimeoutError as error:
            raise self._timed_out(tracker, model, error) from error
        finally:
            await self._cancel_if_running(tracker)

    async def with_metrics(self, run: RunInfo) -> RunInfo:
        """`run` with the finished prediction's billing metrics, looked up when the run itself did not carry them.

        A streamed answer ends with the stream, which carries no metrics; one GET (`metrics_lookup_delay_s` after
        the answer went out) brings them, so the spend estimate counts tokens and time as Replicate bills them.
        Bounded; on any failure, or at shutdown, the run is returned as it was (the estimate then falls back to
        what is known).
        """
        if run.prediction_id is None or run.predict_time_s is not None:
            return run
        if not await self._wait_unless_stopping(self._policy.metrics_lookup_delay_s):
            return run  # shutting down: the estimate makes do with what it has
        try:
            async with self._metrics_lookups, asyncio.timeout(METRICS_LOOKUP_TIMEOUT_S):
                prediction = await self._client.predictions.async_get(run.prediction_id)
        except (ReplicateError, httpx.HTTPError, TimeoutError) as error:
            log.debug("No metrics for prediction %s: %r", run.prediction_id, error)
            return run
        found = _run_info(run.model, prediction, image_count=run.image_count)
        return found if found.predict_time_s is not None else run

    def stop_waiting(self) -> None:
        """Shutdown began: metrics lookups still waiting their turn give up (`with_metrics`)."""
        self._stopping.set()

    async def _wait_unless_stopping(self, seconds: float) -> bool:
        """Wait `seconds`; False, at once, if shutdown began (or begins meanwhile)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Wait for cancels still on their way to Replicate (shutdown), up to `timeout_s`."""
        await self._cancels.wait(timeout_s)

    # --- creating -------------------------------------------------------------------------------

    def _create_wait_s(self, deadline: float) -> int | None:
        """`Prefer: wait=N` ending before the deadline (whole seconds, as the header takes); None: don't wait."""
        left = deadline - asyncio.get_running_loop().time() - CREATE_WAIT_MARGIN_S
        wait = min(self._policy.create_wait_s, math.floor(left))
        return wait if wait >= 1 else None

    async def _create(self, run: _Run, *, stream: bool, wait: int | None) -> Prediction:
        """Create the prediction; on return `tracker.prediction` is it. If this is cut off (deadline, shutdown)
        while a request is out, `tracker.create_sent_at` stays set, for `_cancel_if_running` to go looking."""
        client, tracker = run.client, run.tracker
        model, model_input = tracker.model, tracker.model_input
        attempt = 0
        while True:
            attempt += 1
            last_retry_after_s.set(None)
            sent_at = datetime.now(UTC)
            tracker.create_sent_at = sent_at
            try:
                prediction = await self._send_create(client, model, model_input, stream=stream, wait=wait)
                tracker.prediction, tracker.create_sent_at = prediction, None
                return prediction
            except ReplicateError as error:
                tracker.create_sent_at = None  # answered: whatever it made is found below or never was

                may_exist = (error.status or 500) >= 500
                if may_exist and (orphan := await self._owned.find_orphan(client, model, model_input, sent_at)):
                    tracker.prediction = orphan
                    return orphan
                if error.status != 429 or attempt >= self._policy.create_attempts:
                    raise api_error(model, error) from error
                delay = self._retry_delay(attempt, last_retry_after_s.get() or retry_after_from_detail(error.detail))
                if delay is None:
                    raise api_error(model, error) from error
                log.warning(
                    "Replicate throttled a create for %s; retrying in %.1fs (attempt %d)", model, delay, attempt
                )
            except _NOT_SENT as error:
                tracker.create_sent_at = None  # nothing left this machine: nothing can have been made
                if attempt >= self._policy.create_attempts:
                    raise ReplicateUnavailable(
                        describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error
                    ) from error
                delay = self._retry_delay(attempt, None) or self._policy.base_backoff_s
                log.warning("Could not connect to Replicate (%s); retrying in %.1fs", type(error).__name__, delay)
            except httpx.HTTPError as error:
                # The request may have reached Replicate and created a prediction: retrying could pay twice.
                tracker.create_sent_at = None
                if orphan := await self._owned.find_orphan(client, model, model_input, sent_at):
                    tracker.prediction = orphan
                    return orphan
                log.error("Create for %s failed after sending (%s); not retrying", model, type(error).__name__)
                raise ReplicateUnavailable(describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error) from error
            await self._sleep(delay)

    async def _send_create(
        self, client: replicate.Client, model: str, model_input: dict[str, Any], *, stream: bool, wait: int | None
    ) -> Prediction:
        name, _, version = model.partition(":")
        extra: dict[str, Any] = {"stream": True} if stream else {}
        if wait:
            extra["wait"] = wait
        if version:
            prediction = await client.predictions.async_create(version=version, input=model_input, **extra)
        else:
            prediction = await client.models.predictions.async_create(model=name, input=model_input, **extra)
        self._owned.remember(prediction.id)
        return prediction

    def _retry_delay(self, attempt: int, retry_after_s: float | None) -> float | None:
        """Seconds before the next try, with jitter so a crowd of throttled commands doesn't return at once."""
        base = retry_after_s if retry_after_s is not None else self._policy.base_backoff_s * 2 ** (attempt - 1)
        if base > self._policy.max_retry_wait_s:
            return None
        return base * (1 + 0.25 * self._jitter())

    # --- following a prediction -------------------------------------------------------------------

    async def _text_pieces(
        self, client: replicate.Client, prediction: Prediction, tracker: _PredictionTracker
    ) -> AsyncIterator[str]:
        """Text as the SSE stream delivers it; if the stream breaks, the rest comes from polling."""
        delivered = 0
        if prediction.urls and prediction.urls.get("stream"):
            try:
                async for event in stream_events(client, prediction.urls["stream"]):
                    if event.kind is EventKind.OUTPUT:
                        delivered += len(event.data)
                        yield event.data
                    elif event.kind is EventKind.DONE:
                        tracker.finished = True
                        reason = _done_reason(event.data)
                        if reason == "canceled":
                            raise PredictionCancelled(
                                describe_failure(FailureKind.CANCELLED), prediction_id=prediction.id
                            )
                        if reason == "error":
                            break  # the details come from the prediction itself, below
                        return
            except RuntimeError as error:  # the client raises the SSE `error` event as RuntimeError
                tracker.finished = True
                raise model_error(prediction.model, stream_error_detail(str(error)), prediction.id, error) from error
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.HTTPStatusError,
                    ValueError) as error:  # ValueError: not an event stream, or an event type we don't know
                log.warning("Stream of prediction %s broke (%s); polling instead", prediction.id, type(error).__name__)
        async for _ in self._until_terminal(prediction):
            pass
        tracker.finished = True
        self._raise_for_outcome(prediction.model, prediction)
        remainder = _joined_text(prediction.output)[delivered:]
        if remainder:
            yield remainder

    async def _until_terminal(self, prediction: Prediction) -> AsyncIterator[Status]:
        """Poll until the prediction ends, yielding each new status (phase, progress)."""
        last: Status | None = None
        failed_polls = 0
        while prediction.status not in TERMINAL_STATUSES:
            status = _status_of(prediction)
            if status != last:
                last = status
                yield status
            await self._sleep(self._policy.poll_interval_s)
            try:
                await prediction.async_reload()
                failed_polls = 0
            except ReplicateError as error:
                raise api_error(prediction.model, error, prediction.id) from error
            except httpx.HTTPError as error:
                failed_polls += 1  # a GET is safe to repeat; give up only if Replicate stays away
                if failed_polls >= self._policy.create_attempts:
                    raise ReplicateUnavailable(
                        describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error, prediction_id=prediction.id
                    ) from error

    def _raise_for_outcome(self, model: str, prediction: Prediction) -> None:
        if prediction.status == "failed":
            raise model_error(model, prediction.error or "", prediction.id, None)
        if prediction.status in ("canceled", "aborted"):
            raise PredictionCancelled(describe_failure(FailureKind.CANCELLED), prediction_id=prediction.id)

    async def _download(self, url: str, index: int) -> Image:
        """The output's bytes now, because Replicate deletes outputs after an hour; the URL stays as a fallback."""
        try:
            fetched = await self._outputs.fetch(url)
        except OutputRefused as refused:
            log.warning("Output %d not kept: %s", index, refused.reason)
            return Image(
                data=b"",
                content_type="",
                filename=f"image-{index + 1}",
                url=url if refused.link_is_safe else None,
                problem=f"Image {index + 1} could not be posted: {refused.reason}.",
            )
        fallback_url = None if url.startswith("data:") else url
        return Image(
            data=fetched.data,
            content_type=fetched.content_type,
            filename=f"image-{index + 1}.{fetched.extension}",
            url=fallback_url,
        )

    # --- giving up ------------------------------------------------------------------------------

    def _timed_out(self, tracker: _PredictionTracker, model: str, error: TimeoutError) -> PredictionError:
        if tracker.prediction is None and tracker.create_sent_at is None:
            log.warning("Could not create a prediction of %s within %.0fs", model, self._policy.timeout_s)
            return ReplicateUnavailable(describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error)
        if tracker.prediction is None:  # the create was still out: the prediction is looked for and cancelled
            log.warning("Create for %s still unanswered at %.0fs; looking for its prediction to cancel it",
                        model, self._policy.timeout_s)
            return PredictionTimedOut(
                describe_failure(FailureKind.TIMED_OUT, timeout_s=self._policy.timeout_s), cause=error
            )
        prediction_id = tracker.prediction.id
        log.warning("Prediction %s of %s passed %.0fs; cancelling it", prediction_id, model, self._policy.timeout_s)
        return PredictionTimedOut(
            describe_failure(FailureKind.TIMED_OUT, timeout_s=self._policy.timeout_s),
            cause=error,
            prediction_id=prediction_id,
        )

    async def _cancel_if_running(self, tracker: _PredictionTracker) -> None:
        prediction = tracker.prediction
        if prediction is None and tracker.create_sent_at is not None:
            cancel = self._find_and_cancel(tracker.model, tracker.model_input, tracker.create_sent_at)
        elif prediction is None or tracker.finished or prediction.status in TERMINAL_STATUSES:
            return
        else:
            cancel = self._cancel(prediction.id)
        # Shielded, so a second cancellation of the command (shutdown) cannot stop the cancel itself.
        await asyncio.shield(self._cancels.spawn(cancel, name="cancel-prediction"))

    async def _cancel(self, prediction_id: str) -> None:
        try:
            async with asyncio.timeout(self._cancel_budget_s()):
                await self._client.predictions.async_cancel(prediction_id)
            log.info("Cancelled prediction %s on Replicate", prediction_id)
        except (ReplicateError, httpx.HTTPError, TimeoutError) as error:
            log.error(
                "Could not cancel prediction %s (%s); it may still be running", prediction_id, type(error).__name__
            )

    async def _find_and_cancel(self, model: str, model_input: dict[str, Any], sent_at: datetime) -> None:
        """A create cut off on its way may still have made its prediction: find it among our newest, cancel it.

        The request may reach Replicate a moment after we gave up on it, so a miss is looked at once more.
        """
        client = self._client
        try:
            async with asyncio.timeout(self._cancel_budget_s()):
                for search in range(ORPHAN_SEARCHES):
                    if search:
                        await self._sleep(ORPHAN_SEARCH_INTERVAL_S)
                    orphan = await self._owned.find_orphan(client, model, model_input, sent_at)
                    if orphan is not None:
                        if orphan.status not in TERMINAL_STATUSES:
                            await client.predictions.async_cancel(orphan.id)
                            log.info("Cancelled prediction %s on Replicate (its create was cut off)", orphan.id)
                        return
            log.info("A cut-off create for %s made no prediction that we could find", model)
        except (ReplicateError, httpx.HTTPError, TimeoutError) as error:
            log.error("Could not look for the prediction of a cut-off create for %s (%s); it may be running",
                      model, type(error).__name__)

    async def cancel(self, prediction_id: str) -> None:
        """Cancel a prediction by id (one this process does not follow: a Stop pressed here for another's)."""
        await self._cancel(prediction_id)

    async def find_cut_off_create(self, model: str, model_input: dict[str, Any], sent_at: datetime) -> str | None:
        """The id of the prediction a create sent at `sent_at` made, if it made one (a process died before hearing
        back): found among our newest, as `_find_and_cancel` finds it, to be followed instead of cancelled."""
        client = self._client
        for search in range(ORPHAN_SEARCHES):
            if search:
                await self._sleep(ORPHAN_SEARCH_INTERVAL_S)
            orphan = await self._owned.find_orphan(client, model, model_input, sent_at)
            if orphan is not None:
                return str(orphan.id)
        return None

    async def cancel_cut_off_create(self, model: str, model_input: dict[str, Any], sent_at: datetime) -> None:
        """The prediction a create sent at `sent_at` may have made (a process died before hearing back): found
        among our newest and cancelled, or found to be none."""
        await self._find_and_cancel(model, model_input, sent_at)

    def shorten_cancels(self, finish_by: float) -> None:
        """From now on, cancels give up by `finish_by` (loop time): shutdown must end before the platform kills us."""
        self._cancels_finish_by = finish_by

    def _cancel_budget_s(self) -> float:
        budget = self._policy.cancel_timeout_s
        if self._cancels_finish_by is not None:
            budget = min(budget, self._cancels_finish_by - asyncio.get_running_loop().time())
        return max(budget, 0.0)


@dataclass(frozen=True)
class _Run:
    client: replicate.Client
    tracker: _PredictionTracker
    deadline: float  # loop time


class _PredictionTracker:
    """What `finally` needs to know: which prediction exists, whether it already ended, and whether a create
    was cut off on its way (sent, unanswered), so that the prediction it may have made can still be found."""

    __slots__ = ("create_sent_at", "finished", "model", "model_input", "prediction")

    def __init__(self, model: str, model_input: dict[str, Any]) -> None:
        self.model = model
        self.model_input = model_input
        self.prediction: Prediction | None = None
        self.finished = False
        self.create_sent_at: datetime | None = None  # set while a create request is out and unanswered


def _status_of(prediction: Prediction) -> Status:
    if prediction.status == "starting":
        return Status(Phase.STARTING)
    progress = prediction.progress
    return Status(Phase.RUNNING, progress=progress.percentage if progress else None)


def _run_info(model: str, prediction: Prediction, *, image_count: int | None = None) -> RunInfo:
    metrics = prediction.metrics if isinstance(prediction.metrics, dict) else {}
    return RunInfo(
        model=model,
        prediction_id=prediction.id,
        predict_time_s=_metric(metrics, "predict_time", float),
        input_tokens=_metric(metrics, "input_token_count", int),
        output_tokens=_metric(metrics, "output_token_count", int),
        image_count=image_count,
    )


def _metric(metrics: dict[str, Any], name: str, kind: Callable[[float], _Number]) -> _Number | None:
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return kind(value)


def _output_urls(output: Any) -> list[str]:
    items = output if isinstance(output, list) else [output]
    return [str(item) for item in items if isinstance(item, str) and item.strip()]


def _joined_text(output: Any) -> str:
    if isinstance(output, list):
        return "".join(str(item) for item in output if item is not None)
    return str(output) if output is not None else ""


def _done_reason(data: str) -> str:
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        return ""
    return str(payload.get("reason", "")) if isinstance(payload, dict) else ""
