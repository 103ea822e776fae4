"""The default models, and the fallback table: what the bot assumes about models when Replicate can't say.

At start-up the bot reads each configured model's kind and inputs from its schema on Replicate
(`bot.model_catalog`). This table is used only when that look-up could not be made (Replicate
unreachable, token refused): it covers the well-known models, and a model not listed gets the
common conventions.
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
DEFAULT_MAX_TOKENS = 1024  # sent when the user gives no --max-tokens (models' own defaults are often 512)


class SizeStyle(StrEnum):
    """How an image model takes its shape."""

    ASPECT_RATIO = "aspect_ratio"  # a fixed list of "W:H" strings
    DIMENSIONS = "dimensions"  # width and height in pixels


@dataclass(frozen=True)
class ModelProfile:
    is_image: bool
    default_input: Mapping[str, Any] = field(default_factory=dict)
    size_style: SizeStyle = SizeStyle.ASPECT_RATIO
    aspect_ratios: tuple[str, ...] = ()  # empty: any ratio is passed through
    negative_prompt_field: str | None = "negative_prompt"
    takes_prompt_template: bool = False  # a text model with a chat template input (Llama 3: `prompt_template`)


# The aspect ratios FLUX models list in their schemas; also what Discord offers when no model lists any.
FLUX_ASPECT_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")

_PROFILES: Mapping[str, ModelProfile] = MappingProxyType(
    {
        "meta/meta-llama-3-8b-instruct": ModelProfile(is_image=False, takes_prompt_template=True),
        "meta/meta-llama-3-70b-instruct": ModelProfile(is_image=False, takes_prompt_template=True),
        "black-forest-labs/flux-schnell": ModelProfile(
            is_image=True,
            default_input={"num_outputs": 1},
            aspect_ratios=FLUX_ASPECT_RATIOS,
            negative_prompt_field=None,
        ),
        "black-forest-labs/flux-dev": ModelProfile(
            is_image=True,
            default_input={"num_outputs": 1},
            aspect_ratios=FLUX_ASPECT_RATIOS,
            negative_prompt_field=None,
        ),
        "stability-ai/sdxl": ModelProfile(
            is_image=True,
            default_input={"num_outputs": 1, "width": 1024, "height": 1024},
            size_style=SizeStyle.DIMENSIONS,
        ),
    }
)
GENERIC_IMAGE = ModelProfile(is_image=True)


def known_profile(model_ref: str) -> ModelProfile | None:
    """The table's profile of `owner/name[:version]`, or None for a model the table doesn't know."""
    return _PROFILES.get(model_ref.partition(":")[0].lower())
