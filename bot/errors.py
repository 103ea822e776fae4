"""Every way a command can fail, as one typed tree, and the one place that turns it into user text.

    BotError                      (kind: FailureKind, user_message, cause)
    ├── InvalidCommand            bad input, caught before any network call
    │   ├── EmptyPrompt           → usage text
    │   ├── PromptTooLong
    │   ├── UnknownOption
    │   ├── BadOptionValue
    │   └── ModelNotAllowed
    └── PredictionError           something went wrong running the model
        ├── ModelNotFound         404 / 403 from Replicate
        ├── InvalidModelInput     422, with the model's own detail
        ├── SafetyFilterBlocked   the model's NSFW filter
        ├── ModelFailed           the model raised
        ├── PredictionTimedOut    past PREDICTION_TIMEOUT, cancelled on Replicate
        ├── ReplicateBusy         429 after our retries
        ├── ReplicateUnavailable  5xx, connection failures
        ├── BotMisconfigured      401: the operator's token is wrong (details go to the log)
        ├── EmptyOutput           the model succeeded but said nothing
        ├── PredictionCancelled   cancelled on Replicate before it finished
        └── ShuttingDown          the bot is stopping: queued commands never start

A refusal that is no exception (`FailureKind.QUEUE_FULL`: the queue is full; the governance refusals: paused,
blocked, channel, budget, concurrency, limits) is returned by `CommandCore.prepare` as a `Failure` directly.

Raw exception text never reaches chat: `user_message` is written here, the cause goes to the log.
"""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    """Stable names for failure classes: logs, metrics and adapters key on these, not on message text."""

    EMPTY_PROMPT = "empty_prompt"
    PROMPT_TOO_LONG = "prompt_too_long"
    UNKNOWN_OPTION = "unknown_option"
    BAD_OPTION_VALUE = "bad_option_value"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_MODEL_INPUT = "invalid_model_input"
    SAFETY_FILTER = "safety_filter"
    MODEL_FAILED = "model_failed"
    TIMED_OUT = "timed_out"
    REPLICATE_BUSY = "replicate_busy"
    REPLICATE_UNAVAILABLE = "replicate_unavailable"
    MISCONFIGURED = "misconfigured"
    EMPTY_OUTPUT = "empty_output"
    CANCELLED = "cancelled"
    SHUTTING_DOWN = "shutting_down"
    QUEUE_FULL = "queue_full"
    # Governance refusals (`bot.governance`): private, before anything is created or posted.
    PAUSED = "paused"
    BLOCKED = "blocked"
    CHANNEL_NOT_ALLOWED = "channel_not_allowed"
    BUDGET_REACHED = "budget_reached"
    TOO_MANY_RUNNING = "too_many_running"
    LIMIT_REACHED = "limit_reached"
    STOPPED = "stopped"  # its Stop button was pressed: what was written so far stays, marked as stopped


class BotError(Exception):
    """Base of every failure a user can be told about."""

    kind: FailureKind = FailureKind.MODEL_FAILED

    def __init__(self, user_message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.cause = cause

    @property
    def is_input_error(self) -> bool:
        """Input errors are answered privately and cost nothing."""
        return isinstance(self, InvalidCommand)


class InvalidCommand(BotError):
    """The command was rejected before any network call."""


class EmptyPrompt(InvalidCommand):
    kind = FailureKind.EMPTY_PROMPT


class PromptTooLong(InvalidCommand):
    kind = FailureKind.PROMPT_TOO_LONG


class UnknownOption(InvalidCommand):
    kind = FailureKind.UNKNOWN_OPTION


class BadOptionValue(InvalidCommand):
    kind = FailureKind.BAD_OPTION_VALUE


class ModelNotAllowed(InvalidCommand):
    kind = FailureKind.MODEL_NOT_ALLOWED


class PredictionError(BotError):
    """Running the model failed; `prediction_id` is set when Replicate had created one."""

    def __init__(
        self,
        user_message: str,
        *,
        cause: BaseException | None = None,
        prediction_id: str | None = None,
    ) -> None:
        super().__init__(user_message, cause=cause)
        self.prediction_id = prediction_id


class ModelNotFound(PredictionError):
    kind = FailureKind.MODEL_NOT_FOUND


class InvalidModelInput(PredictionError):
    kind = FailureKind.INVALID_MODEL_INPUT


class SafetyFilterBlocked(PredictionError):
    kind = FailureKind.SAFETY_FILTER


class ModelFailed(PredictionError):
    kind = FailureKind.MODEL_FAILED


class PredictionTimedOut(PredictionError):
    kind = FailureKind.TIMED_OUT


class ReplicateBusy(PredictionError):
    kind = FailureKind.REPLICATE_BUSY


class ReplicateUnavailable(PredictionError):
    kind = FailureKind.REPLICATE_UNAVAILABLE


class BotMisconfigured(PredictionError):
    kind = FailureKind.MISCONFIGURED


class EmptyOutput(PredictionError):
    kind = FailureKind.EMPTY_OUTPUT


class PredictionCancelled(PredictionError):
    kind = FailureKind.CANCELLED


class ShuttingDown(PredictionError):
    kind = FailureKind.SHUTTING_DOWN


# The one table of user-facing text for failures of a run. Input errors carry their own text
# because it names the option or limit the user got wrong.
RUN_FAILURE_TEXT: dict[FailureKind, str] = {
    FailureKind.MODEL_NOT_FOUND: "The model `{model}` doesn't exist on Replicate, or this bot has no access to it.",
    FailureKind.INVALID_MODEL_INPUT: "The model `{model}` rejected the input: {detail}",
    FailureKind.SAFETY_FILTER: "The model's safety filter blocked this one. Try a different prompt.",
    FailureKind.MODEL_FAILED: "The model `{model}` failed while running. Try again, or try a different prompt.",
    FailureKind.TIMED_OUT: (
        "The model took longer than {timeout_s:g} seconds, so I cancelled it. Try again in a moment."
    ),
    FailureKind.REPLICATE_BUSY: "Replicate is busy right now (rate limited). Try again in a minute.",
    FailureKind.REPLICATE_UNAVAILABLE: "Replicate isn't answering right now. Try again in a few minutes.",
    FailureKind.MISCONFIGURED: (
        "The bot is misconfigured, so I can't run models right now. The operator has been told in the log."
    ),
    FailureKind.EMPTY_OUTPUT: "The model `{model}` finished but returned nothing. Try again, or rephrase the prompt.",
    FailureKind.CANCELLED: "This request was cancelled before it finished.",
    FailureKind.SHUTTING_DOWN: "The bot is restarting. Try again in a moment.",
    FailureKind.STOPPED: "Stopped.",
    FailureKind.QUEUE_FULL: "The bot is busy: {commands} waiting. Try again in a minute.",
}


def describe_failure(kind: FailureKind, **facts: object) -> str:
    """User text for a run failure: the table above, filled with the facts of this run."""
    template = RUN_FAILURE_TEXT[kind]
    try:
        return template.format(**facts)
    except (KeyError, ValueError):
        return template.split("{")[0].rstrip(" `:") + "."
