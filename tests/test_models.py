"""Models know their kind: `describe_schema` on real-shaped schemas, and the bot's start-up look-ups over the wire.

The end-to-end tests run the real `BotService` against the fake Replicate (which serves the schemas in
`tests/fakes/replicate_schemas.py`) and the fake Discord or Slack, and assert on what the fakes received.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.models import Bounds, ModelKind, describe_schema
from config.models import SizeStyle
from tests import bot_harness
from tests.discord_harness import DiscordBot, discord_bot
from tests.fakes import replicate_schemas as schemas
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel

EPHEMERAL = 64
MESSAGE = 4  # interaction callback type: a message (here, the private error)
LLAMA = "meta/meta-llama-3-8b-instruct"
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
GPT = "openai/gpt-4.1-mini"


# --- describe_schema ------------------------------------------------------------------------------------


def test_flux_schnell_is_an_image_model_with_its_own_aspect_ratios_and_no_negative_prompt() -> None:
    info = describe_schema(FLUX, "fast images", schemas.FLUX_SCHNELL)

    assert info.kind is ModelKind.IMAGE and info.description == "fast images"
    assert info.size_style is SizeStyle.ASPECT_RATIO
    assert info.aspect_ratios == tuple(schemas.FLUX_RATIOS)  # the enum behind its allOf/$ref
    assert info.negative_prompt_field is None
    assert info.seed_field == "seed"
    assert dict(info.fixed_input) == {"num_outputs": 1}


def test_sdxl_takes_width_and_height_within_bounds_and_a_negative_prompt() -> None:
    info = describe_schema(SDXL, None, schemas.SDXL)

    assert info.kind is ModelKind.IMAGE
    assert info.size_style is SizeStyle.DIMENSIONS and info.aspect_ratios == ()
    assert info.width == Bounds(256, 1536) and info.height == Bounds(256, 1536)
    assert info.negative_prompt_field == "negative_prompt" and info.seed_field == "seed"


def test_llama_3_is_a_text_model_with_a_system_prompt_template_and_token_limits() -> None:
    info = describe_schema(LLAMA, None, schemas.LLAMA_3_INSTRUCT)

    assert info.kind is ModelKind.TEXT
    assert info.system_prompt_field == "system_prompt" and info.takes_prompt_template
    assert info.max_tokens_field == "max_tokens" and info.max_tokens == Bounds(1, schemas.LLAMA_3_MAX_TOKENS)
    assert info.temperature_field == "temperature" and info.temperature == Bounds(0, 5)
    assert info.size_style is None and info.negative_prompt_field is None


def test_a_model_answering_one_plain_string_is_a_text_model() -> None:
    info = describe_schema(GPT, None, schemas.GPT_4_1_MINI)

    assert info.kind is ModelKind.TEXT
    assert info.max_tokens_field == "max_completion_tokens" and info.max_tokens == Bounds(None, None)
    assert info.system_prompt_field == "system_prompt" and not info.takes_prompt_template
    assert info.messages_field == "messages"  # a conversation goes to it as a list of messages


def test_a_model_without_a_messages_list_takes_conversations_otherwise() -> None:
    assert describe_schema(LLAMA, None, schemas.LLAMA_3_INSTRUCT).messages_field is None


def test_a_single_file_output_is_an_image_model() -> None:
    schema = schemas.cog_schema({"prompt": {"type": "string"}}, schemas.SINGLE_IMAGE_OUTPUT)

    assert describe_schema("acme/one", None, schema).kind is ModelKind.IMAGE


def test_only_w_h_choices_count_as_aspect_ratios() -> None:
    schema = schemas.cog_schema(
        {"prompt": {"type": "string"}, "aspect_ratio": schemas.choice("aspect_ratio", "1:1", "ratio")},
        schemas.IMAGE_LIST_OUTPUT,
        {"aspect_ratio": ["match_input_image", "1:1", "16:9", "custom"]},
    )

    assert describe_schema("acme/kontext", None, schema).aspect_ratios == ("1:1", "16:9")


@pytest.mark.parametrize(
    ("inputs", "output", "required", "why"),
    [
        ({"prompt": {"type": "string"}}, {"type": "object", "title": "Output"}, None, "neither text nor images"),
        ({"text": {"type": "string"}}, schemas.IMAGE_LIST_OUTPUT, None, "no text prompt"),
        ({"prompt": {"type": "string"}, "image": {"type": "string", "format": "uri"}}, schemas.IMAGE_LIST_OUTPUT,
         ["prompt", "image"], "image"),
    ],
)
def test_a_model_the_bot_cannot_drive_is_neither_kind_and_says_why(
    inputs: dict[str, Any], output: dict[str, Any], required: list[str] | None, why: str
) -> None:
    info = describe_schema("acme/odd", None, schemas.cog_schema(inputs, output, required=required))

    assert info.kind is ModelKind.OTHER
    assert info.why_unusable is not None and why in info.why_unusable


# --- kind fits command, end to end -------------------------------------------------------------------------


async def test_imagine_with_a_text_model_is_refused_privately_and_creates_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with discord_bot() as bot:
        sent = await bot.interact("imagine", {"prompt": f"a cat --model {LLAMA}"})
        await bot.until(lambda: bool(bot.callbacks(sent)), "the private refusal")

        [callback] = bot.callbacks(sent)
        assert callback.type == MESSAGE and callback.data["flags"] & EPHEMERAL
        assert LLAMA in callback.data["content"] and "text model" in callback.data["content"]
        assert "/ask" in callback.data["content"]
        assert bot.replicate.requests == [] and bot.replicate.creates == []


async def test_slack_ask_with_an_image_model_is_refused_privately_and_creates_nothing() -> None:
    async with bot_harness.running_bots(discord=False) as bots:
        assert bots.slack is not None
        envelope = await bots.slack.send_slash_command(command="/ask", text=f"hello --model {FLUX}")
        ack = await bots.slack.wait_for_ack(envelope)

        assert FLUX in ack["payload"]["text"] and "image model" in ack["payload"]["text"]
        assert bots.replicate.requests == [] and bots.slack.requests_to("chat.postMessage") == []


# --- start-up: missing and wrong-kind models ---------------------------------------------------------------


def left_out_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.model_catalog" and "left out" in r.getMessage()]


async def test_a_missing_model_and_a_wrong_kind_model_are_named_in_one_line_and_offered_nowhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.model_catalog")
    painter = "acme/painter"
    async with discord_bot(arrange=lambda replicate: replicate.add_model(painter, ImageModel()),
                           ask_model=painter, allowed_models=frozenset({LLAMA, FLUX, painter, "acme/missing"})) as bot:
        [line] = left_out_lines(caplog)
        assert "acme/missing" in line and "not found" in line
        assert painter in line and "ASK_MODEL" in line

        [put] = bot.discord.command_puts
        options = {c["name"]: {o["name"]: o for o in c.get("options", [])} for c in put.body}
        # /ask's own model was left out, so the one text model left is offered; the painter is nowhere.
        assert [choice["value"] for choice in options["ask"]["model"]["choices"]] == [LLAMA]
        assert "model" not in options["imagine"]

        sent = await bot.interact("ask", {"prompt": "hello"})
        await bot.until(lambda: bool(bot.callbacks(sent)), "the private refusal")
        [callback] = bot.callbacks(sent)
        assert callback.data["flags"] & EPHEMERAL and "No model is set up for /ask" in callback.data["content"]
        drawn = await bot.interact("imagine", {"prompt": f"a cat --model {painter}"})
        await bot.until(lambda: bool(bot.callbacks(drawn)), "the refusal")
        assert "isn't allowed" in bot.callbacks(drawn)[0].data["content"]
        assert bot.replicate.creates == []


# --- Discord offers what the models take -------------------------------------------------------------------


def registered_options(bot: DiscordBot) -> dict[str, dict[str, Any]]:
    [put] = bot.discord.command_puts
    return {command["name"]: {o["name"]: o for o in command.get("options", [])} for command in put.body}


def choice_values(option: dict[str, Any]) -> list[Any]:
    return [choice["value"] for choice in option["choices"]]


async def test_discord_lists_each_commands_models_by_kind_and_offers_what_they_take() -> None:
    def arrange(replicate: FakeReplicate) -> None:
        replicate.add_model(SDXL, ImageModel())
        replicate.add_model(GPT, TextModel())

    async with discord_bot(arrange=arrange, allowed_models=frozenset({LLAMA, FLUX, SDXL, GPT})) as bot:
        options = registered_options(bot)

        assert sorted(choice_values(options["ask"]["model"])) == sorted([LLAMA, GPT])
        assert sorted(choice_values(options["imagine"]["model"])) == sorted([FLUX, SDXL])
        assert choice_values(options["imagine"]["aspect_ratio"]) == schemas.FLUX_RATIOS  # the default's own
        assert "negative_prompt" in options["imagine"]  # SDXL takes one
        assert options["ask"]["max_tokens"]["max_value"] == 4096  # the operator's cap (GPT states no maximum)


async def test_discord_aspect_ratios_and_token_bounds_come_from_the_schemas() -> None:
    wide = schemas.cog_schema(
        {"prompt": {"type": "string"}, "aspect_ratio": schemas.choice("aspect_ratio", "1:1", "ratio")},
        schemas.IMAGE_LIST_OUTPUT,
        {"aspect_ratio": ["1:1", "5:2", "2:5"]},
    )
    short = schemas.cog_schema(
        {"prompt": {"type": "string"}, "max_tokens": {"type": "integer", "minimum": 1, "maximum": 512}},
        schemas.STREAMED_TEXT_OUTPUT,
    )

    def arrange(replicate: FakeReplicate) -> None:
        replicate.add_model("acme/wide", ImageModel(), schema=wide)
        replicate.add_model("acme/short", TextModel(), schema=short)

    async with discord_bot(arrange=arrange, ask_model="acme/short", imagine_model="acme/wide",
                           allowed_models=frozenset({"acme/short", "acme/wide"})) as bot:
        options = registered_options(bot)

        assert choice_values(options["imagine"]["aspect_ratio"]) == ["1:1", "5:2", "2:5"]
        assert options["ask"]["max_tokens"]["max_value"] == 512
        sent = await bot.interact("ask", {"prompt": "hi --max-tokens 4000"})
        await bot.answered(sent)
        assert bot.replicate.creates[0].input["max_tokens"] == 512


# --- options the model does or doesn't take ----------------------------------------------------------------


async def test_no_on_flux_schnell_still_makes_the_image_and_the_caption_says_no_was_not_used() -> None:
    async with bot_harness.running_bots(discord=False) as bots:
        assert bots.slack is not None
        await bots.slack.send_slash_command(command="/imagine", text="a cat --no dogs", channel_id="C0CAT")
        [caption, *_] = await bots.slack_final("C0CAT")

        assert "`--no` was not used" in caption and FLUX in caption
        assert bots.slack.requests_to("files.completeUploadExternal")  # the image was uploaded
        [create] = bots.replicate.creates
        assert "negative_prompt" not in create.input and create.input["prompt"] == "a cat"


async def test_discord_caption_says_no_was_not_used_on_flux_schnell() -> None:
    async with discord_bot() as bot:
        sent = await bot.interact("imagine", {"prompt": "a cat --no dogs"})
        message = await bot.answered(sent)

        assert message.attachments and "`--no` was not used" in message.content
        assert "negative_prompt" not in bot.replicate.creates[0].input


async def test_a_width_height_model_gets_its_negative_prompt_and_pixels_from_its_schema() -> None:
    # A model the built-in table has never heard of: only its schema says it takes width/height.
    clone = "acme/sd-clone"

    def arrange(replicate: FakeReplicate) -> None:
        replicate.add_model(clone, ImageModel(), schema=schemas.SDXL)

    async with discord_bot(arrange=arrange, allowed_models=frozenset({LLAMA, FLUX, clone})) as bot:
        sent = await bot.interact("imagine", {"prompt": "a cat --ar 16:9", "negative_prompt": "dogs", "model": clone})
        message = await bot.answered(sent)

        assert message.attachments and "was not used" not in message.content
        model_input = bot.replicate.creates[0].input
        assert model_input["negative_prompt"] == "dogs"
        assert (model_input["width"], model_input["height"]) == (1344, 768) and "aspect_ratio" not in model_input


# --- when Replicate can't say ------------------------------------------------------------------------------


async def test_replicate_unreachable_at_start_up_still_starts_and_answers_from_the_built_in_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.model_catalog")
    async with discord_bot(arrange=lambda replicate: replicate.fail("model", 502, times=10)) as bot:
        [warning] = [r for r in caplog.records if r.name == "bot.model_catalog" and r.levelno == logging.WARNING]
        assert "did not answer" in warning.getMessage() and "HTTP 502" in warning.getMessage()

        asked = await bot.interact("ask", {"prompt": "hi"})
        assert (await bot.answered(asked)).content == "Hello, world"
        drawn = await bot.interact("imagine", {"prompt": "a cat --ar 16:10 --no dogs"})
        assert (await bot.answered(drawn)).attachments
        image_input = bot.replicate.creates[1].input
        assert image_input["aspect_ratio"] == "3:2" and "negative_prompt" not in image_input  # the table's FLUX


async def test_a_rejected_token_at_start_up_is_one_clear_error_line_and_the_bot_still_starts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.model_catalog")
    async with discord_bot(replicate_api_token="r8_revoked", allowed_models=frozenset({LLAMA, FLUX, SDXL})) as bot:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "REPLICATE_API_TOKEN" in errors[0] and "401" in errors[0]
        assert "replicate.com/account/api-tokens" in errors[0]
        assert "r8_revoked" not in caplog.text
        assert bot.discord.command_puts  # started: the commands were registered
