"""`bot.logs`: whatever anyone logs, no configured secret or token-shaped string reaches the output."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest

from bot.logs import REDACTED, SecretRedactor, install_logging

REPLICATE_TOKEN = "r8_ConfiguredReplicateToken123"
SIGNING_SECRET = "8f14e45fceea167a5a36dedd4bea2543"
DISCORD_TOKEN = "MTA5ODc2NTQzMjEw.Gh7kLm.discord-configured-token"
SECRETS = [REPLICATE_TOKEN, SIGNING_SECRET, DISCORD_TOKEN, None, ""]


@pytest.fixture
def logged() -> Iterator[Callable[[], str]]:
    """Install the bot's logging into a StringIO; give back a function that reads what was written."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    install_logging("DEBUG", SECRETS, stream=stream)
    try:
        yield stream.getvalue
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


log = logging.getLogger("tests.logs")


@pytest.mark.parametrize("secret", [REPLICATE_TOKEN, SIGNING_SECRET, DISCORD_TOKEN])
def test_configured_secret_in_the_message_is_redacted(logged: Callable[[], str], secret: str) -> None:
    log.info(f"calling with {secret} now")

    output = logged()
    assert secret not in output
    assert f"calling with {REDACTED} now" in output


def test_configured_secret_in_the_arguments_is_redacted(logged: Callable[[], str]) -> None:
    log.warning("token=%s secret=%r", REPLICATE_TOKEN, SIGNING_SECRET)

    output = logged()
    assert REPLICATE_TOKEN not in output
    assert SIGNING_SECRET not in output
    assert f"token={REDACTED}" in output


def test_secret_inside_an_exception_traceback_is_redacted(logged: Callable[[], str]) -> None:
    try:
        raise ValueError(f"request failed with header Authorization: Token {SIGNING_SECRET}")
    except ValueError:
        log.exception("Replicate call failed")

    output = logged()
    assert "Traceback" in output
    assert "ValueError" in output
    assert SIGNING_SECRET not in output
    assert REDACTED in output


def test_secret_inside_a_chained_exception_is_redacted(logged: Callable[[], str]) -> None:
    try:
        try:
            raise KeyError(REPLICATE_TOKEN)
        except KeyError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError:
        log.error("failed", exc_info=True)

    output = logged()
    assert "KeyError" in output
    assert REPLICATE_TOKEN not in output


@pytest.mark.parametrize(
    ("line", "leak"),
    [
        ("slack says xoxb-1234-5678-AbCdEf", "xoxb-1234-5678-AbCdEf"),
        ("user token xoxp-99-88-zz", "xoxp-99-88-zz"),
        ("socket mode xapp-1-A0123-456-abcdef", "xapp-1-A0123-456-abcdef"),
        ("other token r8_SomeoneElsesToken99", "r8_SomeoneElsesToken99"),
        ("header Bearer x", "Bearer x"),
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("Authorization: Bot MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.xyz", "MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.xyz"),
    ],
)
def test_token_shapes_are_redacted_even_when_not_configured(logged: Callable[[], str], line: str, leak: str) -> None:
    logging.getLogger("slack_sdk.web.async_base_client").debug(line)

    output = logged()
    assert leak not in output
    assert REDACTED in output


def test_whole_base64_bearer_token_is_redacted(logged: Callable[[], str]) -> None:
    log.debug("Authorization: Bearer QWxhZGRpbjpvcGVu+c2VzYW1l/ZXhhbXBsZQ==")

    assert "c2VzYW1l" not in logged()


def test_ordinary_text_is_left_alone(logged: Callable[[], str]) -> None:
    log.info("Prediction %s for model %s took %.1fs", "abc123", "meta/meta-llama-3-8b-instruct", 2.5)

    assert "Prediction abc123 for model meta/meta-llama-3-8b-instruct took 2.5s" in logged()


def test_records_below_the_level_are_not_written() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        install_logging("WARNING", SECRETS, stream=stream)
        log.info("quiet")
        log.warning("loud")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    assert "loud" in stream.getvalue()
    assert "quiet" not in stream.getvalue()


def test_install_logging_leaves_exactly_one_handler_on_the_root() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        handler = install_logging("INFO", SECRETS, stream=io.StringIO())
        assert root.handlers == [handler]
        assert any(isinstance(f, SecretRedactor) for f in handler.filters)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_longer_secret_is_redacted_before_a_shorter_one_it_contains() -> None:
    redactor = SecretRedactor(["abcdef", "abcdefghij"])

    assert redactor.redact("x abcdefghij y") == f"x {REDACTED} y"


def test_very_short_values_are_not_treated_as_secrets() -> None:
    assert SecretRedactor(["abc", None, ""]).redact("abc is fine") == "abc is fine"
