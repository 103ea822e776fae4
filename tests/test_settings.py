"""`config.settings`: every variable in the README's table, read once, validated, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.models import DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL
from config.settings import REPLICATE_TOKEN_PAGE, Settings, SettingsError, load_settings

VERSION = "0123456789abcdef" * 4
SOCKET_MODE = {"SLACK_BOT_TOKEN": "xoxb-1-bot", "SLACK_APP_TOKEN": "xapp-1-app"}


def load(env_file: Path | None = None, /, **environ: str) -> Settings:
    return load_settings(environ=environ, env_file=env_file)


def settings_error(**environ: str) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        load(**environ)
    return caught.value


def test_defaults_follow_the_spec() -> None:
    loaded = load()

    assert loaded.replicate_api_token is None
    assert loaded.replicate_base_url == "https://api.replicate.com"
    assert loaded.slack_api_url == "https://slack.com/api/"
    assert loaded.discord_api_url == "https://discord.com/api/v10"
    assert loaded.discord_gateway_url is None
    assert loaded.discord_guild_ids == ()
    assert loaded.discord_shard_count is None  # as many shards as Discord recommends, all in this process
    assert loaded.discord_shard_ids == ()
    assert loaded.ask_model == DEFAULT_ASK_MODEL == "meta/meta-llama-3-8b-instruct"
    assert loaded.imagine_model == DEFAULT_IMAGINE_MODEL == "black-forest-labs/flux-schnell"
    assert loaded.allowed_models == {DEFAULT_ASK_MODEL, DEFAULT_IMAGINE_MODEL}
    assert loaded.max_prompt_chars == 4000
    assert loaded.max_concurrent_predictions == 50
    assert loaded.image_dir == Path("./images")
    assert loaded.prediction_timeout_s == 300
    assert loaded.shutdown_grace_s == 25
    assert loaded.port == 3000
    assert loaded.log_level == "INFO"
    assert not loaded.slack_enabled
    assert not loaded.discord_enabled


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("REPLICATE_API_TOKEN", "r8_abc", "replicate_api_token", "r8_abc"),
        ("REPLICATE_BASE_URL", "http://127.0.0.1:8000", "replicate_base_url", "http://127.0.0.1:8000"),
        ("SLACK_API_URL", "http://127.0.0.1:9000/api", "slack_api_url", "http://127.0.0.1:9000/api/"),
        ("SLACK_API_URL", "https://proxy/api/", "slack_api_url", "https://proxy/api/"),
        ("DISCORD_TOKEN", "discord-token", "discord_token", "discord-token"),
        ("DISCORD_API_URL", "http://127.0.0.1:7000/api/v10/", "discord_api_url", "http://127.0.0.1:7000/api/v10"),
        ("DISCORD_GATEWAY_URL", "wss://gateway.discord.gg/", "discord_gateway_url", "wss://gateway.discord.gg/"),
        ("DISCORD_GATEWAY_URL", "ws://127.0.0.1:7001", "discord_gateway_url", "ws://127.0.0.1:7001"),
        ("DISCORD_GUILD_IDS", "123, 456 ,789", "discord_guild_ids", (123, 456, 789)),
        ("DISCORD_GUILD_IDS", "123456789012345678", "discord_guild_ids", (123456789012345678,)),
        ("DISCORD_SHARD_COUNT", "4", "discord_shard_count", 4),
        ("ASK_MODEL", "meta/meta-llama-3-70b-instruct", "ask_model", "meta/meta-llama-3-70b-instruct"),
        ("IMAGINE_MODEL", f"stability-ai/sdxl:{VERSION}", "imagine_model", f"stability-ai/sdxl:{VERSION}"),
        ("MAX_PROMPT_CHARS", "1000", "max_prompt_chars", 1000),
        ("MAX_CONCURRENT_PREDICTIONS", "5", "max_concurrent_predictions", 5),
        ("IMAGE_DIR", "/tmp/pictures", "image_dir", Path("/tmp/pictures")),
        ("PREDICTION_TIMEOUT", "60", "prediction_timeout_s", 60.0),
        ("PREDICTION_TIMEOUT", "2.5", "prediction_timeout_s", 2.5),
        ("SHUTDOWN_GRACE", "0", "shutdown_grace_s", 0.0),
        ("SHUTDOWN_GRACE", "10.5", "shutdown_grace_s", 10.5),
        ("PORT", "8080", "port", 8080),
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("LOG_LEVEL", "WARNING", "log_level", "WARNING"),
    ],
)
def test_each_variable_is_read_into_its_setting(variable: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(load(**{variable: value}), attribute) == expected


def test_slack_socket_mode_is_enabled_by_bot_and_app_tokens() -> None:
    loaded = load(**SOCKET_MODE)

    assert loaded.slack_enabled
    assert loaded.slack_socket_mode
    assert loaded.slack_bot_token == "xoxb-1-bot"
    assert loaded.slack_app_token == "xapp-1-app"


def test_slack_http_mode_is_chosen_by_a_signing_secret_without_an_app_token() -> None:
    loaded = load(SLACK_BOT_TOKEN="xoxb-1-bot", SLACK_SIGNING_SECRET="signing-secret")

    assert loaded.slack_enabled
    assert not loaded.slack_socket_mode
    assert loaded.slack_signing_secret == "signing-secret"


def test_discord_is_enabled_by_its_token() -> None:
    assert load(DISCORD_TOKEN="discord-token").discord_enabled


def test_blank_values_count_as_unset() -> None:
    loaded = load(SLACK_BOT_TOKEN="  ", PORT="", ASK_MODEL=" ")

    assert not loaded.slack_enabled
    assert loaded.port == 3000
    assert loaded.ask_model == DEFAULT_ASK_MODEL


def test_values_are_stripped_of_surrounding_whitespace() -> None:
    assert load(REPLICATE_API_TOKEN="  r8_abc \n").replicate_api_token == "r8_abc"


# --- ALLOWED_MODELS ---------------------------------------------------------------------------------


def test_allowed_models_always_include_both_command_models() -> None:
    loaded = load(ALLOWED_MODELS="stability-ai/sdxl", ASK_MODEL="meta/meta-llama-3-70b-instruct")

    assert loaded.allowed_models == {"stability-ai/sdxl", "meta/meta-llama-3-70b-instruct", DEFAULT_IMAGINE_MODEL}


def test_allowed_models_are_split_on_commas_and_lowercased() -> None:
    loaded = load(ALLOWED_MODELS=f" Stability-AI/SDXL:{VERSION} , ,meta/meta-llama-3-70b-instruct,")

    assert loaded.allowed_models == {
        f"stability-ai/sdxl:{VERSION}",
        "meta/meta-llama-3-70b-instruct",
        DEFAULT_ASK_MODEL,
        DEFAULT_IMAGINE_MODEL,
    }


# --- .env -------------------------------------------------------------------------------------------


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nREPLICATE_API_TOKEN=r8_fromfile\nPORT=4000\nLOG_LEVEL='debug'\n")

    loaded = load(env_file)

    assert loaded.replicate_api_token == "r8_fromfile"
    assert loaded.port == 4000
    assert loaded.log_level == "DEBUG"


def test_real_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REPLICATE_API_TOKEN=r8_fromfile\nPORT=4000\n")

    loaded = load(env_file, REPLICATE_API_TOKEN="r8_fromenv")

    assert loaded.replicate_api_token == "r8_fromenv"
    assert loaded.port == 4000


def test_missing_env_file_is_not_an_error(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.env").port == 3000


def test_malformed_value_in_the_env_file_is_reported_by_variable(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=eighty\n")

    with pytest.raises(SettingsError) as caught:
        load(env_file)

    assert caught.value.variable == "PORT"


DOCUMENTED_VARIABLES = (
    "REPLICATE_API_TOKEN REPLICATE_BASE_URL SLACK_BOT_TOKEN SLACK_APP_TOKEN SLACK_SIGNING_SECRET SLACK_API_URL "
    "DISCORD_TOKEN DISCORD_API_URL DISCORD_GATEWAY_URL DISCORD_GUILD_IDS ASK_MODEL IMAGINE_MODEL ALLOWED_MODELS "
    "MAX_PROMPT_CHARS MAX_CONCURRENT_PREDICTIONS IMAGE_DIR PREDICTION_TIMEOUT SHUTDOWN_GRACE PORT LOG_LEVEL "
    "DISCORD_SHARD_COUNT DISCORD_SHARD_IDS"
).split()


def test_default_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in DOCUMENTED_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MAX_PROMPT_CHARS", "123")

    assert load_settings(env_file=tmp_path / "absent.env").max_prompt_chars == 123


# --- malformed values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "variable", "fix"),
    [
        ({"PORT": "eighty"}, "PORT", "number"),
        ({"PORT": "-1"}, "PORT", "between 0 and 65535"),
        ({"PORT": "70000"}, "PORT", "between 0 and 65535"),
        ({"MAX_PROMPT_CHARS": "lots"}, "MAX_PROMPT_CHARS", "number"),
        ({"MAX_PROMPT_CHARS": "0"}, "MAX_PROMPT_CHARS", "at least 1"),
        ({"MAX_PROMPT_CHARS": "1.5"}, "MAX_PROMPT_CHARS", "number"),
        ({"MAX_CONCURRENT_PREDICTIONS": "-3"}, "MAX_CONCURRENT_PREDICTIONS", "at least 1"),
        ({"MAX_CONCURRENT_PREDICTIONS": "0"}, "MAX_CONCURRENT_PREDICTIONS", "at least 1"),
        ({"PREDICTION_TIMEOUT": "five"}, "PREDICTION_TIMEOUT", "number"),
        ({"PREDICTION_TIMEOUT": "0"}, "PREDICTION_TIMEOUT", "at least 0.1"),
        ({"SHUTDOWN_GRACE": "-1"}, "SHUTDOWN_GRACE", "at least 0"),
        ({"REPLICATE_BASE_URL": "ftp://api.replicate.com"}, "REPLICATE_BASE_URL", "https://"),
        ({"REPLICATE_BASE_URL": "api.replicate.com"}, "REPLICATE_BASE_URL", "https://"),
        ({"SLACK_API_URL": "slack.com/api"}, "SLACK_API_URL", "https://"),
        ({"DISCORD_API_URL": "ws://discord.com"}, "DISCORD_API_URL", "https://"),
        ({"DISCORD_GATEWAY_URL": "https://gateway.discord.gg"}, "DISCORD_GATEWAY_URL", "wss://"),
        ({"SLACK_BOT_TOKEN": "xoxp-user-token", "SLACK_APP_TOKEN": "xapp-1"}, "SLACK_BOT_TOKEN", "xoxb-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "SLACK_APP_TOKEN", "xapp-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"),
        ({"DISCORD_GUILD_IDS": "123,my-server"}, "DISCORD_GUILD_IDS", "numeric"),
        ({"DISCORD_GUILD_IDS": "-5"}, "DISCORD_GUILD_IDS", "numeric"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT", "at least 1"),
        ({"DISCORD_SHARD_COUNT": "two"}, "DISCORD_SHARD_COUNT", "number"),
        ({"DISCORD_SHARD_IDS": "0,1"}, "DISCORD_SHARD_IDS", "set DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0,2"}, "DISCORD_SHARD_IDS", "from 0 to 1"),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "1,3,1"}, "DISCORD_SHARD_IDS", "each shard once"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "-1"}, "DISCORD_SHARD_IDS", "numeric"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": ","}, "DISCORD_SHARD_IDS", "like 0,1"),
        ({"ASK_MODEL": "llama3"}, "ASK_MODEL", "owner/name"),
        ({"ASK_MODEL": "meta/llama:latest"}, "ASK_MODEL", "owner/name"),
        ({"IMAGINE_MODEL": "https://replicate.com/x/y"}, "IMAGINE_MODEL", "owner/name"),
        ({"ALLOWED_MODELS": "stability-ai/sdxl,sdxl"}, "ALLOWED_MODELS", "owner/name"),
        ({"ALLOWED_MODELS": "a/b c/d"}, "ALLOWED_MODELS", "comma-separated"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL", "INFO"),
        ({"LOG_LEVEL": "10"}, "LOG_LEVEL", "DEBUG"),
    ],
)
def test_malformed_value_raises_one_line_naming_the_variable_and_the_fix(
    environ: dict[str, str], variable: str, fix: str
) -> None:
    error = settings_error(**environ)
    line = str(error)

    assert error.variable == variable
    assert line.startswith(variable)
    assert fix in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SLACK_BOT_TOKEN", "xoxp-1234-secret-user-token"),
        ("SLACK_APP_TOKEN", "xoxb-5678-secret-in-wrong-place"),
    ],
)
def test_a_malformed_token_is_not_echoed_in_the_error(variable: str, value: str) -> None:
    environ = {**SOCKET_MODE, variable: value}

    assert value not in str(settings_error(**environ))


def test_discord_shard_ids_name_the_shards_of_this_process_in_the_order_given() -> None:
    loaded = load(DISCORD_TOKEN="fake-bot-token", DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS=" 3, 1 ")

    assert (loaded.discord_shard_count, loaded.discord_shard_ids) == (4, (3, 1))
    assert loaded.discord is not None
    assert (loaded.discord.shard_count, loaded.discord.shard_ids) == (4, (3, 1))


# --- DISCORD_TOKEN ----------------------------------------------------------------------------------

# The example token of Discord's Reference page ("Authentication"), and the shapes the test harnesses use.
REAL_SHAPED_DISCORD_TOKEN = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"


@pytest.mark.parametrize(
    "token", [REAL_SHAPED_DISCORD_TOKEN, "fake-bot-token", "harness.discord.secret.token.0123456789"]
)
def test_a_discord_token_of_the_bot_token_alphabet_is_accepted(token: str) -> None:
    assert load(DISCORD_TOKEN=token).discord_token == token


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"Bot {REAL_SHAPED_DISCORD_TOKEN}", "'Bot '"),
        (f"bot {REAL_SHAPED_DISCORD_TOKEN}", "'bot '"),
        (f"Bearer {REAL_SHAPED_DISCORD_TOKEN}", "'Bearer '"),
        ("xoxb-1234-5678-slacksecret", "Slack"),
        ("xapp-1-A0-slacksecret", "Slack"),
        ("r8_replicatesecret0123", "Replicate"),
        (f'"{REAL_SHAPED_DISCORD_TOKEN}"', "quotes"),
        (f"{REAL_SHAPED_DISCORD_TOKEN[:30]} {REAL_SHAPED_DISCORD_TOKEN[30:]}", "spaces"),
        (f"{REAL_SHAPED_DISCORD_TOKEN};", "punctuation"),
    ],
)
def test_a_discord_token_pasted_wrong_is_one_line_naming_the_variable_and_the_portal(value: str, problem: str) -> None:
    error = settings_error(DISCORD_TOKEN=value)
    line = str(error)

    assert error.variable == "DISCORD_TOKEN"
    assert line.startswith("DISCORD_TOKEN") and problem in line
    assert "Developer Portal" in line
    assert "\n" not in line
    assert value not in line and REAL_SHAPED_DISCORD_TOKEN not in line and "secret" not in line


@pytest.mark.parametrize("variable", ["PREDICTION_TIMEOUT", "SHUTDOWN_GRACE"])
def test_nan_duration_is_rejected(variable: str) -> None:
    assert settings_error(**{variable: "nan"}).variable == variable


def test_superscript_digit_guild_id_is_a_settings_error() -> None:
    assert settings_error(DISCORD_GUILD_IDS="12²").variable == "DISCORD_GUILD_IDS"


@settings(max_examples=100, deadline=None)
@given(
    variable=st.sampled_from(["PORT", "MAX_PROMPT_CHARS", "MAX_CONCURRENT_PREDICTIONS", "ASK_MODEL", "ALLOWED_MODELS"]),
    value=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20),
)
def test_any_value_either_loads_or_raises_a_settings_error(variable: str, value: str) -> None:
    try:
        load(**{variable: value})
    except SettingsError as error:
        assert error.variable == variable
        assert "\n" not in str(error)


# --- the Replicate token and secrets ----------------------------------------------------------------


def test_missing_replicate_token_says_where_to_get_one() -> None:
    with pytest.raises(SettingsError) as caught:
        load().require_replicate_token()

    line = str(caught.value)
    assert caught.value.variable == "REPLICATE_API_TOKEN"
    assert line.startswith("REPLICATE_API_TOKEN")
    assert REPLICATE_TOKEN_PAGE in line
    assert "\n" not in line


def test_present_replicate_token_is_returned() -> None:
    assert load(REPLICATE_API_TOKEN="r8_present").require_replicate_token() == "r8_present"


def test_repr_never_shows_a_token_or_secret() -> None:
    secrets = {
        "REPLICATE_API_TOKEN": "r8_replicatesecretvalue",
        "SLACK_BOT_TOKEN": "xoxb-botsecretvalue",
        "SLACK_APP_TOKEN": "xapp-appsecretvalue",
        "SLACK_SIGNING_SECRET": "signingsecretvalue",
        "DISCORD_TOKEN": "discordsecretvalue",
    }
    loaded = load(**secrets)

    shown = repr(loaded) + str(loaded)
    for value in secrets.values():
        assert value not in shown
    assert "max_prompt_chars=4000" in shown


def test_each_platform_s_settings_come_grouped_for_its_adapter_and_only_when_configured() -> None:
    both = load_settings({"REPLICATE_API_TOKEN": "r8_x", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1",
                          "DISCORD_TOKEN": "abc.def.ghi", "DISCORD_GUILD_IDS": "5,6"}, env_file=None)
    neither = load_settings({"REPLICATE_API_TOKEN": "r8_x"}, env_file=None)

    assert both.slack is not None and (both.slack.bot_token, both.slack.app_token) == ("xoxb-1", "xapp-1")
    assert both.discord is not None and (both.discord.token, both.discord.guild_ids) == ("abc.def.ghi", (5, 6))
    assert neither.slack is None and neither.discord is None
    assert "xoxb-1" not in repr(both.slack) and "abc.def.ghi" not in repr(both.discord)  # secrets stay out of logs
    assert set(both.secrets) == {"r8_x", "xoxb-1", "xapp-1", "abc.def.ghi"}
