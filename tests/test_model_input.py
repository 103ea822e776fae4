"""`bot.model_input` with `config.models`: a validated request → the input dict its model expects."""

from __future__ import annotations

import math

import pytest

from bot.errors import BadOptionValue
from bot.model_input import build_model_input, dimensions_for, nearest_aspect_ratio
from bot.requests import CommandName, CommandRequest, Options, Origin
from config.models import (
    ASK_SYSTEM_PROMPT,
    DEFAULT_ASK_MODEL,
    DEFAULT_IMAGINE_MODEL,
    FLUX_ASPECT_RATIOS,
    SizeStyle,
    profile_for,
)

SDXL = "stability-ai/sdxl"
ORIGIN = Origin(platform="test", user_id="U1", channel_id="C1")


def request(command: CommandName, model: str, prompt: str = "a prompt", **options: object) -> CommandRequest:
    return CommandRequest(command=command, prompt=prompt, options=Options(**options), origin=ORIGIN, model=model)


def ask_input(model: str = DEFAULT_ASK_MODEL, **options: object) -> dict:
    return build_model_input(request(CommandName.ASK, model, **options), profile_for(model, is_image=False))


def imagine_input(model: str = DEFAULT_IMAGINE_MODEL, **options: object) -> dict:
    return build_model_input(request(CommandName.IMAGINE, model, **options), profile_for(model, is_image=True))


def ratio_of(aspect_ratio: str) -> float:
    width, height = (int(side) for side in aspect_ratio.split(":"))
    return width / height


# --- /ask -------------------------------------------------------------------------------------------


def test_ask_uses_the_system_prompt_and_default_limits() -> None:
    assert ask_input() == {
        "system_prompt": ASK_SYSTEM_PROMPT,
        "max_tokens": 1024,
        "temperature": 0.7,
        "prompt": "a prompt",
    }


def test_ask_options_override_the_defaults() -> None:
    model_input = ask_input(max_tokens=50, temperature=0.0)

    assert model_input["max_tokens"] == 50
    assert model_input["temperature"] == 0.0
    assert model_input["system_prompt"] == ASK_SYSTEM_PROMPT


def test_building_an_input_does_not_change_the_model_profile() -> None:
    ask_input(max_tokens=7)

    assert ask_input()["max_tokens"] == 1024


def test_unknown_text_model_gets_the_generic_text_profile() -> None:
    assert ask_input("someone/new-llm") == {"max_tokens": 1024, "prompt": "a prompt"}


def test_pinned_version_of_a_known_model_uses_that_models_profile() -> None:
    assert ask_input(f"{DEFAULT_ASK_MODEL}:{'f' * 64}")["system_prompt"] == ASK_SYSTEM_PROMPT


# --- /imagine on FLUX -------------------------------------------------------------------------------


def test_flux_gets_its_defaults_and_the_prompt() -> None:
    assert imagine_input() == {"num_outputs": 1, "output_format": "webp", "prompt": "a prompt"}


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


def test_negative_prompt_on_flux_is_refused_naming_the_model() -> None:
    with pytest.raises(BadOptionValue) as caught:
        imagine_input(negative_prompt="text")

    assert DEFAULT_IMAGINE_MODEL in caught.value.user_message
    assert "--no" in caught.value.user_message


def test_seed_is_passed_through() -> None:
    assert imagine_input(seed=42)["seed"] == 42
    assert imagine_input(SDXL, seed=0)["seed"] == 0


def test_ask_only_options_are_not_sent_to_an_image_model() -> None:
    model_input = imagine_input(max_tokens=5, temperature=1.0)

    assert "max_tokens" not in model_input
    assert "temperature" not in model_input


# --- /imagine on SDXL -------------------------------------------------------------------------------


def test_sdxl_defaults_to_a_square_megapixel() -> None:
    assert imagine_input(SDXL) == {"num_outputs": 1, "width": 1024, "height": 1024, "prompt": "a prompt"}


@pytest.mark.parametrize("aspect_ratio", ["1:1", "16:9", "9:16", "3:2", "2:3", "4:1", "1:4", "21:9", "7:5"])
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


def test_unknown_image_model_gets_the_generic_image_profile() -> None:
    profile = profile_for("someone/new-image-model", is_image=True)

    assert profile.size_style is SizeStyle.ASPECT_RATIO
    assert profile.aspect_ratios == ()
    assert profile.negative_prompt_field == "negative_prompt"


def test_unknown_image_model_gets_any_aspect_ratio_and_negative_prompt_as_given() -> None:
    model_input = imagine_input("someone/new-image-model", aspect_ratio="7:5", negative_prompt="fog", seed=3)

    assert model_input == {"prompt": "a prompt", "aspect_ratio": "7:5", "negative_prompt": "fog", "seed": 3}
