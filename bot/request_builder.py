"""Command text (or a conversation's next message, or an Again press) -> a validated `CommandRequest`.

Pure: no I/O. What the state store knows (a conversation's turns, an Again payload) is read by the core and
handed in; governance and the admission queue come after (`CommandCore`).
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable, Mapping

from bot.conversation_memory import Remembered
from bot.errors import FailureKind, InvalidCommand, ModelNotAllowed
from bot.model_catalog import A_MODEL_OF, COMMAND_OF, ModelCatalog
from bot.models import KIND_FOR_COMMAND, ModelInfo
from bot.parsing import InputLimits, parse_command
from bot.replies import Failure
from bot.requests import CommandName, CommandRequest, Options, Origin

SEED_PICK_RANGE = 2**31  # every image model we know takes seeds this large
NO_MODEL_TEXT = "No model is set up for /{command} right now. The operator has been told in the log."
FORGOTTEN_TEXT = (
    "_I no longer remember that conversation (conversations are kept {days} days), so this starts a new one._"
)


class RequestBuilder:
    def __init__(self, limits: InputLimits, retention_days: int, models: Callable[[], ModelCatalog]) -> None:
        self._limits = limits
        self._retention_days = retention_days
        self._models = models  # the current catalog (replaced once at start-up)

    def command(
        self, name: CommandName, text: str, origin: Origin, typed_options: Mapping[str, object] | None = None
    ) -> CommandRequest | Failure:
        """A slash command; every /ask starts a conversation (`conversation_id`)."""
        try:
            parsed = parse_command(name, text, self._input_limits(), typed_options)
            request = self._request(name, parsed.prompt, parsed.options, origin)
        except InvalidCommand as error:
            return Failure(kind=error.kind, message=error.user_message)
        if isinstance(request, Failure) or name is not CommandName.ASK:
            return request
        return dataclasses.replace(request, conversation_id=uuid.uuid4().hex)

    def turn(
        self, text: str, origin: Origin, remembered: Remembered | None, *, conversation_id: str | None, forgotten: bool
    ) -> CommandRequest | Failure:
        """A conversation's next message: its earlier turns, model and options (a follow-up's own options apply to
        it alone); a conversation not `remembered` starts afresh, saying so if the user meant to continue one."""
        try:
            parsed = parse_command(CommandName.ASK, text, self._input_limits())
            options = parsed.options
            if remembered is not None:
                typed = {key: value for key, value in dataclasses.asdict(options).items() if value is not None}
                first_model = remembered.options.model or remembered.model
                options = dataclasses.replace(remembered.options, **{"model": first_model, **typed})
            request = self._request(CommandName.ASK, parsed.prompt, options, origin)
        except InvalidCommand as error:
            return Failure(kind=error.kind, message=error.user_message)
        if isinstance(request, Failure):
            return request
        if remembered is not None and conversation_id is not None:
            return dataclasses.replace(request, conversation_id=conversation_id, context=remembered.turns)
        notes = (FORGOTTEN_TEXT.format(days=self._retention_days),) if (conversation_id or forgotten) else ()
        return dataclasses.replace(request, conversation_id=uuid.uuid4().hex, notes=notes)

    def again(self, kept: CommandRequest, presser: Origin) -> CommandRequest | Failure:
        """A finished command run anew for `presser`, as kept for its Again button (a new seed for pictures)."""
        try:
            request = self._request(kept.command, kept.prompt, kept.options, presser)
        except InvalidCommand as error:  # its model is no longer allowed
            return Failure(kind=error.kind, message=error.user_message)
        if isinstance(request, Failure):
            return request
        return dataclasses.replace(request, model=kept.model, conversation_id=kept.conversation_id,
                                   context=kept.context)

    def _input_limits(self) -> InputLimits:
        return dataclasses.replace(self._limits, allowed_models=self._models().all_refs())

    def _request(self, name: CommandName, prompt: str, options: Options, origin: Origin) -> CommandRequest | Failure:
        info = self._model_for(name, options.model)
        if info is None:
            return Failure(FailureKind.MISCONFIGURED, NO_MODEL_TEXT.format(command=name))
        if name is CommandName.IMAGINE and options.seed is None and info.seed_field:
            # Pick the seed ourselves so every picture's caption can say how to reproduce it.
            options = dataclasses.replace(options, seed=random.randrange(SEED_PICK_RANGE))
        return CommandRequest(command=name, prompt=prompt, options=options, origin=origin,
                              model=options.model or info.ref)

    def _model_for(self, command: CommandName, requested: str | None) -> ModelInfo | None:
        """The model a command runs; a `--model` of the wrong kind is refused (`ModelNotAllowed`)."""
        models = self._models()
        kind = KIND_FOR_COMMAND[command]
        if requested is None:
            return models.default(kind)
        info = models.find(requested, kind)
        if info is None:
            other = models.kind_of(requested)
            usable = ", ".join(f"`{ref}`" for ref in models.refs(kind)) or "none"
            what = (
                f"is {A_MODEL_OF[other]}, not {A_MODEL_OF[kind]}: use it with {COMMAND_OF[other]}"
                if other in COMMAND_OF else f"can't serve /{command}"
            )
            raise ModelNotAllowed(f"`{requested}` {what}. Models for /{command}: {usable}.")
        return info
