"""A validated request → the input dict its model takes, by what the model's schema says it accepts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bot.conversations import conversation_input
from bot.models import Bounds, ModelInfo, ModelKind
from bot.requests import CommandRequest
from config.models import ASK_SYSTEM_PROMPT, DEFAULT_MAX_TOKENS, SizeStyle

SDXL_TARGET_PIXELS = 1024 * 1024
DIMENSION_STEP = 64


@dataclass(frozen=True)
class ModelInput:
    values: dict[str, Any]
    notes: tuple[str, ...] = ()  # options the model takes no input for: the reply says they were not used


def build_model_input(
    request: CommandRequest, info: ModelInfo, *, system_prompt: str = ASK_SYSTEM_PROMPT,
    context_max_chars: int = 12_000,
) -> ModelInput:
    """Fixed inputs, the prompt (with a conversation's earlier turns, the way the model takes them), then the
    user's options under the model's own names and within its bounds."""
    options = request.options
    values: dict[str, Any] = dict(info.fixed_input)
    values["prompt"] = request.prompt
    if info.kind is ModelKind.TEXT:
        if info.system_prompt_field:
            values[info.system_prompt_field] = system_prompt
        if request.context:
            values.update(conversation_input(info, system_prompt, request.context, request.prompt, context_max_chars))
        if info.max_tokens_field:
            wanted = options.max_tokens if options.max_tokens is not None else DEFAULT_MAX_TOKENS
            values[info.max_tokens_field] = int(info.max_tokens.clamp(wanted))
        if info.temperature_field and options.temperature is not None:
            values[info.temperature_field] = info.temperature.clamp(options.temperature)
        return ModelInput(values)
    unused: list[str] = []
    if options.seed is not None:
        if info.seed_field:
            values[info.seed_field] = options.seed
        else:
            unused.append(f"`--seed` was not used: `{info.ref}` takes no seed.")
    if options.negative_prompt is not None:
        if info.negative_prompt_field:
            values[info.negative_prompt_field] = options.negative_prompt
        else:
            unused.append(f"`--no` was not used: `{info.ref}` takes no negative prompt.")
    if options.aspect_ratio is not None:
        if info.size_style is None:
            unused.append(f"`--ar` was not used: `{info.ref}` takes no aspect ratio or size.")
        else:
            values.update(_size_input(options.aspect_ratio, info))
    return ModelInput(values, tuple(unused))


def _size_input(aspect_ratio: str, info: ModelInfo) -> dict[str, Any]:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if info.size_style is SizeStyle.DIMENSIONS:
        pixels_wide, pixels_high = _within_bounds(*dimensions_for(width / height), info)
        return {"width": pixels_wide, "height": pixels_high}
    if info.aspect_ratios and aspect_ratio not in info.aspect_ratios:
        aspect_ratio = nearest_aspect_ratio(width / height, info.aspect_ratios)
    return {"aspect_ratio": aspect_ratio}


def _within_bounds(width: int, height: int, info: ModelInfo) -> tuple[int, int]:
    """Shrunk, keeping the ratio, until neither side passes the model's maximum; then each side clamped."""
    scale = 1.0
    for size, bounds in ((width, info.width), (height, info.height)):
        if bounds.maximum is not None and size > bounds.maximum:
            scale = min(scale, bounds.maximum / size)
    return (_clamped(width * scale, info.width), _clamped(height * scale, info.height))


def _clamped(pixels: float, bounds: Bounds) -> int:
    stepped = max(DIMENSION_STEP, math.floor(pixels / DIMENSION_STEP) * DIMENSION_STEP)
    return int(bounds.clamp(stepped))


def dimensions_for(ratio: float) -> tuple[int, int]:
    """Width and height of about one megapixel at `ratio`, in the multiples of 64 SD-style models need."""
    height = math.sqrt(SDXL_TARGET_PIXELS / ratio)
    width = height * ratio
    return (
        max(DIMENSION_STEP, round(width / DIMENSION_STEP) * DIMENSION_STEP),
        max(DIMENSION_STEP, round(height / DIMENSION_STEP) * DIMENSION_STEP),
    )


def nearest_aspect_ratio(ratio: float, supported: tuple[str, ...]) -> str:
    """The supported "W:H" closest to `ratio` on a log scale (so 2:1 and 1:2 are equally far from 1:1)."""

    def distance(candidate: str) -> float:
        width, height = (int(part) for part in candidate.split(":"))
        return abs(math.log(width / height) - math.log(ratio))

    return min(supported, key=distance)
