"""`/replicate`'s words: users named by mention or id, shown without pinging, descriptions made inert."""

from __future__ import annotations

import pytest

from bot.administration import AdminInputError, inert, parse_user, show_user
from bot.requests import Origin

SLACK = Origin(platform="slack", user_id="UADMIN", channel_id="C1")
DISCORD = Origin(platform="discord", user_id="1", channel_id="2")


@pytest.mark.parametrize(("text", "origin", "user"), [
    ("<@U123ABC>", SLACK, "slack:U123ABC"),
    ("<@U123ABC|jane>", SLACK, "slack:U123ABC"),
    ("U123ABC", SLACK, "slack:U123ABC"),
    ("<@!4567>", DISCORD, "discord:4567"),
    ("<@4567>", DISCORD, "discord:4567"),
    ("4567", DISCORD, "discord:4567"),
    ("discord:4567", SLACK, "discord:4567"),
])
def test_a_user_is_a_mention_or_an_id_on_the_admins_platform_unless_named(text: str, origin: Origin, user: str) -> None:
    assert parse_user(text, origin) == user


@pytest.mark.parametrize("text", ["<!channel>", "@everyone", "<@&999>", "teams:U1", "", "a b"])
def test_anything_else_is_not_a_user(text: str) -> None:
    with pytest.raises(AdminInputError):
        parse_user(text, SLACK)


def test_users_show_as_mentions_on_their_own_platform_and_as_ids_elsewhere() -> None:
    assert show_user("slack:U1", SLACK) == "<@U1>"
    assert show_user("discord:5", SLACK) == "`discord:5`"
    assert show_user("console:you", Origin(platform="console", user_id="you", channel_id="t")) == "`console:you`"


def test_a_models_description_cannot_mention_or_link() -> None:
    text = inert("Ping <!channel> and <@U1> and @everyone via <https://x.example|here>")
    assert "<" not in text and ">" not in text and "@everyone" not in text and "@\u200beveryone" in text
