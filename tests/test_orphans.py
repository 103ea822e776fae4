"""`bot.orphans`: the prediction a cut-off create made is found among the newest, however many came after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import replicate

from bot.orphans import OwnedPredictions
from tests.fakes.replicate_server import LIST_PAGE_SIZE, FakeReplicate, TextModel

TOKEN = "r8_test_token"
MODEL = "acme/echo"


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_token=TOKEN) as server:
        server.add_model(MODEL, TextModel(tokens=["hi"]))
        yield server
        assert server.fake_errors == []


@pytest.fixture
async def client(fake: FakeReplicate) -> AsyncIterator[replicate.Client]:
    made = replicate.Client(api_token=TOKEN, base_url=fake.base_url)
    yield made
    await made._async_client.aclose()


async def create(client: replicate.Client, prompt: str) -> str:
    prediction = await client.models.predictions.async_create(model=MODEL, input={"prompt": prompt})
    return str(prediction.id)


async def test_a_prediction_pushed_past_the_first_page_by_a_burst_of_creates_is_found(
    fake: FakeReplicate, client: replicate.Client
) -> None:
    sent_at = datetime.now(UTC) - timedelta(seconds=1)
    wanted = await create(client, "the cut-off one")
    for n in range(LIST_PAGE_SIZE + 20):  # a burst made after it: it is on the second page now
        await create(client, f"later {n}")

    found = await OwnedPredictions().find_orphan(client, MODEL, {"prompt": "the cut-off one"}, sent_at)

    assert found is not None and found.id == wanted
    assert [r.query for r in fake.requests_to("GET", "/v1/predictions") if "cursor" in r.query]  # it paged back


async def test_the_search_stops_at_predictions_made_before_the_create_and_finds_none(
    fake: FakeReplicate, client: replicate.Client
) -> None:
    for n in range(LIST_PAGE_SIZE + 20):
        await create(client, f"earlier {n}")
    sent_at = datetime.now(UTC) + timedelta(minutes=5)  # every prediction is older than the create (and its skew)

    found = await OwnedPredictions().find_orphan(client, MODEL, {"prompt": "never made"}, sent_at)

    assert found is None
    assert len(fake.requests_to("GET", "/v1/predictions")) == 1  # the first page already reached back far enough
