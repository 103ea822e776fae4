"""The way out: the reply events a command yields, rendered by each adapter in its own idiom.

Contract: any number of `Status` and `TextDelta`, then exactly one `TextDone`, `Images` or `Failure`.
Adapters `match` on the union and end with `assert_never`, so a new event type is a type error in each.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.errors import FailureKind


class Phase(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"


@dataclass(frozen=True)
class Status:
    """Where the command is; `queue_position` (1 = next) and `progress` (0..1) when known."""

    phase: Phase
    queue_position: int | None = None
    progress: float | None = None

    @property
    def text(self) -> str:
        if self.phase is Phase.QUEUED:
            ahead = f" (position {self.queue_position})" if self.queue_position else ""
            return f"Queued{ahead}: waiting for a free slot…"
        if self.phase is Phase.STARTING:
            return "Starting the model (a cold start can take a minute)…"
        if self.progress is not None:
            return f"Running… {round(self.progress * 100)}%"
        return "Running…"


@dataclass(frozen=True)
class TextDelta:
    """New text appended to the answer; adapters accumulate it."""

    text: str


@dataclass(frozen=True)
class RunInfo:
    """Facts about the finished prediction, for captions and the per-command log line."""

    model: str
    prediction_id: str | None = None
    predict_time_s: float | None = None  # Replicate's billed compute time (`metrics.predict_time`)
    input_tokens: int | None = None  # `metrics.input_token_count` (official language models)
    output_tokens: int | None = None  # `metrics.output_token_count`
    image_count: int | None = None  # output files of an image model


@dataclass(frozen=True)
class TextDone:
    """The whole answer, final. Adapters render this, not their accumulated deltas, as the last word."""

    text: str
    run: RunInfo
    again_id: str | None = None  # the Again button's id (`bot.buttons`); None: no Again for this answer


@dataclass(frozen=True)
class Image:
    """One generated image: its bytes (Replicate deletes outputs after an hour) and the URL as a fallback.

    Without bytes, `problem` says why in words fit for the user, and `url` is set only when posting it is safe.
    """

    data: bytes
    content_type: str
    filename: str
    url: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Images:
    images: tuple[Image, ...]
    prompt: str
    seed: int | None  # None: the model takes no seed
    run: RunInfo
    notes: tuple[str, ...] = ()  # options the model could not take ("`--no` was not used: …"), shown with the images
    again_id: str | None = None  # the Again button's id (`bot.buttons`); None: no Again for these images


@dataclass(frozen=True)
class Failure:
    """One clear reply for a failure. One returned by `CommandCore.prepare` (bad input, a refusal) cost nothing
    and is answered privately; one that ends `execute` goes where the answer would have gone."""

    kind: FailureKind
    message: str
    prediction_id: str | None = None


ReplyEvent = Status | TextDelta | TextDone | Images | Failure
FINAL_EVENTS = (TextDone, Images, Failure)
