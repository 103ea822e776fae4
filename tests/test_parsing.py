"""`bot.parsing`: command text → prompt and validated options, or one clear `InvalidCommand`."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import (
    BadOptionValue,
    EmptyPrompt,
    InvalidCommand,
    ModelNotAllowed,
    PromptTooLong,
    UnknownOption,
)
from bot.parsing import SEED_MAX, InputLimits, ParsedCommand, parse_command, resolve_model, usage_text
from bot.requests import CommandName, Options

ASK = CommandName.ASK
IMAGINE = CommandName.IMAGINE
LLAMA = "meta/meta-llama-3-8b-instruct"
FLUX = "black-forest-labs/flux-schnell"
VERSION_A = "a" * 64
VERSION_B = "b" * 64
LIMITS = InputLimits(allowed_models=frozenset({LLAMA, FLUX}))


def parse(command: CommandName, text: str, limits: InputLimits = LIMITS, /, **typed: object) -> ParsedCommand:
    return parse_command(command, text, limits, typed_options=typed or None)


def rejection(command: CommandName, text: str, limits: InputLimits = LIMITS, /, **typed: object) -> InvalidCommand:
    with pytest.raises(InvalidCommand) as caught:
        parse(command, text, limits, **typed)
    return caught.value


# --- every option, on the command it belongs to ---------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text", "expected"),
    [
        (IMAGINE, "a cat --ar 16:9", Options(aspect_ratio="16:9")),
        (IMAGINE, "a cat --aspect 3:2", Options(aspect_ratio="3:2")),
        (IMAGINE, "a cat --aspect-ratio 1:1", Options(aspect_ratio="1:1")),
        (IMAGINE, "a cat --ar 16:09", Options(aspect_ratio="16:9")),
        (IMAGINE, "a cat --ar 4:1", Options(aspect_ratio="4:1")),
        (IMAGINE, "a cat --ar 1:4", Options(aspect_ratio="1:4")),
        (IMAGINE, "a cat --seed 7", Options(seed=7)),
        (IMAGINE, "a cat --seed 0", Options(seed=0)),
        (IMAGINE, f"a cat --seed {SEED_MAX}", Options(seed=SEED_MAX)),
        (IMAGINE, "a cat --no dogs, text", Options(negative_prompt="dogs, text")),
        (IMAGINE, "a cat --negative-prompt blur", Options(negative_prompt="blur")),
        (IMAGINE, f"a cat --model {FLUX}", Options(model=FLUX)),
        (ASK, f"why? --model {LLAMA}", Options(model=LLAMA)),
        (ASK, "why? --max-tokens 200", Options(max_tokens=200)),
        (ASK, "why? --max_tokens 200", Options(max_tokens=200)),
        (ASK, "why? --temperature 0.3", Options(temperature=0.3)),
        (ASK, "why? --temp 1", Options(temperature=1.0)),
        (ASK, "why? --TEMPERATURE 1", Options(temperature=1.0)),
        (
            IMAGINE,
            "a cat --ar 16:9 --seed 7 --no dogs",
            Options(aspect_ratio="16:9", seed=7, negative_prompt="dogs"),
        ),
        (
            ASK,
            f"why? --max-tokens 50 --temperature 0.5 --model {LLAMA}",
            Options(model=LLAMA, max_tokens=50, temperature=0.5),
        ),
    ],
)
def test_each_option_is_read_into_its_canonical_field(command: CommandName, text: str, expected: Options) -> None:
    parsed = parse(command, text)

    assert parsed.options == expected
    assert parsed.prompt in {"a cat", "why?"}


def test_a_prompt_without_options_comes_back_with_default_options() -> None:
    assert parse(ASK, "  What is a monad?  ") == ParsedCommand("What is a monad?", Options())


def test_em_dash_option_is_read_as_double_dash() -> None:
    assert parse(IMAGINE, "a lighthouse —ar 16:9").options.aspect_ratio == "16:9"


def test_en_dash_option_is_read_as_double_dash() -> None:
    assert parse(IMAGINE, "a lighthouse –seed 5").options.seed == 5


def test_option_value_may_span_several_words_until_the_next_option() -> None:
    parsed = parse(IMAGINE, "a cat --no blurry text, watermark --seed 3")

    assert parsed.options.negative_prompt == "blurry text, watermark"
    assert parsed.options.seed == 3


def test_option_after_a_newline_is_still_an_option() -> None:
    assert parse(IMAGINE, "a cat\n--seed 3").options.seed == 3


# --- typed (Discord) options ------------------------------------------------------------------------


def test_typed_options_use_the_same_names_and_validation() -> None:
    parsed = parse(IMAGINE, "a cat", aspect_ratio="3:2", seed=9, negative_prompt="dogs")

    assert parsed.options == Options(aspect_ratio="3:2", seed=9, negative_prompt="dogs")


def test_typed_ask_options_are_clamped_like_inline_ones() -> None:
    parsed = parse(ASK, "why?", max_tokens=10**6, temperature=9.5)

    assert parsed.options == Options(max_tokens=LIMITS.max_tokens_cap, temperature=2.0)


def test_typed_options_with_none_values_are_ignored() -> None:
    parsed = parse(IMAGINE, "a cat --seed 4", seed=None, aspect_ratio=None, model=None)

    assert parsed.options == Options(seed=4)


def test_typed_option_is_combined_with_a_different_inline_option() -> None:
    assert parse(IMAGINE, "a cat --ar 1:1", seed=2).options == Options(aspect_ratio="1:1", seed=2)


def test_typed_option_for_the_other_command_is_rejected() -> None:
    error = rejection(ASK, "why?", seed=3)

    assert isinstance(error, UnknownOption)
    assert "--seed" in error.user_message and "/imagine" in error.user_message


def test_malformed_typed_value_is_rejected_like_an_inline_one() -> None:
    error = rejection(IMAGINE, "a cat", aspect_ratio="wide")

    assert isinstance(error, BadOptionValue)
    assert "--ar" in error.user_message


# --- options given twice ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text", "typed", "flag"),
    [
        (IMAGINE, "a cat --seed 1 --seed 2", {}, "--seed"),
        (IMAGINE, "a cat --ar 1:1 --aspect 16:9", {}, "--ar"),
        (IMAGINE, "a cat --ar 1:1 —ar 16:9", {}, "--ar"),
        (ASK, "why? --temp 1 --temperature 0.5", {}, "--temperature"),
        (ASK, "why? --max-tokens 5 --max_tokens 6", {}, "--max-tokens"),
        (IMAGINE, "a cat --seed 2", {"seed": 1}, "--seed"),
        (IMAGINE, "a cat --ar 16:9", {"aspect_ratio": "16:9"}, "--ar"),
        (ASK, "why? --temperature 0.1", {"temperature": 0.2}, "--temperature"),
    ],
)
def test_option_given_twice_is_rejected_by_name(
    command: CommandName, text: str, typed: dict[str, object], flag: str
) -> None:
    error = rejection(command, text, **typed)

    assert isinstance(error, BadOptionValue)
    assert f"`{flag}`" in error.user_message
    assert "twice" in error.user_message


# --- options on the wrong command, unknown options ------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text", "flag", "other"),
    [
        (ASK, "why? --ar 16:9", "--ar", "/imagine"),
        (ASK, "why? --seed 3", "--seed", "/imagine"),
        (ASK, "why? --no cats", "--no", "/imagine"),
        (ASK, "why? —aspect 1:1", "--ar", "/imagine"),
        (IMAGINE, "a cat --max-tokens 10", "--max-tokens", "/ask"),
        (IMAGINE, "a cat --temperature 1", "--temperature", "/ask"),
    ],
)
def test_option_on_the_wrong_command_names_the_command_it_belongs_to(
    command: CommandName, text: str, flag: str, other: str
) -> None:
    error = rejection(command, text)

    assert isinstance(error, UnknownOption)
    assert f"`{flag}`" in error.user_message
    assert other in error.user_message


@pytest.mark.parametrize(
    ("command", "text", "named"),
    [
        (ASK, "why? --bogus 1", "--bogus"),
        (IMAGINE, "a cat --style raw", "--style"),
        (IMAGINE, "a cat —quality 2", "--quality"),
        (ASK, "explain ls --all", "--all"),
    ],
)
def test_unknown_option_is_named_in_the_message_with_the_escape_hint(
    command: CommandName, text: str, named: str
) -> None:
    error = rejection(command, text)

    assert isinstance(error, UnknownOption)
    assert f"`{named}`" in error.user_message
    assert "\\--" in error.user_message


def test_unknown_option_message_lists_the_options_the_command_takes() -> None:
    message = rejection(IMAGINE, "a cat --bogus").user_message

    for flag in ("--ar", "--seed", "--no", "--model"):
        assert f"`{flag}`" in message
    assert "--max-tokens" not in message


# --- missing and malformed values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text", "flag"),
    [
        (IMAGINE, "a cat --ar", "--ar"),
        (IMAGINE, "a cat --seed", "--seed"),
        (IMAGINE, "a cat --no", "--no"),
        (IMAGINE, "a cat --model", "--model"),
        (ASK, "why? --max-tokens", "--max-tokens"),
        (ASK, "why? --temperature   ", "--temperature"),
        (IMAGINE, "a cat --ar --seed 3", "--ar"),
    ],
)
def test_option_without_a_value_says_it_needs_one_with_an_example(
    command: CommandName, text: str, flag: str
) -> None:
    error = rejection(command, text)

    assert isinstance(error, BadOptionValue)
    assert f"`{flag}` needs a value" in error.user_message
    assert "for example" in error.user_message


@pytest.mark.parametrize(
    ("command", "text", "named"),
    [
        (IMAGINE, "a cat --ar 16x9", "--ar 16x9"),
        (IMAGINE, "a cat --ar wide", "--ar wide"),
        (IMAGINE, "a cat --ar 0:1", "--ar 0:1"),
        (IMAGINE, "a cat --ar 1:0", "--ar 1:0"),
        (IMAGINE, "a cat --ar 9:1", "--ar 9:1"),
        (IMAGINE, "a cat --ar 1:5", "--ar 1:5"),
        (IMAGINE, "a cat --ar 1000:1", "--ar 1000:1"),
        (IMAGINE, "a cat --ar 16:9:1", "--ar 16:9:1"),
        (IMAGINE, "a cat --seed abc", "--seed abc"),
        (IMAGINE, "a cat --seed 1.5", "--seed 1.5"),
        (IMAGINE, "a cat --seed 2**32", "--seed 2**32"),
        (IMAGINE, "a cat --seed -1", "--seed"),
        (IMAGINE, f"a cat --seed {2**32}", "--seed"),
        (ASK, "why? --temperature nan", "--temperature nan"),
        (ASK, "why? --temperature inf", "--temperature inf"),
        (ASK, "why? --temperature -inf", "--temperature -inf"),
        (ASK, "why? --temperature warm", "--temperature warm"),
        (ASK, "why? --max-tokens 0", "--max-tokens"),
        (ASK, "why? --max-tokens -5", "--max-tokens"),
        (ASK, "why? --max-tokens 1e3", "--max-tokens 1e3"),
        (ASK, "why? --max-tokens lots", "--max-tokens lots"),
    ],
)
def test_malformed_value_is_rejected_naming_the_option(command: CommandName, text: str, named: str) -> None:
    error = rejection(command, text)

    assert isinstance(error, BadOptionValue)
    assert named in error.user_message


def test_out_of_range_seed_message_gives_the_range_and_the_value() -> None:
    message = rejection(IMAGINE, f"a cat --seed {2**32}").user_message

    assert "4,294,967,295" in message
    assert str(2**32) in message


# --- clamping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limits", "expected"),
    [
        ("why? --max-tokens 999999", LIMITS, LIMITS.max_tokens_cap),
        ("why? --max-tokens 999999", InputLimits(max_tokens_cap=500), 500),
        ("why? --max-tokens 499", InputLimits(max_tokens_cap=500), 499),
        ("why? --max-tokens 1", LIMITS, 1),
    ],
)
def test_max_tokens_is_clamped_to_the_operator_cap(text: str, limits: InputLimits, expected: int) -> None:
    assert parse(ASK, text, limits).options.max_tokens == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 2.0), ("2.5", 2.0), ("-1", 0.0), ("-0.1", 0.0), ("0", 0.0), ("2", 2.0), ("0.7", 0.7), ("1e-3", 0.001)],
)
def test_temperature_is_clamped_to_zero_to_two(value: str, expected: float) -> None:
    assert parse(ASK, f"why? --temperature {value}").options.temperature == pytest.approx(expected)


# --- escapes and dashes inside prompts -------------------------------------------------------------


def test_backslash_escape_keeps_double_dash_in_the_prompt() -> None:
    parsed = parse(ASK, r"what does ls \--all do?")

    assert parsed.prompt == "what does ls --all do?"
    assert parsed.options == Options()


def test_escaped_dash_before_a_real_option_only_escapes_itself() -> None:
    parsed = parse(IMAGINE, r"a \--weird cat --seed 1")

    assert parsed.prompt == "a --weird cat"
    assert parsed.options.seed == 1


@pytest.mark.parametrize(
    "text",
    [
        "a -- b",
        "count down --5 --4",
        "x--y and a--b",
        "ends with --",
        "em dash — in prose",
        "em—dash—words",
        "--- a rule ---",
        "-- 42",
    ],
)
def test_double_dash_not_followed_by_a_letter_stays_in_the_prompt(text: str) -> None:
    parsed = parse(ASK, text)

    assert parsed.prompt == text
    assert parsed.options == Options()


# --- empty prompts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (ASK, ""),
        (ASK, "   "),
        (ASK, "\n\t \n"),
        (ASK, "\x00\x01"),
        (ASK, "--temperature 1"),
        (ASK, f"  --model {LLAMA} --max-tokens 5"),
        (IMAGINE, "--ar 16:9 --seed 3"),
        (IMAGINE, "—ar 16:9"),
    ],
)
def test_empty_or_options_only_prompt_gets_the_usage_text(command: CommandName, text: str) -> None:
    error = rejection(command, text)

    assert isinstance(error, EmptyPrompt)
    assert error.user_message == usage_text(command)
    assert error.is_input_error


def test_empty_prompt_with_typed_options_gets_the_usage_text() -> None:
    assert isinstance(rejection(IMAGINE, "  ", seed=3), EmptyPrompt)


@pytest.mark.parametrize(
    ("command", "mentions"),
    [(ASK, ["/ask", "--model", "--max-tokens", "--temperature"]), (IMAGINE, ["/imagine", "--ar", "--seed", "--no"])],
)
def test_usage_text_shows_the_command_and_its_options(command: CommandName, mentions: list[str]) -> None:
    text = usage_text(command)

    for mention in mentions:
        assert mention in text


# --- control characters and length ------------------------------------------------------------------


def test_nul_and_control_characters_are_removed_but_newline_and_tab_are_kept() -> None:
    parsed = parse(ASK, "line\x00 one\x07\nline\ttwo\x1b[31m\x7f\x9b")

    assert parsed.prompt == "line one\nline\ttwo[31m"


def test_control_characters_are_removed_from_option_values_too() -> None:
    assert parse(IMAGINE, "a cat --no do\x00gs").options.negative_prompt == "dogs"


def test_prompt_of_exactly_the_limit_is_accepted() -> None:
    assert len(parse(ASK, "x" * 4000).prompt) == 4000


def test_prompt_one_over_the_limit_is_rejected_with_both_numbers() -> None:
    error = rejection(ASK, "x" * 4001)

    assert isinstance(error, PromptTooLong)
    assert "4,001" in error.user_message
    assert "4,000" in error.user_message


def test_options_and_surrounding_whitespace_do_not_count_towards_the_limit() -> None:
    parsed = parse(IMAGINE, "  " + "x" * 4000 + "   --ar 16:9 --seed 1")

    assert len(parsed.prompt) == 4000


def test_control_characters_do_not_count_towards_the_limit() -> None:
    assert len(parse(ASK, "x" * 4000 + "\x00" * 10).prompt) == 4000


def test_operator_prompt_limit_is_honoured() -> None:
    limits = InputLimits(max_prompt_chars=10)

    assert parse(ASK, "x" * 10, limits).prompt == "x" * 10
    assert isinstance(rejection(ASK, "x" * 11, limits), PromptTooLong)


# --- --model and the allow-list ---------------------------------------------------------------------


def test_allowed_model_is_accepted_case_insensitively() -> None:
    assert parse(ASK, "why? --model Meta/Meta-Llama-3-8B-Instruct").options.model == LLAMA


def test_bare_model_resolves_to_its_only_pinned_allowed_version() -> None:
    pinned = f"stability-ai/sdxl:{VERSION_A}"
    limits = InputLimits(allowed_models=frozenset({FLUX, pinned}))

    assert parse(IMAGINE, "a cat --model stability-ai/sdxl", limits).options.model == pinned


def test_bare_model_with_two_pinned_versions_is_ambiguous_and_not_allowed() -> None:
    allowed = frozenset({f"stability-ai/sdxl:{VERSION_A}", f"stability-ai/sdxl:{VERSION_B}"})

    with pytest.raises(ModelNotAllowed):
        resolve_model("stability-ai/sdxl", allowed)


def test_any_version_of_an_allowed_bare_model_is_accepted() -> None:
    reference = f"{FLUX}:{VERSION_B}"

    assert parse(IMAGINE, f"a cat --model {reference}").options.model == reference


def test_other_version_of_a_pinned_only_model_is_not_allowed() -> None:
    allowed = frozenset({f"stability-ai/sdxl:{VERSION_A}"})

    with pytest.raises(ModelNotAllowed):
        resolve_model(f"stability-ai/sdxl:{VERSION_B}", allowed)


def test_exact_pinned_reference_is_accepted() -> None:
    pinned = f"stability-ai/sdxl:{VERSION_A}"

    assert resolve_model(pinned, frozenset({pinned})) == pinned


def test_disallowed_model_lists_the_allowed_ones() -> None:
    error = rejection(ASK, "why? --model someone/other-llm")

    assert isinstance(error, ModelNotAllowed)
    assert "`someone/other-llm`" in error.user_message
    assert f"`{LLAMA}`" in error.user_message
    assert f"`{FLUX}`" in error.user_message


def test_with_an_empty_allow_list_no_model_is_allowed() -> None:
    error = rejection(ASK, f"why? --model {LLAMA}", InputLimits())

    assert isinstance(error, ModelNotAllowed)
    assert "none" in error.user_message


@pytest.mark.parametrize(
    "reference",
    [
        "llama",
        "owner/",
        "/name",
        "owner/name/extra",
        "owner/name:",
        "owner/name:xyz",
        f"owner/name:{'a' * 63}",
        "a b/c",
    ],
)
def test_malformed_model_reference_is_rejected_before_the_allow_list(reference: str) -> None:
    error = rejection(ASK, f"why? --model {reference}")

    assert isinstance(error, BadOptionValue)
    assert "--model" in error.user_message
    assert "owner/name" in error.user_message


# --- properties -------------------------------------------------------------------------------------

_FRAGMENTS = st.sampled_from(
    [
        "--ar", "--seed", "--no", "--model", "--max-tokens", "--temperature", "--temp", "--bogus", "—ar", "–seed",
        "\\--", "--", " ", "\n", "\t", "16:9", "0:1", "-1", "nan", "1e9", "3", "owner/name", FLUX, "\x00", "\x1b",
        "\u2028", "\u00a0", "٣", "²", "&amp;", "x" * 30,
    ]
)
_COMMAND_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=6)), max_size=14).map(" ".join),
    st.lists(st.one_of(_FRAGMENTS, st.text(max_size=6)), max_size=14).map("".join),
)
_PROPERTY_LIMITS = InputLimits(max_prompt_chars=40, allowed_models=frozenset({LLAMA, FLUX}))


def _parse_or_reject(command: CommandName, text: str) -> ParsedCommand | None:
    try:
        return parse_command(command, text, _PROPERTY_LIMITS)
    except InvalidCommand as error:
        assert error.user_message.strip()
        return None


@settings(max_examples=300, deadline=None)
@given(command=st.sampled_from(list(CommandName)), text=_COMMAND_TEXT)
def test_any_text_either_parses_or_is_rejected_with_a_message(command: CommandName, text: str) -> None:
    parsed = _parse_or_reject(command, text)

    if parsed is not None:
        assert parsed.prompt.strip()
        assert parsed.prompt == parsed.prompt.strip()
        assert len(parsed.prompt) <= _PROPERTY_LIMITS.max_prompt_chars
        assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in parsed.prompt)


# Option values on either side of their bounds, in option position (free text rarely puts them there).
_SEED_VALUE = st.integers(min_value=-(2**33), max_value=2**33).map(str)
_RATIO_VALUE = st.tuples(st.integers(0, 40), st.integers(1, 4), st.booleans()).map(
    lambda sides: f"{sides[0]}:{sides[1]}" if sides[2] else f"{sides[1]}:{sides[0]}"
)
_IMAGINE_OPTIONS_TEXT = st.one_of(_SEED_VALUE.map("a cat --seed {}".format), _RATIO_VALUE.map("a cat --ar {}".format))


@settings(max_examples=150, deadline=None)
@given(text=st.one_of(_COMMAND_TEXT, _IMAGINE_OPTIONS_TEXT))
def test_successful_imagine_options_are_within_their_ranges(text: str) -> None:
    parsed = _parse_or_reject(IMAGINE, text)

    if parsed is not None and parsed.options.seed is not None:
        assert 0 <= parsed.options.seed <= SEED_MAX
    if parsed is not None and parsed.options.aspect_ratio is not None:
        width, height = (int(side) for side in parsed.options.aspect_ratio.split(":"))
        assert 1 / 4 <= width / height <= 4


@settings(max_examples=100, deadline=None)
@given(prompt=st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40))
def test_plain_prompt_without_dashes_round_trips_stripped(prompt: str) -> None:
    text = prompt.replace("-", "").replace("—", "").replace("–", "").replace("\\", "")
    parsed = _parse_or_reject(ASK, text)

    visible = any(not ch.isspace() and unicodedata.category(ch) != "Cf" for ch in text)
    if visible:
        assert parsed is not None
        assert parsed.prompt == text.strip()
    else:  # only spaces and invisible format characters (zero-width, soft hyphen, direction marks)
        assert parsed is None


@pytest.mark.parametrize("invisible",
                         ["\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u200e\u200f ", "\u202e\u202c", "\xad"])
def test_prompt_of_only_zero_width_or_direction_marks_is_empty(invisible: str) -> None:
    assert isinstance(rejection(ASK, invisible), EmptyPrompt)


def test_zero_width_joiner_inside_real_text_is_kept() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert parse(ASK, f"draw {family}").prompt == f"draw {family}"


@pytest.mark.parametrize(
    "text",
    ["hi --" + "x" * 5000, "hi --max-tokens " + "9" * 5000, "hi --temperature " + "z" * 5000,
     "hi --model a/" + "b" * 5000, "hi --model " + "!" * 5000],
)
def test_errors_repeat_at_most_a_short_piece_of_what_was_typed(text: str) -> None:
    message = rejection(ASK, text).user_message
    assert len(message) < 400 and "…" in message


def test_long_allow_list_is_summarised_in_the_error() -> None:
    many = frozenset(f"owner/model-{i:02d}" for i in range(30))
    message = rejection(ASK, "hi --model someone/else", InputLimits(allowed_models=many)).user_message
    assert "owner/model-00" in message and "and 20 more" in message and "owner/model-29" not in message
