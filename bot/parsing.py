"""Command text → prompt and validated options. Pure: no I/O, shared by every platform.

Options come Midjourney style at the end of the prompt (`a cat --ar 16:9 --seed 7`). Everything from
the first `--name` on is options; a literal `--` in a prompt is written `\\--`. Phones turn `--` into
an em dash, so `—ar` is read as `--ar` too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.errors import BadOptionValue, EmptyPrompt, ModelNotAllowed, PromptTooLong, UnknownOption
from bot.options import BY_ALIAS, BY_NAME, SEED_MAX, OptionSpec, echo, options_for, usage_text
from bot.requests import CommandName, Options

__all__ = ["SEED_MAX", "InputLimits", "ParsedCommand", "parse_command", "resolve_model", "usage_text"]

# An option starts at a whitespace-preceded `--name` (or em/en dash + name); `\--` escapes it.
_OPTION_START = re.compile(r"(?:(?<=\s)|^)(?<!\\)(?:--|—|–)([A-Za-z][A-Za-z0-9_-]*)")
_ESCAPED_DASHES = re.compile(r"\\--")
_MODEL_REF = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*(?::[0-9a-f]{64})?$")
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
        raw[_option_named(typed_name, command).name] = str(typed_value)
    for name, value in inline:
        spec = _option_named(name, command)
        if spec.name in raw:
            raise BadOptionValue(f"`{spec.flag}` is given twice. Give each option once.")
        raw[spec.name] = value
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
    raise ModelNotAllowed(f"The model `{echo(requested)}` isn't allowed here. Allowed models: {choices}.")


def _has_visible_text(prompt: str) -> bool:
    """Zero-width and direction marks (Unicode "format" characters) alone are as empty as spaces."""
    return any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in prompt)


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


def _option_named(typed: str, command: CommandName) -> OptionSpec:
    spec = BY_ALIAS.get(typed.lower().replace("_", "-"))
    allowed = options_for(command)
    if spec is None:
        known = ", ".join(f"`{option.flag}`" for option in sorted(allowed, key=lambda option: option.name))
        raise UnknownOption(
            f"Unknown option `--{echo(typed)}`. /{command} takes {known}. "
            "(To write `--` in a prompt, put a backslash before it: `\\--`.)"
        )
    if command not in spec.commands:
        other = next(name for name in CommandName if name in spec.commands)
        raise UnknownOption(f"`{spec.flag}` only works with /{other}, not /{command}.")
    return spec


def _validate_options(raw: Mapping[str, str], limits: InputLimits) -> Options:
    values: dict[str, object] = {}
    for name, value in raw.items():
        spec = BY_NAME[name]
        if not value:
            raise BadOptionValue(f"`{spec.flag}` needs a value, for example `{spec.example}`.")
        if name == "model":
            values[name] = _model(value, limits)
        else:
            values[name] = spec.read(value, spec)
    if "max_tokens" in values:
        max_tokens = values["max_tokens"]
        assert isinstance(max_tokens, int)  # read by `_whole_number` (bot.options)
        values["max_tokens"] = min(max_tokens, limits.max_tokens_cap)
    # Each value has the type its OptionSpec reads, which is its Options field's type; a dict of mixed values
    # cannot say so per key.
    return Options(**values)  # type: ignore[arg-type]


def _model(value: str, limits: InputLimits) -> str:
    reference = value.strip().lower()
    if not _MODEL_REF.match(reference):
        raise BadOptionValue(f"`--model {echo(value)}` isn't a model name. Use `owner/name` or `owner/name:version`.")
    return resolve_model(reference, limits.allowed_models)
