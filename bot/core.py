"""The command core: text in, validated request, reply events out. Platform-neutral.

Adapters call `prepare()` (pure: parse and validate, no network) and acknowledge the command at
once, then iterate `execute()`. The model runs in a task of its own that feeds a queue, so a slow
chat API on the adapter's side can never stall reading the model or skew its timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.admission import AdmissionClosed, AdmissionQueue
from bot.command_log import CommandRecord
from bot.dedupe import RecentKeys
from bot.errors import BotError, FailureKind, InvalidCommand, ModelNotAllowed, ShuttingDown, describe_failure
from bot.model_catalog import A_MODEL_OF, COMMAND_OF, ModelCatalog
from bot.model_input import build_model_input
from bot.models import KIND_FOR_COMMAND, ModelInfo
from bot.parsing import InputLimits, parse_command
from bot.replies import FINAL_EVENTS, Failure, Images, Phase, ReplyEvent, Status
from bot.requests import CommandName, CommandRequest, Origin
from bot.runner import ImagesResult, PredictionRunner
from bot.tasks import BackgroundTasks

log = logging.getLogger(__name__)

SEED_PICK_RANGE = 2**31  # every image model we know takes seeds this large
INTERNAL_ERROR_TEXT = "Something went wrong on our side. Try again in a moment."
NO_MODEL_TEXT = "No model is set up for /{command} right now. The operator has been told in the log."


@dataclass(frozen=True)
class CoreConfig:
    limits: InputLimits


class CommandCore:
    """Holds the runner and the admission queue; every adapter holds one core."""

    def __init__(
        self, runner: PredictionRunner, admission: AdmissionQueue, config: CoreConfig, models: ModelCatalog
    ) -> None:
        self._runner = runner
        self._admission = admission
        self._config = config
        self._models = models
        self._producers = BackgroundTasks("command producer")
        self._accepting = True
        self._deliveries = RecentKeys()

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

    def claim_delivery(self, key: str) -> bool:
        """False when this delivery (Slack trigger, Discord interaction) was already taken: drop it."""
        return self._deliveries.claim(key)

    def prepare(
        self,
        command: CommandName | str,
        text: str,
        origin: Origin,
        typed_options: Mapping[str, object] | None = None,
    ) -> CommandRequest | Failure:
        """Parse and validate without any I/O; a `Failure` here is private and cost nothing.

        A request returned holds a place in the admission queue until `execute` takes it up (or it lapses):
        a burst of commands sees the room left shrink with each one, and those beyond it are refused here.
        """
        name = CommandName(str(command).lstrip("/"))
        try:
            limits = dataclasses.replace(self._config.limits, allowed_models=self._models.all_refs())
            parsed = parse_command(name, text, limits, typed_options)
            options = parsed.options
            info = self._model_for(name, options.model)
            if info is None:
                return Failure(FailureKind.MISCONFIGURED, NO_MODEL_TEXT.format(command=name))
            if name is CommandName.IMAGINE and options.seed is None and info.seed_field:
                # Pick the seed ourselves so every picture's caption can say how to reproduce it.
                options = dataclasses.replace(options, seed=random.randrange(SEED_PICK_RANGE))
            request = CommandRequest(
                command=name,
                prompt=parsed.prompt,
                options=options,
                origin=origin,
                model=options.model or info.ref,
            )
        except InvalidCommand as error:
            return Failure(kind=error.kind, message=error.user_message)
        if not self._accepting:
            return Failure(FailureKind.SHUTTING_DOWN, describe_failure(FailureKind.SHUTTING_DOWN))
        if not self._admission.reserve(request.request_id):
            waiting = self._admission.waiting_ahead_of_newcomer
            log.info("Refused a %s command from %s: the queue is full (%d waiting)", name, origin.platform, waiting)
            commands = "1 command is" if waiting == 1 else f"{waiting} commands are"
            return Failure(FailureKind.QUEUE_FULL, describe_failure(FailureKind.QUEUE_FULL, commands=commands))
        return request

    def withdraw(self, request: CommandRequest) -> None:
        """A prepared request that will never run (an adapter refused it after all): give its place back."""
        self._admission.withdraw(request.request_id)

    def _model_for(self, command: CommandName, requested: str | None) -> ModelInfo | None:
        """The model a command runs; a `--model` of the wrong kind is refused (`ModelNotAllowed`)."""
        kind = KIND_FOR_COMMAND[command]
        if requested is None:
            return self._models.default(kind)
        info = self._models.find(requested, kind)
        if info is None:
            other = self._models.kind_of(requested)
            usable = ", ".join(f"`{ref}`" for ref in self._models.refs(kind)) or "none"
            what = (
                f"is {A_MODEL_OF[other]}, not {A_MODEL_OF[kind]}: use it with {COMMAND_OF[other]}"
                if other in COMMAND_OF else f"can't serve /{command}"
            )
            raise ModelNotAllowed(f"`{requested}` {what}. Models for /{command}: {usable}.")
        return info

    async def execute(
        self, request: CommandRequest, *, ack_latency_s: float | None = None
    ) -> AsyncGenerator[ReplyEvent, None]:
        """Yield status, partial text, then exactly one final event (`TextDone`, `Images` or `Failure`)."""
        record = CommandRecord.start(request, ack_latency_s)
        if not self._accepting:
            self._admission.withdraw(request.request_id)
            failure = Failure(FailureKind.SHUTTING_DOWN, describe_failure(FailureKind.SHUTTING_DOWN))
            record.observe(failure)
            record.emit()
            yield failure
            return
        events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        producer = self._producers.spawn(
            self._produce(request, events.put_nowait), name=f"command-{request.request_id}"
        )
        try:
            while True:
                event = await events.get()
                record.observe(event)
                yield event
                if isinstance(event, FINAL_EVENTS):
                    return
        finally:
            if not producer.done():
                producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            self._admission.withdraw(request.request_id)  # a producer stopped before it took up its place
            record.emit()

    def stop_accepting(self) -> None:
        """New commands get a polite "restarting" from now on (shutdown), and so, at once, do those still
        queued: nothing waiting is admitted any more, so no prediction is created after the signal."""
        self._accepting = False
        self._admission.close()

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

    async def _produce(self, request: CommandRequest, emit: Callable[[ReplyEvent], None]) -> None:
        created: list[str] = []  # the prediction's id once Replicate made it: the log line names what was cancelled
        try:
            await self._run(request, emit, created.append)
        except BotError as error:
            prediction_id = getattr(error, "prediction_id", None)
            emit(Failure(error.kind, error.user_message, prediction_id=prediction_id))
        except asyncio.CancelledError:
            emit(Failure(
                FailureKind.SHUTTING_DOWN,
                describe_failure(FailureKind.SHUTTING_DOWN),
                prediction_id=created[-1] if created else None,
            ))
            raise
        except Exception:
            log.exception("Command %s (%s) failed unexpectedly", request.request_id, request.command)
            emit(Failure(FailureKind.MODEL_FAILED, INTERNAL_ERROR_TEXT))

    async def _run(
        self, request: CommandRequest, emit: Callable[[ReplyEvent], None], on_created: Callable[[str], None]
    ) -> None:
        is_image = request.command is CommandName.IMAGINE
        info = self._models.find(request.model, KIND_FOR_COMMAND[request.command])
        if info is None:  # prepare() checked it: the catalog cannot lose a model while the bot runs
            raise ModelNotAllowed(NO_MODEL_TEXT.format(command=request.command))
        model_input = build_model_input(request, info)
        try:
            async for position in self._admission.wait_turn(request.request_id):
                emit(Status(Phase.QUEUED, queue_position=position))
        except AdmissionClosed as error:
            raise ShuttingDown(describe_failure(FailureKind.SHUTTING_DOWN), cause=error) from error
        try:
            if is_image:
                seed = model_input.values.get(info.seed_field) if info.seed_field else None
                async for event in self._runner.generate_images(
                    request.model, model_input.values, on_created=on_created
                ):
                    if isinstance(event, ImagesResult):
                        emit(Images(images=event.images, prompt=request.prompt, seed=seed, run=event.run,
                                    notes=model_input.notes))
                    else:
                        emit(event)
            else:
                async for text_event in self._runner.stream_text(
                    request.model, model_input.values, on_created=on_created
                ):
                    emit(text_event)
        finally:
            self._admission.release()
