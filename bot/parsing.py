"""Command text → prompt and validated options. Pure: no I/O, shared by every platform.

Options come Midjourney style at the end of the prompt (`a cat --ar 16:9 --seed 7`). Everything from
the first `--name` on is options; a literal `--` in a prompt is written `\\--`. Phones turn `--` into
an em dash, so `—ar` is read as `--ar` too.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.errors import BadOptionValue, EmptyPrompt, ModelNotAllowed, PromptTooLong, UnknownOption
from bot.requests import CommandName, Options

# Names as typed → canonical option names. Canonical names match `Options` fields.
_OPTION_ALIASES: dict[str, str] = {
    "model": "model",
    "ar": "aspect_ratio",
    "aspect": "aspect_ratio",
    "aspect-ratio": "aspect_ratio",
    "seed": "seed",
    "no": "negative_prompt",
    "negative-prompt": "negative_prompt",
    "max-tokens": "max_tokens",
    "temperature": "temperature",
    "temp": "temperature",
}
_FLAG_OF: dict[str, str] = {
    "model": "--model",
    "aspect_ratio": "--ar",
    "seed": "--seed",
    "negative_prompt": "--no",
    "max_tokens": "--max-tokens",
    "temperature": "--temperature",
}
_OPTIONS_FOR: dict[CommandName, frozenset[str]] = {
    CommandName.ASK: frozenset({"model", "max_tokens", "temperature"}),
    CommandName.IMAGINE: frozenset({"model", "aspect_ratio", "seed", "negative_prompt"}),
}
_EXAMPLE: dict[str, str] = {
    "model": "--model owner/name",
    "aspect_ratio": "--ar 16:9",
    "seed": "--seed 42",
    "negative_prompt": "--no text, watermark",
    "max_tokens": "--max-tokens 500",
    "temperature": "--temperature 0.7",
}

# An option starts at a whitespace-preceded `--name` (or em/en dash + name); `\--` escapes it.
_OPTION_START = re.compile(r"(?:(?<=\s)|^)(?<!\\)(?:--|—|–)([A-Za-z][A-Za-z0-9_-]*)")
_ESCAPED_DASHES = re.compile(r"\\--")
_MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*(?::[0-9a-f]{64})?$")
_ASPECT_RATIO = re.compile(r"^(\d{1,3}):(\d{1,3})$")

SEED_MAX = 2**32 - 1
TEMPERATURE_RANGE = (0.0, 2.0)
ASPECT_RATIO_LIMIT = 4.0  # wider or taller than 4:1 is rejected: no image model takes it
ECHO_CHARS = 60  # how much of what the user typed an error message repeats (Discord refuses replies over 2,000)
LISTED_MODELS = 10


@dataclass(frozen=True)
class InputLimits:
    """What the operator allows; from config."""

    max_prompt_chars: int = 4000
    allowed_models: frozenset[str] = field(default_factory=frozenset)
    max_tokens_cap: int = 4096


@dataclass(frozen=True)
class ParsedCommand:
    prompt: str
    options: Options


def usage_text(command: CommandName) -> str:
    """What a user sees for an empty command: how to use it, with the options it takes."""
    if command is CommandName.ASK:
        return (
            "Usage: `/ask <question>` — for example `/ask What is a monad?`\n"
            "Options (at the end): `--model owner/name`, `--max-tokens N`, `--temperature X`"
        )
    return (
        "Usage: `/imagine <description>` — for example `/imagine a lighthouse at dusk --ar 16:9`\n"
        "Options (at the end): `--ar W:H`, `--seed N`, `--no TEXT`, `--model owner/name`"
    )


def parse_command(
    command: CommandName,
    text: str,
    limits: InputLimits,
    typed_options: Mapping[str, object] | None = None,
) -> ParsedCommand:
    """Split `text` into prompt and options, validating both. Raises an `InvalidCommand`."""
    cleaned = _strip_control_characters(text)
    prompt, inline = _split_options(cleaned)
    raw: dict[str, str] = {}
    for typed_name, typed_value in (typed_options or {}).items():
        if typed_value is None:
            continue
        raw[_canonical_name(typed_name, command)] = str(typed_value)
    for name, value in inline:
        canonical = _canonical_name(name, command)
        if canonical in raw:
            raise BadOptionValue(f"`{_FLAG_OF[canonical]}` is given twice. Give each option once.")
        raw[canonical] = value
    prompt = _ESCAPED_DASHES.sub("--", prompt).strip()
    if not _has_visible_text(prompt):
        raise EmptyPrompt(usage_text(command))
    if len(prompt) > limits.max_prompt_chars:
        raise PromptTooLong(
            f"Your prompt is {len(prompt):,} characters; the limit is {limits.max_prompt_chars:,}. "
            "Shorten it and try again."
        )
    return ParsedCommand(prompt=prompt, options=_validate_options(raw, limits))


def resolve_model(requested: str, allowed: frozenset[str]) -> str:
    """The allowed model reference `--model` names, or `ModelNotAllowed`."""
    if requested in allowed:
        return requested
    name, _, version = requested.partition(":")
    if version and name in allowed:
        return requested
    pinned = sorted(ref for ref in allowed if ref.partition(":")[0] == name)
    if not version and len(pinned) == 1:
        return pinned[0]
    listed = sorted(allowed)
    choices = ", ".join(f"`{ref}`" for ref in listed[:LISTED_MODELS]) or "none"
    if len(listed) > LISTED_MODELS:
        choices += f" and {len(listed) - LISTED_MODELS} more"
    raise ModelNotAllowed(f"The model `{_echo(requested)}` isn't allowed here. Allowed models: {choices}.")


def _has_visible_text(prompt: str) -> bool:
    """Zero-width and direction marks (Unicode "format" characters) alone are as empty as spaces."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in prompt)


def _echo(typed: str) -> str:
    """What the user typed, as an error message repeats it: short, so the reply stays readable and sendable."""
    return typed if len(typed) <= ECHO_CHARS else typed[:ECHO_CHARS] + "…"


def _strip_control_characters(text: str) -> str:
    # NUL and other C0/C1 controls break platform APIs and terminals; keep newlines and tabs.
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def _split_options(text: str) -> tuple[str, list[tuple[str, str]]]:
    starts = list(_OPTION_START.finditer(text))
    if not starts:
        return text, []
    prompt = text[: starts[0].start()]
    options = []
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        options.append((match.group(1), text[match.end() : end].strip()))
    return prompt, options


def _canonical_name(typed: str, command: CommandName) -> str:
    key = typed.lower().replace("_", "-")
    canonical = _OPTION_ALIASES.get(key)
    allowed = _OPTIONS_FOR[command]
    if canonical is None:
        known = ", ".join(f"`{_FLAG_OF[name]}`" for name in sorted(allowed))
        raise UnknownOption(
            f"Unknown option `--{_echo(typed)}`. /{command} takes {known}. "
            "(To write `--` in a prompt, put a backslash before it: `\\--`.)"
        )
    if canonical not in allowed:
        other = next(name for name in CommandName if canonical in _OPTIONS_FOR[name])
        raise UnknownOption(f"`{_FLAG_OF[canonical]}` only works with /{other}, not /{command}.")
    return canonical


def _validate_options(raw: Mapping[str, str], limits: InputLimits) -> Options:
    for name, value in raw.items():
        if not value:
            raise BadOptionValue(f"`{_FLAG_OF[name]}` needs a value, for example `{_EXAMPLE[name]}`.")
    values: dict[str, object] = {}
    if "model" in raw:
        reference = raw["model"].strip().lower()
        if not _MODEL_REF.match(reference):
            raise BadOptionValue(
                f"`--model {_echo(raw['model'])}` isn't a model name. Use `owner/name` or `owner/name:version`."
            )
        values["model"] = resolve_model(reference, limits.allowed_models)
    if "aspect_ratio" in raw:
        values["aspect_ratio"] = _parse_aspect_ratio(raw["aspect_ratio"])
    if "seed" in raw:
        values["seed"] = _parse_int("seed", raw["seed"], 0, SEED_MAX)
    if "negative_prompt" in raw:
        values["negative_prompt"] = raw["negative_prompt"]
    if "max_tokens" in raw:
        requested = _parse_int("max_tokens", raw["max_tokens"], 1, None)
        values["max_tokens"] = min(requested, limits.max_tokens_cap)
    if "temperature" in raw:
        values["temperature"] = _parse_temperature(raw["temperature"])
    return Options(**values)  # type: ignore[arg-type]


def _parse_int(name: str, value: str, low: int, high: int | None) -> int:
    if not re.fullmatch(r"[+-]?\d{1,20}", value.strip()):
        raise BadOptionValue(f"`{_FLAG_OF[name]} {_echo(value)}` isn't a whole number; try `{_EXAMPLE[name]}`.")
    number = int(value)
    if number < low or (high is not None and number > high):
        upper = f"{high:,}" if high is not None else "∞"
        raise BadOptionValue(f"`{_FLAG_OF[name]}` must be between {low} and {upper}; got {number}.")
    return number


def _parse_temperature(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise BadOptionValue(f"`--temperature {_echo(value)}` isn't a number; try `--temperature 0.7`.")
    low, high = TEMPERATURE_RANGE
    return min(max(number, low), high)


def _parse_aspect_ratio(value: str) -> str:
    match = _ASPECT_RATIO.match(value.strip())
    if not match:
        raise BadOptionValue(f"`--ar {_echo(value)}` isn't an aspect ratio; write it as `W:H`, for example `--ar 16:9`.")
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0 or max(width / height, height / width) > ASPECT_RATIO_LIMIT:
        raise BadOptionValue(f"`--ar {_echo(value)}` is out of range; use something between 1:4 and 4:1.")
    return f"{width}:{height}"
