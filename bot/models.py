"""What a Replicate model is (text or images) and which of our options it takes, read from its own schema.

Every model version on Replicate carries an OpenAPI schema (`latest_version.openapi_schema`, see
replicate/model.py and version.py): `components.schemas.Input` lists the inputs (ordered by `x-order`,
bounds as `minimum`/`maximum`, choices as `allOf: [{"$ref": "#/components/schemas/<name>"}]` whose enum
lives under `components.schemas`), and `components.schemas.Output` says what comes back. Streamed text
is an array of strings marked `x-cog-array-type: iterator` (replicate/run.py), some text models return
one plain string, and image models return file URLs (`format: uri`), one or an array.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from bot.requests import CommandName
from config.models import GENERIC_IMAGE, ModelProfile, SizeStyle, known_profile


class ModelKind(StrEnum):
    TEXT = "text"  # serves /ask
    IMAGE = "image"  # serves /imagine
    OTHER = "other"  # neither (audio, JSON, needs an input image…): the bot can't use it


KIND_FOR_COMMAND: Mapping[CommandName, ModelKind] = MappingProxyType(
    {CommandName.ASK: ModelKind.TEXT, CommandName.IMAGINE: ModelKind.IMAGE}
)
# Names models use for the longest answer, most common first (Llama: max_tokens; OpenAI's: max_completion_tokens).
MAX_TOKENS_FIELDS = ("max_tokens", "max_new_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True)
class Bounds:
    """A numeric input's `minimum`/`maximum`; None is unbounded on that side."""

    minimum: float | None = None
    maximum: float | None = None

    def clamp(self, value: float) -> float:
        if self.minimum is not None:
            value = max(value, self.minimum)
        if self.maximum is not None:
            value = min(value, self.maximum)
        return value


@dataclass(frozen=True)
class ModelInfo:
    """One model as the bot uses it: its kind and where each of our options goes (None: not taken)."""

    ref: str
    kind: ModelKind
    description: str | None = None
    size_style: SizeStyle | None = None  # None: the model takes no shape at all
    aspect_ratios: tuple[str, ...] = ()  # the model's own "W:H" choices; empty: any ratio is passed through
    width: Bounds = Bounds()
    height: Bounds = Bounds()
    negative_prompt_field: str | None = None
    seed_field: str | None = None
    max_tokens_field: str | None = None
    max_tokens: Bounds = Bounds()
    temperature_field: str | None = None
    temperature: Bounds = Bounds()
    system_prompt_field: str | None = None
    takes_prompt_template: bool = False
    messages_field: str | None = None  # a chat model's list of {"role", "content"} messages (OpenAI-style)
    fixed_input: Mapping[str, Any] = field(default_factory=dict)  # sent as is (e.g. one image per prediction)
    why_unusable: str | None = None  # for OTHER: what the start-up log says


def describe_schema(ref: str, description: str | None, openapi_schema: Mapping[str, Any]) -> ModelInfo:
    """The `ModelInfo` of a model version, from its OpenAPI schema alone (pure: no I/O)."""
    schemas = _dig(openapi_schema, "components", "schemas")
    inputs = _dig(schemas, "Input", "properties")
    required = set(_dig(schemas, "Input").get("required") or ())
    kind, why = _output_kind(_dig(schemas, "Output"))
    if "prompt" not in inputs:
        kind, why = ModelKind.OTHER, "it takes no text prompt"
    elif extra := sorted(required - {"prompt"}):
        kind, why = ModelKind.OTHER, f"it requires inputs the bot can't give ({', '.join(extra)})"
    if kind is not ModelKind.IMAGE:
        max_tokens_field = next((name for name in MAX_TOKENS_FIELDS if name in inputs), None)
        return ModelInfo(
            ref=ref,
            kind=kind,
            description=description,
            max_tokens_field=max_tokens_field,
            max_tokens=_bounds(inputs[max_tokens_field] if max_tokens_field else {}),
            temperature_field="temperature" if "temperature" in inputs else None,
            temperature=_bounds(inputs.get("temperature", {})),
            system_prompt_field="system_prompt" if "system_prompt" in inputs else None,
            takes_prompt_template="prompt_template" in inputs,
            messages_field="messages" if inputs.get("messages", {}).get("type") == "array" else None,
            why_unusable=why,
        )
    size_style: SizeStyle | None = None
    aspect_ratios: tuple[str, ...] = ()
    if "aspect_ratio" in inputs:
        size_style = SizeStyle.ASPECT_RATIO
        aspect_ratios = tuple(value for value in _choices(inputs["aspect_ratio"], schemas) if _is_ratio(value))
    elif "width" in inputs and "height" in inputs:
        size_style = SizeStyle.DIMENSIONS
    return ModelInfo(
        ref=ref,
        kind=kind,
        description=description,
        size_style=size_style,
        aspect_ratios=aspect_ratios,
        width=_bounds(inputs.get("width", {}), _choices(inputs.get("width", {}), schemas)),
        height=_bounds(inputs.get("height", {}), _choices(inputs.get("height", {}), schemas)),
        negative_prompt_field="negative_prompt" if "negative_prompt" in inputs else None,
        seed_field="seed" if "seed" in inputs else None,
        fixed_input=MappingProxyType({"num_outputs": 1} if "num_outputs" in inputs else {}),
    )


def describe_profile(ref: str, kind: ModelKind, profile: ModelProfile | None = None) -> ModelInfo:
    """The `ModelInfo` the fallback table gives `ref` (the common conventions when it isn't listed)."""
    if kind is ModelKind.TEXT:
        profile = profile or known_profile(ref)
        return ModelInfo(
            ref=ref,
            kind=kind,
            max_tokens_field="max_tokens",
            temperature_field="temperature",
            system_prompt_field="system_prompt" if profile else None,
            takes_prompt_template=profile.takes_prompt_template if profile else False,
        )
    profile = profile or known_profile(ref) or GENERIC_IMAGE
    return ModelInfo(
        ref=ref,
        kind=kind,
        size_style=profile.size_style,
        aspect_ratios=profile.aspect_ratios,
        negative_prompt_field=profile.negative_prompt_field,
        seed_field="seed",
        fixed_input=MappingProxyType(dict(profile.default_input)),
    )


def _output_kind(output: Mapping[str, Any]) -> tuple[ModelKind, str | None]:
    items = output.get("items") if output.get("type") == "array" else output
    if not isinstance(items, Mapping) or items.get("type") != "string":
        return ModelKind.OTHER, "its output is neither text nor images"
    return (ModelKind.IMAGE, None) if items.get("format") == "uri" else (ModelKind.TEXT, None)


def _choices(prop: Mapping[str, Any], schemas: Mapping[str, Any]) -> tuple[Any, ...]:
    """An input's allowed values: its own `enum`, or the enum its `allOf`/`$ref` points at."""
    if "enum" in prop:
        return tuple(prop["enum"])
    for part in prop.get("allOf") or ():
        reference = part.get("$ref", "") if isinstance(part, Mapping) else ""
        target = schemas.get(reference.rsplit("/", 1)[-1], {}) if reference.startswith("#/components/schemas/") else {}
        if "enum" in target:
            return tuple(target["enum"])
    return ()


def _bounds(prop: Mapping[str, Any], choices: tuple[Any, ...] = ()) -> Bounds:
    numbers = [value for value in choices if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if numbers:
        return Bounds(min(numbers), max(numbers))
    return Bounds(_number(prop.get("minimum")), _number(prop.get("maximum")))


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return value
    return None


def _is_ratio(value: Any) -> bool:
    """"16:9" is; "custom" and "match_input_image" (choices some models list) are not."""
    if not isinstance(value, str):
        return False
    width, _, height = value.partition(":")
    return width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0


def _dig(mapping: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    for key in keys:
        value = mapping.get(key) if isinstance(mapping, Mapping) else None
        mapping = value if isinstance(value, Mapping) else {}
    return mapping
