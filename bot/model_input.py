"""A validated request → the input dict one particular model expects (the model table says how)."""

from __future__ import annotations

import math
from typing import Any

from bot.errors import BadOptionValue
from bot.requests import CommandName, CommandRequest
from config.models import ModelProfile, SizeStyle

SDXL_TARGET_PIXELS = 1024 * 1024
DIMENSION_STEP = 64


def build_model_input(request: CommandRequest, profile: ModelProfile) -> dict[str, Any]:
    """Defaults from the profile, then the prompt, then the user's options under the model's own names."""
    options = request.options
    model_input: dict[str, Any] = dict(profile.default_input)
    model_input["prompt"] = request.prompt
    if request.command is CommandName.ASK:
        if options.max_tokens is not None:
            model_input["max_tokens"] = options.max_tokens
        if options.temperature is not None:
            model_input["temperature"] = options.temperature
        return model_input
    if options.seed is not None:
        model_input["seed"] = options.seed
    if options.negative_prompt is not None:
        if profile.negative_prompt_field is None:
            raise BadOptionValue(f"`--no` isn't supported by `{request.model}`; describe what you want instead.")
        model_input[profile.negative_prompt_field] = options.negative_prompt
    if options.aspect_ratio is not None:
        model_input.update(_size_input(options.aspect_ratio, profile))
    return model_input


def _size_input(aspect_ratio: str, profile: ModelProfile) -> dict[str, Any]:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    if profile.size_style is SizeStyle.DIMENSIONS:
        return dict(zip(("width", "height"), dimensions_for(width / height)))
    if profile.aspect_ratios and aspect_ratio not in profile.aspect_ratios:
        aspect_ratio = nearest_aspect_ratio(width / height, profile.aspect_ratios)
    return {"aspect_ratio": aspect_ratio}


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
