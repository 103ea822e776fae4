"""The default model table: which model each command runs and how our options map onto its inputs.

Replicate models name their inputs differently (FLUX takes `aspect_ratio`, SDXL `width`/`height`);
this table is the one place that knows. A model not listed gets the common conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

DEFAULT_ASK_MODEL = "meta/meta-llama-3-8b-instruct"
DEFAULT_IMAGINE_MODEL = "black-forest-labs/flux-schnell"

ASK_SYSTEM_PROMPT = (
    "You are a helpful assistant answering in a team chat. Be accurate and concise; "
    "use short paragraphs and Markdown code blocks for code."
)


class SizeStyle(StrEnum):
    """How an image model takes its shape."""

    ASPECT_RATIO = "aspect_ratio"  # a fixed list of "W:H" strings
    DIMENSIONS = "dimensions"  # width and height in pixels


@dataclass(frozen=True)
class ModelProfile:
    default_input: Mapping[str, Any] = field(default_factory=dict)
    size_style: SizeStyle = SizeStyle.ASPECT_RATIO
    aspect_ratios: tuple[str, ...] = ()  # empty: any ratio is passed through
    negative_prompt_field: str | None = "negative_prompt"


FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")

_PROFILES: Mapping[str, ModelProfile] = MappingProxyType(
    {
        "meta/meta-llama-3-8b-instruct": ModelProfile(
            default_input={"system_prompt": ASK_SYSTEM_PROMPT, "max_tokens": 1024, "temperature": 0.7},
        ),
        "meta/meta-llama-3-70b-instruct": ModelProfile(
            default_input={"system_prompt": ASK_SYSTEM_PROMPT, "max_tokens": 1024, "temperature": 0.7},
        ),
        "black-forest-labs/flux-schnell": ModelProfile(
            default_input={"num_outputs": 1, "output_format": "webp"},
            aspect_ratios=FLUX_ASPECT_RATIOS,
            negative_prompt_field=None,
        ),
        "black-forest-labs/flux-dev": ModelProfile(
            default_input={"num_outputs": 1, "output_format": "webp"},
            aspect_ratios=FLUX_ASPECT_RATIOS,
            negative_prompt_field=None,
        ),
        "stability-ai/sdxl": ModelProfile(
            default_input={"num_outputs": 1, "width": 1024, "height": 1024},
            size_style=SizeStyle.DIMENSIONS,
        ),
    }
)
_GENERIC_TEXT = ModelProfile(default_input={"max_tokens": 1024})
_GENERIC_IMAGE = ModelProfile()


def profile_for(model_ref: str, *, is_image: bool) -> ModelProfile:
    """The profile of `owner/name[:version]`; unknown models get the common conventions."""
    name = model_ref.partition(":")[0]
    return _PROFILES.get(name, _GENERIC_IMAGE if is_image else _GENERIC_TEXT)
