"""The command core: text in, validated request, reply events out. Platform-neutral.

Adapters call `prepare()` (pure: parse and validate, no network) and acknowledge the command at
once, then iterate `execute()`. The model runs in a task of its own that feeds a queue, so a slow
chat API on the adapter's side can never stall reading the model or skew its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.administration import Administration
from bot.admission import AdmissionClosed, AdmissionQueue
from bot.buttons import EXPIRED_TEXT, AgainPayloads, StopOutcome
from bot.command_log import CommandObserver, CommandRecord, NoObserver
from bot.conversation_memory import ConversationMemory
from bot.dedupe import DeliveryClaims
from bot.errors import BotError, FailureKind, ModelNotAllowed, ShuttingDown, describe_failure
from bot.governance import Governor, Pass, Refusal
from bot.inflight import Destination, InFlight, Journal
from bot.model_catalog import ModelCatalog
from bot.model_input import build_model_input
from bot.models import KIND_FOR_COMMAND
from bot.parsing import InputLimits
from bot.pricing import PriceTable
from bot.replies import FINAL_EVENTS, Failure, Images, Phase, ReplyEvent, RunInfo, Status, TextDone
from bot.request_builder import NO_MODEL_TEXT, RequestBuilder
from bot.requests import CommandName, CommandRequest, Origin
from bot.runner import ImagesResult, PredictionRunner
from bot.state.store import StateStore, StateStoreError
from bot.tasks import BackgroundTasks
from config.models import ASK_SYSTEM_PROMPT

log = logging.getLogger(__name__)

INTERNAL_ERROR_TEXT = "Something went wrong on our side. Try again in a moment."


@dataclass(frozen=True)
class CoreConfig:
    limits: InputLimits
    prices: PriceTable
    system_prompt: str = ASK_SYSTEM_PROMPT
    context_max_chars: int = 12_000
    retention_days: int = 30


@dataclass
class _Running:
    """A command being executed in this process: what its Stop button reaches."""

    request: CommandRequest
    producer: asyncio.Task[None]
    stopped: bool = False


@dataclass
class _Admitted:
    """A prepared command's governance pass, and the prediction Replicate made for it (once it did)."""

    governance: Pass | None
    prediction_ids: list[str] = dataclasses.field(default_factory=list)


class CommandCore:
    """Holds the runner and the admission queue; every adapter holds one core."""

    def __init__(
        self,
        runner: PredictionRunner,
        admission: AdmissionQueue,
        config: CoreConfig,
        models: ModelCatalog,
        observer: CommandObserver | None = None,
    ) -> None:
        self._runner = runner
        self._observer = observer or NoObserver()  # hears every command's end and every refusal (metrics)
        self._admission = admission
        self._config = config
        self._models = models
        self._producers = BackgroundTasks("command producer")
        # After the answer: give back units, look up the metrics, count the spend, write the log line.
        self._settlements = BackgroundTasks("command settlement")
        self._accepting = True
        self._deliveries = DeliveryClaims()
        self._shared_state: StateStore | None = None
        self._builder = RequestBuilder(config.limits, config.retention_days, lambda: self._models)
        self._governor: Governor | None = None
        self._memory: ConversationMemory | None = None
        self._again: AgainPayloads | None = None
        self._running: dict[str, _Running] = {}  # by request id: what a Stop press can reach
        self._admitted: dict[str, _Admitted] = {}
        self._journal: Journal | None = None

    @property
    def in_flight(self) -> int:
        """Commands being executed: running, waiting in line, or finishing their last reply."""
        return len(self._producers)

    @property
    def running(self) -> int:
        """Commands admitted to run a prediction."""
        return self._admission.in_use

    @property
    def queued(self) -> int:
        """Commands waiting in line for a free slot."""
        return self._admission.queued

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def models(self) -> ModelCatalog:
        """The models each command may use, as adapters offer them."""
        return self._models

    @property
    def limits(self) -> InputLimits:
        return self._config.limits

    def use_models(self, models: ModelCatalog) -> None:
        """Replace the fallback catalog with the one looked up on Replicate (at start-up, before any command)."""
        self._models = models

    def use_state(self, governor: Governor, memory: ConversationMemory, again: AgainPayloads) -> None:
        """Limits, budget, access, conversations and Again buttons from now on (the service opens the state store
        before any command)."""
        self._governor = governor
        self._memory = memory
        self._again = again

    def use_journal(self, journal: Journal) -> None:
        """Record every command in flight from now on, for a survivor to finish if this process dies (the service
        turns it on; the console, whose commands end with it, does not)."""
        self._journal = journal

    def note_destination(self, request_id: str, destination: Destination) -> None:
        """Where the answer of `request_id` goes, in the adapter's own terms (`Adapter.resume` reads it back)."""
        if self._journal is not None:
            self._journal.note_destination(request_id, destination)

    async def prepare_again(self, request_id: str, origin: Origin) -> CommandRequest | Failure | None:
        """Again, pressed by `origin`: the finished command `request_id` as a new command of theirs (their limits
        and access; a new seed for pictures; a conversation's turn answered anew). None: a double press, drop it."""
        if self._again is None or not await self._again.first_press(request_id, origin):
            return None
        kept = await self._again.load(request_id, origin)
        if kept is None:
            return Failure(FailureKind.CANCELLED, EXPIRED_TEXT)
        request = self._builder.again(kept, origin)
        return request if isinstance(request, Failure) else await self._admit(request)

    def stop(self, request_id: str, origin: Origin) -> StopOutcome:
        """Stop, pressed by `origin`: the running command is cancelled (on Replicate too) and its answer ends with
        what was written so far, marked as stopped. Only its asker or an admin may."""
        running = self._running.get(request_id)
        if running is None or running.producer.done():
            return StopOutcome.NOT_RUNNING
        if not self._may_stop(running.request.origin, origin):
            return StopOutcome.NOT_YOURS
        running.stopped = True
        running.producer.cancel()
        return StopOutcome.STOPPING

    async def stop_elsewhere(self, request_id: str, origin: Origin) -> StopOutcome:
        """Stop, pressed here for a command another process runs (a press reaches any process): cancelled on
        Replicate by the prediction id in the journal, and marked, so the process streaming it shows the text so
        far marked as stopped (its stream ends cancelled; the mark tells it why)."""
        entry = await self._journal.find(request_id) if self._journal is not None else None
        if entry is None or entry.prediction_id is None or self._journal is None or self._journal.owns(request_id):
            return StopOutcome.NOT_RUNNING
        if not self._may_stop(entry.request.origin, origin):
            return StopOutcome.NOT_YOURS
        await self._journal.mark_stopped(request_id)
        await self._runner.cancel(entry.prediction_id)
        log.info("Stopped command %s, running in another process, from here", request_id)
        return StopOutcome.STOPPING

    def _may_stop(self, asker: Origin, origin: Origin) -> bool:
        is_asker = (asker.platform, asker.user_id) == (origin.platform, origin.user_id)
        return is_asker or (self._governor is not None and self._governor.is_admin(origin))

    async def administer(self, origin: Origin, text: str) -> str:
        """The private answer to `/replicate <text>` (help, models, usage; admins' controls)."""
        if self._governor is None:
            return "The bot's state store is not open yet. Try again in a moment."
        return await Administration(self._governor, self._models).run(origin, text)

    def share_state(self, store: StateStore) -> None:
        """Deliveries are claimed in `store` from now on, so every process on it takes each one once; adapters
        find it in `shared_state` for what they share between processes themselves (Slack's edit budget, Discord's
        IDENTIFY turns)."""
        self._deliveries.use_store(store)
        self._shared_state = store

    @property
    def shared_state(self) -> StateStore | None:
        """The state store every process of this bot shares (None until the service opened it)."""
        return self._shared_state

    async def claim_delivery(self, key: str) -> bool:
        """False when this delivery (Slack trigger, Discord interaction) was already taken, in this process or
        another on the same state store: drop it. At most one store round trip, before the acknowledgement."""
        return await self._deliveries.claim(key)

    async def prepare(
        self,
        command: CommandName | str,
        text: str,
        origin: Origin,
        typed_options: Mapping[str, object] | None = None,
    ) -> CommandRequest | Failure:
        """Parse, validate and govern; a `Failure` here is private and cost nothing (nothing was created or posted).

        The only I/O is the state store's (limits, budget, access: `bot.governance`). A request returned holds
        its governance units and a place in the admission queue until `execute` takes it up (or `withdraw`):
        a burst of commands sees the room left shrink with each one, and those beyond it are refused here.
        Every /ask starts a conversation (`conversation_id`) that replies can continue (`prepare_turn`).
        """
        name = CommandName(str(command).lstrip("/"))
        request = self._builder.command(name, text, origin, typed_options)
        return self._refused(origin, name, request) if isinstance(request, Failure) else await self._admit(request)

    async def prepare_turn(
        self, text: str, origin: Origin, *, conversation_id: str | None, forgotten: bool = False
    ) -> CommandRequest | Failure:
        """The next turn of a conversation (a reply in its thread, a mention, a DM), governed as an /ask.

        It carries the conversation's earlier turns, model and options; options typed at its end apply to it
        alone. A conversation the bot no longer knows (`conversation_id` not found, or `forgotten`: the adapter
        saw a reply to one of the bot's own answers that leads nowhere) starts afresh, and the answer says so.
        """
        remembered = None
        if conversation_id is not None and self._memory is not None:
            remembered = await self._memory.recall(conversation_id)
        request = self._builder.turn(text, origin, remembered, conversation_id=conversation_id, forgotten=forgotten)
        if isinstance(request, Failure):
            return self._refused(origin, CommandName.ASK, request)
        return await self._admit(request)

    async def find_conversation(self, key: str) -> str | None:
        """The conversation a platform thread or message leads to (`link_conversation`), if the bot knows one."""
        return await self._memory.find(key) if self._memory is not None else None

    async def link_conversation(self, key: str, conversation_id: str) -> None:
        """From now on a reply in this thread, or to this message (`key`, the adapter's own), continues it."""
        if self._memory is not None:
            await self._memory.link(key, conversation_id)

    async def _admit(self, request: CommandRequest) -> CommandRequest | Failure:
        """Governance, then a place in the admission queue; a refusal gives back whatever was taken."""
        name, origin = request.command, request.origin
        if not self._accepting:
            return self._refused(origin, name, Failure(FailureKind.SHUTTING_DOWN,
                                                       describe_failure(FailureKind.SHUTTING_DOWN)))
        governance = None
        if self._governor is not None:
            decision = await self._governor.admit(origin, name)
            if isinstance(decision, Refusal):
                log.info("Refused /%s from %s:%s in %s: %s",
                         name, origin.platform, origin.user_id, origin.channel_id, decision.reason)
                return self._refused(origin, name, Failure(decision.reason, decision.message))
            governance = decision
        shut = self._shut()  # it may have begun while the store answered
        if shut or not self._admission.reserve(request.request_id):
            if governance is not None and self._governor is not None:
                await self._governor.release(governance, reached_replicate=False)
            if shut:
                return self._refused(origin, name, Failure(FailureKind.SHUTTING_DOWN,
                                                           describe_failure(FailureKind.SHUTTING_DOWN)))
            waiting = self._admission.waiting_ahead_of_newcomer
            log.info("Refused a %s command from %s: the queue is full (%d waiting)", name, origin.platform, waiting)
            commands = "1 command is" if waiting == 1 else f"{waiting} commands are"
            return self._refused(origin, name, Failure(FailureKind.QUEUE_FULL,
                                                       describe_failure(FailureKind.QUEUE_FULL, commands=commands)))
        self._admitted[request.request_id] = _Admitted(governance)
        return request

    def _refused(self, origin: Origin, command: CommandName, failure: Failure) -> Failure:
        self._observer.command_refused(origin, str(command), failure.kind)
        return failure

    def _shut(self) -> bool:
        return not self._accepting

    async def withdraw(self, request: CommandRequest) -> None:
        """A prepared request that will never run (an adapter refused it after all): give its place back."""
        self._admission.withdraw(request.request_id)
        await self._settle(request, None, None)

    async def execute(
        self, request: CommandRequest, *, ack_latency_s: float | None = None,
        on_under_way: Callable[[], None] = lambda: None,
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Yield status, partial text, then exactly one final event (`TextDone`, `Images` or `Failure`).

        `on_under_way` is called (perhaps more than once) as soon as the prediction is being created, or the command
        waits in the queue, or it is over: an adapter may hold its own posts until then, so that under a burst of
        commands the creates go first and the model's time covers the posts."""
        try:
            async with aclosing(self._execute(request, ack_latency_s, on_under_way)) as events:
                async for event in events:
                    yield event
        finally:
            on_under_way()

    async def _execute(
        self, request: CommandRequest, ack_latency_s: float | None, on_under_way: Callable[[], None]
    ) -> AsyncGenerator[ReplyEvent, None]:
        record = CommandRecord.start(request, ack_latency_s)
        if not self._accepting:
            self._admission.withdraw(request.request_id)
            failure = Failure(FailureKind.SHUTTING_DOWN, describe_failure(FailureKind.SHUTTING_DOWN))
            record.observe(failure)
            await self._settle(request, failure, record)
            yield failure
            return
        admitted = self._admitted.get(request.request_id)

        def on_created(prediction_id: str) -> None:
            if admitted is not None:
                admitted.prediction_ids.append(prediction_id)
            if self._journal is not None:
                self._journal.created(request.request_id, prediction_id)

        produced = self._events(request, record, lambda emit: self._produce(request, emit, on_created, on_under_way))
        async with aclosing(produced) as events:
            async for event in events:
                yield event

    async def resume(self, entry: InFlight) -> AsyncGenerator[ReplyEvent, None]:
        """An orphan taken from the journal (`Journal.take`): its prediction followed to its end from here, with the
        same events, Stop, settlement and journal entry as a command of this process. Leaving early cancels it."""
        request, prediction_id = entry.request, entry.prediction_id
        assert prediction_id is not None, "a cut-off create is abandoned, never resumed"
        self._admitted[request.request_id] = _Admitted(entry.governance, [prediction_id])
        record = CommandRecord.start(request, None)
        followed = self._events(request, record, lambda emit: self._produce_followed(request, emit, prediction_id))
        async with aclosing(followed) as events:
            async for event in events:
                yield event

    async def find_prediction(self, entry: InFlight) -> InFlight:
        """An orphan whose create was cut off (its process died before hearing back): with the prediction that
        create made, if Replicate has one, so it can be followed and delivered like any other."""
        if entry.prediction_id is not None or entry.create_sent_at is None:
            return entry
        sent_at = datetime.fromtimestamp(entry.create_sent_at, UTC)
        found = await self._runner.find_cut_off_create(entry.request.model, entry.model_input, sent_at)
        return entry if found is None else dataclasses.replace(entry, prediction_id=found)

    async def abandon(self, entry: InFlight) -> None:
        """An orphan whose answer can go nowhere: its prediction cancelled on Replicate (or, if its create was cut
        off, looked for and cancelled), its running slot given back, its entry deleted."""
        request = entry.request
        if entry.prediction_id is not None:
            await self._runner.cancel(entry.prediction_id)
        elif entry.create_sent_at is not None:
            sent_at = datetime.fromtimestamp(entry.create_sent_at, UTC)
            await self._runner.cancel_cut_off_create(request.model, entry.model_input, sent_at)
        self._admitted[request.request_id] = _Admitted(
            entry.governance, [entry.prediction_id] if entry.prediction_id else [])
        failure = Failure(FailureKind.CANCELLED, describe_failure(FailureKind.CANCELLED),
                          prediction_id=entry.prediction_id)
        record = CommandRecord.start(request, None)
        record.observe(failure)
        await self._settle(request, failure, record)

    async def _events(
        self, request: CommandRequest, record: CommandRecord,
        produce: Callable[[Callable[[ReplyEvent], None]], Coroutine[Any, Any, None]],
    ) -> AsyncGenerator[ReplyEvent, None]:
        """The producer's events, read from a queue; the command settled (off the answer's path) once they end."""
        events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        producer = self._producers.spawn(produce(events.put_nowait), name=f"command-{request.request_id}")
        self._running[request.request_id] = _Running(request, producer)
        final: ReplyEvent | None = None
        try:
            while True:
                event = await events.get()
                record.observe(event)
                if isinstance(event, FINAL_EVENTS):
                    final = event
                yield event
                if final is not None:
                    return
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            self._running.pop(request.request_id, None)
            self._admission.withdraw(request.request_id)  # a producer stopped before it took up its place
            # Off the answer's path: the adapter may still have a reply to finish when the events end.
            self._settlements.spawn(self._settle(request, final, record), name=f"settle-{request.request_id}")

    async def _settle(self, request: CommandRequest, final: ReplyEvent | None, record: CommandRecord | None) -> None:
        """The command is over: give back its running slot (and its use, if Replicate never took it), then count
        what the prediction probably cost, from its metrics, into today's spend and the log line."""
        admitted = self._admitted.pop(request.request_id, None) or _Admitted(None)
        governance = admitted.governance if self._governor is not None else None
        try:
            # At once and together (one store round trip): the answer has landed, and the shorter its journal entry
            # outlives it, the smaller the window in which a survivor could deliver it again (`bot.inflight`).
            await asyncio.gather(
                self._journal.close(request.request_id) if self._journal is not None else asyncio.sleep(0),
                self._governor.release(governance, reached_replicate=bool(admitted.prediction_ids))
                if governance is not None and self._governor is not None else asyncio.sleep(0),
            )
            run = final.run if isinstance(final, (TextDone, Images)) else None
            if run is None and admitted.prediction_ids:  # failed, timed out or cancelled after Replicate took it
                run = RunInfo(model=request.model, prediction_id=admitted.prediction_ids[-1])
            if run is not None and self._accepting:  # at shutdown the estimate makes do with what it has
                run = await self._runner.with_metrics(run)
            cost = self._config.prices.estimate_micro_usd(run) if run is not None else None
            if record is not None:
                record.settled(run, cost)
            if governance is not None and self._governor is not None and cost is not None:
                await self._governor.record_spend(governance, cost)
        except Exception:  # the store failed: the answer went out; the operator needs to know
            log.exception("Could not record the use of command %s", request.request_id)
        finally:
            if record is not None:
                record.emit()
                self._observer.command_ended(record)

    def stop_accepting(self) -> None:
        """New commands get a polite "restarting" from now on (shutdown), and so, at once, do those still
        queued: nothing waiting is admitted any more, so no prediction is created after the signal."""
        self._accepting = False
        self._admission.close()
        self._runner.stop_waiting()

    async def drain(self, grace_s: float, *, cancels_by: float | None = None) -> None:
        """Let in-flight commands finish for up to `grace_s`, then cancel the rest on Replicate.

        `cancels_by` (loop time) bounds what follows the grace: the cancels on Replicate give up by then, so
        a platform that kills the process soon after the grace never interrupts them half way.
        """
        loop = asyncio.get_running_loop()
        pending = self._producers.snapshot()
        still_running: set[asyncio.Task[Any]] = set()
        if pending:
            _, still_running = await asyncio.wait(pending, timeout=grace_s)
        if cancels_by is not None:
            self._runner.shorten_cancels(cancels_by)
        for task in still_running:
            task.cancel()
        left_s = None if cancels_by is None else max(cancels_by - loop.time(), 0.0)
        if still_running:
            await asyncio.wait(still_running, timeout=left_s)
        await self._runner.aclose(left_s if cancels_by is None else max(cancels_by - loop.time(), 0.0))

    async def finish_settlements(self, timeout_s: float) -> None:
        """The last commands' units, spend and log lines, before the store closes (the end of shutdown)."""
        await self._settlements.wait(timeout_s)
        await self._settlements.cancel_all()

    async def _produce(
        self, request: CommandRequest, emit: Callable[[ReplyEvent], None], on_created: Callable[[str], None],
        on_under_way: Callable[[], None] = lambda: None, *, follow: str | None = None,
    ) -> None:
        """Run the command (or, with `follow`, follow that prediction of it) and emit its events, ending with
        exactly one final event whatever happens."""
        # The prediction's id once Replicate made it: the log line names what was cancelled.
        created: list[str] = [follow] if follow is not None else []

        def remember(prediction_id: str) -> None:
            created.append(prediction_id)
            on_created(prediction_id)

        try:
            if follow is not None:
                await self._follow(request, emit, follow)
            else:
                await self._run(request, emit, remember, on_under_way)
        except BotError as error:
            prediction_id = getattr(error, "prediction_id", None)
            if error.kind is FailureKind.CANCELLED and await self._stopped_elsewhere(request.request_id):
                emit(Failure(FailureKind.STOPPED, describe_failure(FailureKind.STOPPED), prediction_id=prediction_id))
                return
            emit(Failure(error.kind, error.user_message, prediction_id=prediction_id))
        except asyncio.CancelledError:
            running = self._running.get(request.request_id)
            if running is not None and running.stopped:  # its Stop button: our own cancel, not a shutdown
                emit(Failure(FailureKind.STOPPED, describe_failure(FailureKind.STOPPED),
                             prediction_id=created[-1] if created else None))
                return
            emit(Failure(
                FailureKind.SHUTTING_DOWN,
                describe_failure(FailureKind.SHUTTING_DOWN),
                prediction_id=created[-1] if created else None,
            ))
            raise
        except Exception:
            log.exception("Command %s (%s) failed unexpectedly", request.request_id, request.command)
            emit(Failure(FailureKind.MODEL_FAILED, INTERNAL_ERROR_TEXT))

    async def _stopped_elsewhere(self, request_id: str) -> bool:
        """A cancel this process did not make: Stop pressed in another process (`stop_elsewhere`) marks it."""
        return self._journal is not None and await self._journal.was_stopped(request_id)

    async def _produce_followed(
        self, request: CommandRequest, emit: Callable[[ReplyEvent], None], prediction_id: str
    ) -> None:
        """`_produce` for a prediction made before: the same outcomes, no create (and no admission slot: the
        prediction runs already, whatever this process's queue holds)."""
        await self._produce(request, emit, lambda _: None, follow=prediction_id)

    async def _run(
        self, request: CommandRequest, emit: Callable[[ReplyEvent], None], on_created: Callable[[str], None],
        on_under_way: Callable[[], None],
    ) -> None:
        is_image = request.command is CommandName.IMAGINE
        info = self._models.find(request.model, KIND_FOR_COMMAND[request.command])
        if info is None:  # prepare() checked it: the catalog cannot lose a model while the bot runs
            raise ModelNotAllowed(NO_MODEL_TEXT.format(command=request.command))
        model_input = build_model_input(
            request, info, system_prompt=self._config.system_prompt, context_max_chars=self._config.context_max_chars
        )
        try:
            async for position in self._admission.wait_turn(request.request_id):
                on_under_way()
                emit(Status(Phase.QUEUED, queue_position=position))
        except AdmissionClosed as error:
            raise ShuttingDown(describe_failure(FailureKind.SHUTTING_DOWN), cause=error) from error
        try:
            if self._journal is not None:  # before the create: a kill right after it still leaves a trace
                admitted = self._admitted.get(request.request_id)
                await self._journal.open(request, admitted.governance if admitted else None, model_input.values)
            on_under_way()
            if is_image:
                seed = model_input.values.get(info.seed_field) if info.seed_field else None
                async for event in self._runner.generate_images(
                    request.model, model_input.values, on_created=on_created
                ):
                    if isinstance(event, ImagesResult):
                        emit(Images(images=event.images, prompt=request.prompt, seed=seed, run=event.run,
                                    notes=model_input.notes, again_id=self._record_finished(request, None)))
                    else:
                        emit(event)
            else:
                async for text_event in self._runner.stream_text(
                    request.model, model_input.values, on_created=on_created
                ):
                    if isinstance(text_event, TextDone):
                        text_event = await self._remembered(request, text_event)
                    emit(text_event)
        finally:
            self._admission.release()

    async def _follow(self, request: CommandRequest, emit: Callable[[ReplyEvent], None], prediction_id: str) -> None:
        """A prediction made before, to its end: text from its start, or its images; the answer kept as usual."""
        if request.command is CommandName.IMAGINE:
            async for event in self._runner.follow_images(request.model, prediction_id):
                if isinstance(event, ImagesResult):
                    seed = request.options.seed  # the seed typed, if any (the model's own choice is not kept)
                    emit(Images(images=event.images, prompt=request.prompt, seed=seed, run=event.run,
                                again_id=self._record_finished(request, None)))
                else:
                    emit(event)
            return
        async for text_event in self._runner.follow_text(request.model, prediction_id):
            if isinstance(text_event, TextDone):
                text_event = await self._remembered(request, text_event)
            emit(text_event)

    async def _remembered(self, request: CommandRequest, done: TextDone) -> TextDone:
        """The answer as shown: with its Again button and the request's notes. The turn goes into the conversation,
        and the command into its Again payload, in an owned task started first: the answer never waits for the
        store (a wait here would let a progress edit in first, and the final edit then waits a whole edit
        interval behind it), and a reply typed once the answer shows still finds the turn (the store takes
        calls in order, and these are sent before the answer reaches the chat platform)."""
        again_id = self._record_finished(request, done.text)
        done = dataclasses.replace(done, again_id=again_id)
        if not request.notes:
            return done
        return dataclasses.replace(done, text="\n\n".join((done.text, *request.notes)))

    def _record_finished(self, request: CommandRequest, answer: str | None) -> str | None:
        """Start keeping a finished command (its conversation turn, if `answer`; its Again payload); the id of its
        Again button, or None when there is no store to keep it in."""
        if self._again is None:
            return None

        async def record() -> None:
            if answer is not None:
                await asyncio.gather(self._remember(request, answer), self._keep_for_again(request))
            else:
                await self._keep_for_again(request)

        self._settlements.spawn(record(), name=f"record-{request.request_id}")
        return request.request_id

    async def _remember(self, request: CommandRequest, answer: str) -> None:
        if self._memory is None or request.conversation_id is None:
            return
        try:
            await self._memory.remember(request, answer)
        except StateStoreError as error:  # the answer still goes out; its conversation can't go on
            log.warning("Could not remember turn %s of conversation %s: %s",
                        request.request_id, request.conversation_id, error)

    async def _keep_for_again(self, request: CommandRequest) -> None:
        """What Again will need (if it can't be kept, a press answers that the button expired)."""
        if self._again is None:
            return
        try:
            await self._again.keep(request)
        except StateStoreError as error:
            log.warning("Could not keep command %s for its Again button: %s", request.request_id, error)
