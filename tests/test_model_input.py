"""`bot.model_input`: a validated request → the input dict its model takes, per what the model's schema says."""

from __future__ import annotations

import math
from typing import Any, TypedDict, Unpack

import pytest

from bot.model_input import ModelInput, build_model_input, dimensions_for, nearest_aspect_ratio
from bot.models import ModelInfo, ModelKind, describe_profile, describe_schema
from bot.requests import CommandName, CommandRequest, Options, Origin
from config.models import ASK_SYSTEM_PROMPT, DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL, FLUX_ASPECT_RATIOS, SizeStyle
from tests.fakes import replicate_schemas

SDXL = "stability-ai/sdxl"
ORIGIN = Origin(platform="test", user_id="U1", channel_id="C1")
SCHEMAS = {
    DEFAULT_ASK_MODEL: replicate_schemas.LLAMA_3_INSTRUCT,
    DEFAULT_IMAGINE_MODEL: replicate_schemas.FLUX_SCHNELL,
    SDXL: replicate_schemas.SDXL,
}


def info_of(model: str) -> ModelInfo:
    """The model as its real-shaped schema describes it; unknown models as the generic conventions."""
    schema = SCHEMAS.get(model.partition(":")[0])
    if schema is None:
        return describe_profile(model, ModelKind.IMAGE if "image" in model else ModelKind.TEXT)
    return describe_schema(model, None, schema)


class OptionValues(TypedDict, total=False):
    """`Options`' fields as keyword arguments (but `model`: the helpers take the model as their own argument)."""

    aspect_ratio: str | None
    seed: int | None
    negative_prompt: str | None
    max_tokens: int | None
    temperature: float | None


def request(command: CommandName, model: str, prompt: str = "a prompt",
            **options: Unpack[OptionValues]) -> CommandRequest:
    return CommandRequest(command=command, prompt=prompt, options=Options(**options), origin=ORIGIN, model=model)


def built(command: CommandName, model: str, **options: Unpack[OptionValues]) -> ModelInput:
    return build_model_input(request(command, model, **options), info_of(model))


def ask_input(model: str = DEFAULT_ASK_MODEL, **options: Unpack[OptionValues]) -> dict[str, Any]:
    return built(CommandName.ASK, model, **options).values


def imagine_input(model: str = DEFAULT_IMAGINE_MODEL, **options: Unpack[OptionValues]) -> dict[str, Any]:
    return built(CommandName.IMAGINE, model, **options).values


def ratio_of(aspect_ratio: str) -> float:
    width, height = (int(side) for side in aspect_ratio.split(":"))
    return width / height


# --- /ask -------------------------------------------------------------------------------------------


def test_ask_uses_the_system_prompt_and_the_default_answer_length() -> None:
    assert ask_input() == {"system_prompt": ASK_SYSTEM_PROMPT, "max_tokens": 1024, "prompt": "a prompt"}


def test_ask_options_override_the_defaults() -> None:
    model_input = ask_input(max_tokens=50, temperature=0.0)

    assert model_input["max_tokens"] == 50
    assert model_input["temperature"] == 0.0
    assert model_input["system_prompt"] == ASK_SYSTEM_PROMPT


def test_ask_options_are_clamped_to_the_models_own_bounds() -> None:
    schema = replicate_schemas.cog_schema(
        {"prompt": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 16, "maximum": 256},
         "temperature": {"type": "number", "minimum": 0.1, "maximum": 1.0}},
        replicate_schemas.STREAMED_TEXT_OUTPUT,
    )
    info = describe_schema("acme/small", None, schema)

    high = build_model_input(request(CommandName.ASK, "acme/small", max_tokens=4000, temperature=2.0), info).values
    low = build_model_input(request(CommandName.ASK, "acme/small", max_tokens=1, temperature=0.0), info).values

    assert (high["max_tokens"], high["temperature"]) == (256, 1.0)
    assert (low["max_tokens"], low["temperature"]) == (16, 0.1)
    assert build_model_input(request(CommandName.ASK, "acme/small"), info).values["max_tokens"] == 256


def test_a_text_model_without_a_system_prompt_gets_none() -> None:
    schema = replicate_schemas.cog_schema({"prompt": {"type": "string"}}, replicate_schemas.PLAIN_TEXT_OUTPUT)

    info = describe_schema("acme/plain", None, schema)

    built = build_model_input(request(CommandName.ASK, "acme/plain", max_tokens=5), info)
    assert built.values == {"prompt": "a prompt"}


def test_unknown_text_model_gets_the_generic_text_conventions() -> None:
    assert ask_input("someone/new-llm") == {"max_tokens": 1024, "prompt": "a prompt"}


def test_pinned_version_of_a_known_model_uses_that_models_schema() -> None:
    assert ask_input(f"{DEFAULT_ASK_MODEL}:{'f' * 64}")["system_prompt"] == ASK_SYSTEM_PROMPT


# --- /imagine on FLUX -------------------------------------------------------------------------------


def test_flux_gets_one_image_and_the_prompt() -> None:
    assert imagine_input() == {"num_outputs": 1, "prompt": "a prompt"}


@pytest.mark.parametrize("aspect_ratio", FLUX_ASPECT_RATIOS)
def test_flux_supported_aspect_ratio_is_passed_through(aspect_ratio: str) -> None:
    assert imagine_input(aspect_ratio=aspect_ratio)["aspect_ratio"] == aspect_ratio


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("16:10", "3:2"),  # 1.6 is nearer 3:2 (1.5) than 16:9 (1.78), on any scale
        ("1:2", "9:16"),
        ("2:1", "16:9"),
        ("4:1", "21:9"),
        ("1:4", "9:21"),
        ("2:2", "1:1"),
        ("10:11", "1:1"),
        ("7:5", "4:3"),
        ("5:7", "3:4"),
    ],
)
def test_flux_unsupported_aspect_ratio_maps_to_the_nearest_supported_one(requested: str, expected: str) -> None:
    assert imagine_input(aspect_ratio=requested)["aspect_ratio"] == expected


@pytest.mark.parametrize("requested", ["1:2", "1:3", "2:5", "9:20"])
def test_flux_tall_request_stays_tall(requested: str) -> None:
    mapped = imagine_input(aspect_ratio=requested)["aspect_ratio"]

    assert mapped in FLUX_ASPECT_RATIOS
    assert ratio_of(mapped) < 1


def test_nearest_aspect_ratio_is_measured_on_a_log_scale() -> None:
    assert nearest_aspect_ratio(2.0, ("1:1", "4:1")) == nearest_aspect_ratio(0.5, ("1:1", "1:4"))
    assert nearest_aspect_ratio(1.9, ("1:1", "4:1")) == "1:1"
    assert nearest_aspect_ratio(2.1, ("1:1", "4:1")) == "4:1"


def test_negative_prompt_on_flux_is_left_out_and_noted_naming_the_model() -> None:
    result = built(CommandName.IMAGINE, DEFAULT_IMAGINE_MODEL, negative_prompt="text")

    assert "negative_prompt" not in result.values
    [note] = result.notes
    assert DEFAULT_IMAGINE_MODEL in note and "`--no` was not used" in note


def test_a_seed_for_a_model_without_one_is_noted() -> None:
    schema = replicate_schemas.cog_schema({"prompt": {"type": "string"}}, replicate_schemas.SINGLE_IMAGE_OUTPUT)
    info = describe_schema("acme/seedless", None, schema)

    result = build_model_input(request(CommandName.IMAGINE, "acme/seedless", seed=3, aspect_ratio="16:9"), info)

    assert result.values == {"prompt": "a prompt"}
    assert [note.split(" was")[0] for note in result.notes] == ["`--seed`", "`--ar`"]


def test_seed_is_passed_through() -> None:
    assert imagine_input(seed=42)["seed"] == 42
    assert imagine_input(SDXL, seed=0)["seed"] == 0


def test_ask_only_options_are_not_sent_to_an_image_model() -> None:
    model_input = imagine_input(max_tokens=5, temperature=1.0)

    assert "max_tokens" not in model_input
    assert "temperature" not in model_input


# --- /imagine on SDXL -------------------------------------------------------------------------------


def test_sdxl_gets_one_image_and_the_prompt() -> None:
    assert imagine_input(SDXL) == {"num_outputs": 1, "prompt": "a prompt"}


@pytest.mark.parametrize(("aspect_ratio", "expected"), [("4:1", (1536, 384)), ("1:4", (384, 1536))])
def test_width_and_height_stay_within_the_models_bounds_keeping_the_ratio(
    aspect_ratio: str, expected: tuple[int, int]
) -> None:
    model_input = imagine_input(SDXL, aspect_ratio=aspect_ratio)  # 2048 x 512 at one megapixel; SDXL takes ≤1536

    assert (model_input["width"], model_input["height"]) == expected


@pytest.mark.parametrize("aspect_ratio", ["1:1", "16:9", "9:16", "3:2", "2:3", "21:9", "7:5"])
def test_sdxl_gets_width_and_height_in_multiples_of_64_near_one_megapixel(aspect_ratio: str) -> None:
    model_input = imagine_input(SDXL, aspect_ratio=aspect_ratio)
    width, height = model_input["width"], model_input["height"]

    assert "aspect_ratio" not in model_input
    assert width % 64 == 0 and height % 64 == 0
    assert 0.85 * 1024 * 1024 <= width * height <= 1.15 * 1024 * 1024
    assert math.isclose(width / height, ratio_of(aspect_ratio), rel_tol=0.1)


def test_sdxl_16_9_is_the_usual_1344_by_768() -> None:
    assert dimensions_for(16 / 9) == (1344, 768)


def test_sdxl_negative_prompt_is_sent_as_negative_prompt() -> None:
    assert imagine_input(SDXL, negative_prompt="blurry, text")["negative_prompt"] == "blurry, text"


# --- unknown image models ---------------------------------------------------------------------------


def test_unknown_image_model_gets_the_generic_image_conventions() -> None:
    info = info_of("someone/new-image-model")

    assert info.size_style is SizeStyle.ASPECT_RATIO
    assert info.aspect_ratios == ()
    assert info.negative_prompt_field == "negative_prompt"


def test_unknown_image_model_gets_any_aspect_ratio_and_negative_prompt_as_given() -> None:
    model_input = imagine_input("someone/new-image-model", aspect_ratio="7:5", negative_prompt="fog", seed=3)

    assert model_input == {"prompt": "a prompt", "aspect_ratio": "7:5", "negative_prompt": "fog", "seed": 3}
