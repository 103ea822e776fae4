"""Governance settings: each malformed value stops start-up with one line naming the variable and the fix."""

from __future__ import annotations

import pytest

from config.governance import GovernanceSettings, PriceUnit, UseLimit, Window
from config.settings import SettingsError, load_settings


def settings_of(**env: str) -> GovernanceSettings:
    return load_settings(env, env_file=None).governance


def test_defaults_need_nothing_installed_and_limit_nobody_but_by_concurrency() -> None:
    governance = settings_of()
    assert governance.state_url == "sqlite:///data/bot.db"
    assert (governance.retention_days, governance.max_concurrent_per_user) == (30, 3)
    assert governance.limits == {} and governance.daily_budget_usd is None
    assert governance.allowed_channels == frozenset() and governance.admin_users == frozenset()


def test_every_setting_is_read() -> None:
    governance = settings_of(
        STATE_URL="redis://cache:6379/2", RETENTION_DAYS="7", LIMITS="ask=50/day, imagine=5/hour",
        MAX_CONCURRENT_PER_USER="2", DAILY_BUDGET_USD="$12.5", DEFAULT_PRICE_PER_SECOND="0.002",
        MODEL_PRICES="stability-ai/sdxl=0.0023/s,Acme/Chat=0.05/Mtok-in+0.25/Mtok-out",
        ALLOWED_CHANNELS="C01,discord:42", ADMIN_USERS="slack:U1,discord:2",
    )
    assert governance.state_url == "redis://cache:6379/2" and governance.retention_days == 7
    assert governance.limits == {"ask": UseLimit(50, Window.DAY), "imagine": UseLimit(5, Window.HOUR)}
    assert governance.max_concurrent_per_user == 2 and governance.daily_budget_usd == 12.5
    assert governance.model_prices["acme/chat"].terms == (
        (0.05, PriceUnit.MILLION_INPUT_TOKENS), (0.25, PriceUnit.MILLION_OUTPUT_TOKENS))
    assert governance.default_price_per_second == 0.002
    assert governance.allowed_channels == {"C01", "discord:42"}
    assert governance.admin_users == {"slack:U1", "discord:2"}


@pytest.mark.parametrize(("variable", "value"), [
    ("STATE_URL", "postgres://db/bot"), ("STATE_URL", "sqlite:///"), ("RETENTION_DAYS", "0"),
    ("LIMITS", "ask=50/week"), ("LIMITS", "paint=5/day"), ("LIMITS", "ask=-1/day"),
    ("MAX_CONCURRENT_PER_USER", "0"), ("DAILY_BUDGET_USD", "lots"), ("DAILY_BUDGET_USD", "-1"),
    ("MODEL_PRICES", "sdxl=0.0023/s"), ("MODEL_PRICES", "a/b=0.1/token"), ("MODEL_PRICES", "a/b"),
    ("DEFAULT_PRICE_PER_SECOND", "nan"), ("ALLOWED_CHANNELS", "C01 C02"),
    ("ADMIN_USERS", "U123"), ("ADMIN_USERS", "teams:U1"),
])
def test_a_malformed_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value}, env_file=None)
    assert raised.value.variable == variable and str(raised.value).startswith(variable)
    assert "\n" not in str(raised.value)


def test_a_zero_default_price_means_free_not_the_default() -> None:
    assert settings_of(DEFAULT_PRICE_PER_SECOND="0").default_price_per_second == 0.0


def test_limits_read_back_as_typed() -> None:
    assert UseLimit.parse(" 10/hour ") == UseLimit(10, Window.HOUR) and str(UseLimit(3, Window.DAY)) == "3/day"
    with pytest.raises(ValueError):
        UseLimit.parse("10/week")


def test_conversation_settings_are_read_and_checked() -> None:
    settings = load_settings({"SYSTEM_PROMPT": "Be terse.", "CONTEXT_MAX_CHARS": "5000",
                              "DISCORD_MESSAGE_CONTENT": "1"}, env_file=None)
    assert (settings.system_prompt, settings.context_max_chars, settings.discord_message_content) == (
        "Be terse.", 5000, True)
    for variable, value in (("CONTEXT_MAX_CHARS", "10"), ("DISCORD_MESSAGE_CONTENT", "maybe")):
        with pytest.raises(SettingsError) as raised:
            load_settings({variable: value}, env_file=None)
        assert raised.value.variable == variable
