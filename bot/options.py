"""The one table of command options: flag, aliases, commands, example, bounds, help text and how a value is read.

Inline parsing (`bot.parsing`), the usage text and Discord's typed slash-command options all come from
`OPTIONS`, so a new option (`--steps`, say) is one entry here plus the field it fills in `requests.Options`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from bot.errors import BadOptionValue
from bot.requests import CommandName

SEED_MAX = 2**32 - 1
TEMPERATURE_RANGE = (0.0, 2.0)
ASPECT_RATIO_LIMIT = 4.0  # wider or taller than 4:1 is rejected: no image model takes it
ECHO_CHARS = 60  # how much of what the user typed an error message repeats (Discord refuses replies over 2,000)

_ASPECT_RATIO = re.compile(r"^(\d{1,3}):(\d{1,3})$")
_WHOLE_NUMBER = re.compile(r"[+-]?\d{1,20}")


class ValueType(StrEnum):
    """What a platform's typed option holds (Discord: integer, number, string)."""

    INTEGER = "integer"
    NUMBER = "number"
    TEXT = "text"


@dataclass(frozen=True)
class OptionSpec:
    """One option as every part of the bot knows it. `name` is the `Options` field and Discord's option name."""

    name: str
    flag: str  # as the usage text and errors show it
    aliases: tuple[str, ...]  # what may be typed after `--` (the flag's own name included)
    commands: frozenset[CommandName]
    example: str
    description: str  # Discord's option description (at most 100 characters)
    value_type: ValueType
    read: Callable[[str, OptionSpec], object] = field(repr=False)
    low: float | None = None
    high: float | None = None


def echo(typed: str) -> str:
    """What the user typed, as an error message repeats it: short, so the reply stays readable and sendable."""
    return typed if len(typed) <= ECHO_CHARS else typed[:ECHO_CHARS] + "…"


def _text(value: str, spec: OptionSpec) -> str:
    return value


def _whole_number(value: str, spec: OptionSpec) -> int:
    if not _WHOLE_NUMBER.fullmatch(value.strip()):
        raise BadOptionValue(f"`{spec.flag} {echo(value)}` isn't a whole number; try `{spec.example}`.")
    number = int(value)
    low, high = int(spec.low or 0), (int(spec.high) if spec.high is not None else None)
    if number < low or (high is not None and number > high):
        upper = f"{high:,}" if high is not None else "∞"
        raise BadOptionValue(f"`{spec.flag}` must be between {low} and {upper}; got {number}.")
    return number


def _clamped_number(value: str, spec: OptionSpec) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadOptionValue(f"`{spec.flag} {echo(value)}` isn't a number; try `{spec.example}`.")
    low = spec.low if spec.low is not None else -math.inf
    high = spec.high if spec.high is not None else math.inf
    return min(max(number, low), high)


def _aspect_ratio(value: str, spec: OptionSpec) -> str:
    match = _ASPECT_RATIO.match(value.strip())
    if not match:
        raise BadOptionValue(
            f"`{spec.flag} {echo(value)}` isn't an aspect ratio; write it as `W:H`, for example `{spec.example}`."
        )
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0 or max(width / height, height / width) > ASPECT_RATIO_LIMIT:
        raise BadOptionValue(f"`{spec.flag} {echo(value)}` is out of range; use something between 1:4 and 4:1.")
    return f"{width}:{height}"


BOTH = frozenset(CommandName)
ASK_ONLY = frozenset({CommandName.ASK})
IMAGINE_ONLY = frozenset({CommandName.IMAGINE})

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("aspect_ratio", "--ar", ("ar", "aspect", "aspect-ratio"), IMAGINE_ONLY, "--ar 16:9", "Width:height",
               ValueType.TEXT, _aspect_ratio),
    OptionSpec("seed", "--seed", ("seed",), IMAGINE_ONLY, "--seed 42", "Same seed + same prompt = same picture",
               ValueType.INTEGER, _whole_number, low=0, high=SEED_MAX),
    OptionSpec("negative_prompt", "--no", ("no", "negative-prompt"), IMAGINE_ONLY, "--no text, watermark",
               "What to leave out (models that support it)", ValueType.TEXT, _text),
    # The upper bound of `--max-tokens` is the operator's cap and the model's own, applied by `bot.parsing`.
    OptionSpec("max_tokens", "--max-tokens", ("max-tokens",), ASK_ONLY, "--max-tokens 500",
               "Longest answer, in tokens", ValueType.INTEGER, _whole_number, low=1),
    OptionSpec("temperature", "--temperature", ("temperature", "temp"), ASK_ONLY, "--temperature 0.7",
               "0 = focused, 2 = adventurous", ValueType.NUMBER, _clamped_number,
               low=TEMPERATURE_RANGE[0], high=TEMPERATURE_RANGE[1]),
    # `--model` is read by `bot.parsing`, which knows the operator's allow-list.
    OptionSpec("model", "--model", ("model",), BOTH, "--model owner/name", "Which model runs it",
               ValueType.TEXT, _text),
)

BY_NAME: dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}
BY_ALIAS: dict[str, OptionSpec] = {alias: spec for spec in OPTIONS for alias in spec.aliases}

USAGE_EXAMPLE: dict[CommandName, tuple[str, str]] = {
    CommandName.ASK: ("<question>", "What is a monad?"),
    CommandName.IMAGINE: ("<description>", "a lighthouse at dusk --ar 16:9"),
}


def options_for(command: CommandName) -> tuple[OptionSpec, ...]:
    return tuple(spec for spec in OPTIONS if command in spec.commands)


def usage_text(command: CommandName) -> str:
    """What a user sees for an empty command: how to use it, with the options it takes."""
    placeholder, example = USAGE_EXAMPLE[command]
    listed = ", ".join(f"`{spec.example}`" for spec in options_for(command))
    return (
        f"Usage: `/{command} {placeholder}` — for example `/{command} {example}`\n"
        f"Options (at the end): {listed}"
    )
