"""The command core and its Replicate runner, driven through the real `replicate` client to a fake Replicate."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from bot.downloads import OutputFetcher, OutputHosts
from bot.errors import FailureKind
from bot.factory import CoreResources, create_core
from bot.replicate_client import build_replicate_client, close_replicate_client
from bot.replies import Failure, Images, Phase, ReplyEvent, RunInfo, Status, TextDelta, TextDone
from bot.requests import CommandRequest, Origin
from bot.runner import PredictionRunner, RunPolicy
from config.settings import Settings
from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel

ASK = "meta/meta-llama-3-8b-instruct"
IMAGINE = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
PNG = b"\x89PNG\r\n\x1a\n" + b"fake-png-body"
ORIGIN = Origin(platform="test", user_id="U1", channel_id="C1")
FAST = RunPolicy(timeout_s=5.0, poll_interval_s=0.05, base_backoff_s=0.05, create_wait_s=1, max_retry_wait_s=3.0)


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        fake.add_model(ASK, TextModel(tokens=["Hel", "lo", " https://example.com", "\nbye"]))
        fake.add_model(IMAGINE, ImageModel(images=[(PNG, "image/png")]))
        yield fake
        assert fake.fake_errors == []


def make_core(fake: FakeReplicate, policy: RunPolicy = FAST, token: str = "r8_test_token",
              **overrides: Any) -> CoreResources:
    settings = Settings(
        replicate_api_token=token,
        replicate_base_url=fake.base_url,
        replicate_output_hosts=(fake.output_host,),
        ca_bundle=Path(fake.ca_bundle),
        allowed_models=frozenset({ASK, IMAGINE, f"{SDXL}:{SDXL_VERSION}"}),
        **overrides,
    )
    return create_core(settings, policy)


async def run(resources: CoreResources, command: str, text: str) -> list[ReplyEvent]:
    request = await resources.core.prepare(command, text, ORIGIN)
    assert isinstance(request, CommandRequest), request
    async with aclosing(resources.core.execute(request)) as events:
        return [event async for event in events]


@pytest.fixture
async def core(replicate: FakeReplicate) -> AsyncIterator[CoreResources]:
    resources = make_core(replicate)
    yield resources
    await resources.aclose()


async def test_ask_streams_tokens_and_ends_with_the_exact_text_in_two_requests_then_reads_its_metrics(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    events = await run(core, "ask", "say hello")

    deltas = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert deltas == "Hello https://example.com\nbye"
    assert isinstance(events[-1], TextDone) and events[-1].text == deltas
    assert len(replicate.creates) == 1 and replicate.creates[0].input["prompt"] == "say hello"
    # The create and the stream: nothing else until the answer is whole; then one GET for the billing metrics.
    assert [r.method for r in replicate.requests[:2]] == ["POST", "GET"]
    assert replicate.requests[1].path.startswith("/v1/streams/")
    await replicate.wait_until(lambda: len(replicate.requests) == 3, what="the metrics lookup")
    prediction_id = replicate.creates[0].id
    assert (replicate.requests[2].method, replicate.requests[2].path) == ("GET", f"/v1/predictions/{prediction_id}")


async def test_a_finished_answer_is_priced_a_moment_after_it_went_out(replicate: FakeReplicate) -> None:
    resources = make_core(replicate, dataclasses.replace(FAST, metrics_lookup_delay_s=0.5))
    try:
        events = await run(resources, "ask", "say hello")
        answered_at = time.monotonic()
        assert isinstance(events[-1], TextDone)
        await replicate.wait_until(lambda: len(replicate.requests) == 3, what="the metrics lookup")
    finally:
        await resources.aclose()
    # Answers finishing together are all posted before any of them is priced.
    assert replicate.requests[2].at - answered_at >= 0.45


async def test_metrics_lookups_still_waiting_give_up_at_shutdown_and_the_run_is_priced_as_it_is(
    replicate: FakeReplicate,
) -> None:
    client = build_replicate_client("r8_test_token", replicate.base_url, max_connections=4)
    outputs = OutputFetcher(OutputHosts((replicate.output_host,)))
    runner = PredictionRunner(client, outputs, dataclasses.replace(FAST, metrics_lookup_delay_s=60.0))
    try:
        finished = RunInfo(model=ASK, prediction_id="p-finished")
        priced = asyncio.create_task(runner.with_metrics(finished))
        runner.stop_waiting()
        assert await asyncio.wait_for(priced, 10) == finished  # not a minute later
    finally:
        await close_replicate_client(client)
        await outputs.aclose()
    assert replicate.requests == []  # no lookup once shutdown began


async def test_imagine_downloads_the_image_bytes_with_seed_and_model(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    events = await run(core, "imagine", "a lighthouse --ar 16:9 --seed 7")

    final = events[-1]
    assert isinstance(final, Images)
    assert [image.data for image in final.images] == [PNG]
    assert final.images[0].content_type == "image/png" and final.seed == 7 and final.run.model == IMAGINE
    assert replicate.creates[0].input["aspect_ratio"] == "16:9" and replicate.creates[0].input["seed"] == 7


async def test_a_version_pinned_model_is_created_by_version(replicate: FakeReplicate, core: CoreResources) -> None:
    replicate.add_model(SDXL, ImageModel(images=[(PNG, "image/png")]), version=SDXL_VERSION)

    events = await run(core, "imagine", f"a cat --model {SDXL}:{SDXL_VERSION} --no dogs")

    assert isinstance(events[-1], Images)
    create = replicate.creates[0]
    assert create.input["negative_prompt"] == "dogs" and create.input["width"] % 64 == 0
    assert any(r.method == "POST" and r.path == "/v1/predictions" for r in replicate.requests)


async def test_a_429_on_create_is_retried_after_retry_after_and_creates_once(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.rate_limit("create", times=1, retry_after=1)

    events = await run(core, "ask", "hi")

    assert isinstance(events[-1], TextDone)
    posts = [r for r in replicate.requests if r.method == "POST"]
    assert len(posts) == 2 and len(replicate.creates) == 1
    assert posts[1].at - posts[0].at >= 1.0  # honoured Retry-After


async def test_a_429_that_persists_gives_one_busy_reply(replicate: FakeReplicate, core: CoreResources) -> None:
    replicate.rate_limit("create", times=10, retry_after=0)

    events = await run(core, "ask", "hi")

    assert [type(event) for event in events] == [Failure]  # a text model's "starting" follows its create
    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.REPLICATE_BUSY
    assert replicate.creates == []


async def test_a_5xx_after_the_create_reached_replicate_is_not_retried_and_the_made_prediction_is_followed(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.fail("create", 500, created=True)

    events = await run(core, "ask", "hi")

    assert isinstance(events[-1], TextDone) and events[-1].run.prediction_id == replicate.creates[0].id
    assert len(replicate.creates) == 1  # paid once, never twice
    assert len([r for r in replicate.requests if r.method == "POST"]) == 1
    assert len(replicate.requests_to("GET", "/v1/predictions")) >= 1


async def test_a_5xx_create_that_made_nothing_fails_clearly_after_looking(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.fail("create", 500)

    events = await run(core, "ask", "hi")

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.REPLICATE_UNAVAILABLE
    assert replicate.creates == [] and len([r for r in replicate.requests if r.method == "POST"]) == 1


async def test_an_earlier_prediction_with_the_same_input_is_never_taken_for_a_failed_create(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    first = await run(core, "ask", "same question")
    assert isinstance(first[-1], TextDone)
    replicate.fail("create", 500)  # this time nothing was made

    events = await run(core, "ask", "same question")

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.REPLICATE_UNAVAILABLE
    assert len(replicate.creates) == 1


async def test_two_failed_creates_of_the_same_input_each_follow_their_own_prediction(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.fail("create", 500, times=2, created=True)

    both = await asyncio.gather(run(core, "ask", "twin"), run(core, "ask", "twin"))

    followed = [events[-1].run.prediction_id for events in both if isinstance(events[-1], TextDone)]
    assert Counter(followed) == Counter(p.id for p in replicate.creates) and len(replicate.creates) == 2


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, FailureKind.MISCONFIGURED), (404, FailureKind.MODEL_NOT_FOUND), (422, FailureKind.INVALID_MODEL_INPUT)],
)
async def test_api_errors_map_to_one_clear_reply(
    replicate: FakeReplicate, core: CoreResources, status: int, kind: FailureKind
) -> None:
    replicate.fail("create", status, detail="- input.width: Must be less than 1440")

    events = await run(core, "imagine", "a cat")

    assert [type(event) for event in events] == [Status, Failure]
    failure = events[-1]
    assert isinstance(failure, Failure) and failure.kind is kind
    assert "Traceback" not in failure.message
    if status == 422:
        assert "Must be less than 1440" in failure.message


async def test_the_safety_filter_is_named_as_such(replicate: FakeReplicate, core: CoreResources) -> None:
    nsfw = "NSFW content detected. Try running it again, or try a different prompt."
    replicate.add_model(IMAGINE, ImageModel(fail_with=nsfw))

    events = await run(core, "imagine", "something")

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.SAFETY_FILTER


async def test_a_failed_text_stream_is_one_model_failure(replicate: FakeReplicate, core: CoreResources) -> None:
    replicate.add_model(ASK, TextModel(tokens=["partial"], fail_with="CUDA out of memory"))

    events = await run(core, "ask", "hi")

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.MODEL_FAILED
    assert "CUDA" not in events[-1].message


@pytest.mark.parametrize("empty", [[], None, [""]])
async def test_empty_output_is_a_failure(replicate: FakeReplicate, core: CoreResources, empty: object) -> None:
    replicate.add_model(IMAGINE, ImageModel(output_override=empty))

    events = await run(core, "imagine", "x")

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.EMPTY_OUTPUT


async def test_a_hung_prediction_is_cancelled_on_replicate_at_the_timeout(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK, TextModel(tokens=["a"], hang=True))
    resources = make_core(replicate, RunPolicy(timeout_s=0.5, poll_interval_s=0.05))
    try:
        events = await run(resources, "ask", "hi")
    finally:
        await resources.aclose()

    assert isinstance(events[-1], Failure) and events[-1].kind is FailureKind.TIMED_OUT
    assert replicate.cancels == [replicate.creates[0].id]
    assert replicate.running() == []


async def test_abandoning_a_command_cancels_its_prediction(replicate: FakeReplicate, core: CoreResources) -> None:
    replicate.add_model(ASK, TextModel(tokens=["a"], hang=True))
    request = await core.core.prepare("ask", "hi", ORIGIN)
    assert isinstance(request, CommandRequest)

    async with aclosing(core.core.execute(request)) as events:
        async for event in events:
            if isinstance(event, Status) and event.phase is Phase.STARTING:
                await replicate.wait_until(lambda: bool(replicate.creates), what="the prediction")
                break

    await replicate.wait_until(lambda: replicate.running() == [], what="prediction cancelled")
    assert len(replicate.cancels) == 1


async def test_abandoning_a_command_whose_create_is_unanswered_finds_and_cancels_its_prediction(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.add_model(IMAGINE, ImageModel(hang=True))
    replicate.hold("create", 1)  # Replicate makes the prediction but the create never answers
    request = await core.core.prepare("imagine", "a cat", ORIGIN)
    assert isinstance(request, CommandRequest)

    async with aclosing(core.core.execute(request)) as events:
        async for _ in events:
            await replicate.wait_until(lambda: bool(replicate.creates), what="the prediction")
            break

    await replicate.wait_until(lambda: replicate.running() == [], what="prediction cancelled")
    assert replicate.cancels == [replicate.creates[0].id]


async def test_commands_beyond_the_cap_wait_in_a_queue_and_are_told_their_place(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK, TextModel(tokens=["x"] * 5, token_interval_s=0.05))
    resources = make_core(replicate, max_concurrent_predictions=1)
    try:
        first, second = await asyncio.gather(run(resources, "ask", "one"), run(resources, "ask", "two"))
    finally:
        await resources.aclose()

    statuses = [event for event in first + second if isinstance(event, Status) and event.phase is Phase.QUEUED]
    assert [status.queue_position for status in statuses] == [1]
    assert isinstance(first[-1], TextDone) and isinstance(second[-1], TextDone)


async def test_a_command_is_under_way_once_its_create_is_sent_before_replicate_answers_it(
    replicate: FakeReplicate, core: CoreResources
) -> None:
    replicate.hold("create", 1)  # Replicate makes the prediction; its answer waits for the test
    request = await core.core.prepare("ask", "say hello", ORIGIN)
    assert isinstance(request, CommandRequest)
    under_way = asyncio.Event()

    async with aclosing(core.core.execute(request, on_under_way=under_way.set)) as events:
        first_event = asyncio.ensure_future(anext(events))
        await asyncio.wait_for(under_way.wait(), 10)
        await replicate.wait_until(lambda: bool(replicate.creates), what="the create")
        assert not first_event.done()  # under way, though Replicate has not answered the create yet
        replicate.release_held()
        rest = [await first_event] + [event async for event in events]
    assert isinstance(rest[-1], TextDone)


async def test_a_queued_command_is_under_way_while_it_waits_and_a_refused_one_once_it_ends(
    replicate: FakeReplicate,
) -> None:
    replicate.add_model(ASK, TextModel(tokens=["x"], hang=True))
    # The first prediction outlasts every wait below: only its queue place can put the second under way.
    resources = make_core(replicate, RunPolicy(timeout_s=60.0), max_concurrent_predictions=1)
    try:
        prepared = [await resources.core.prepare("ask", text, ORIGIN) for text in ("1", "2", "3")]
        running, queued, late = [request for request in prepared if isinstance(request, CommandRequest)]
        async with aclosing(resources.core.execute(running)) as first:
            await anext(first)  # "starting": the only slot is taken
            under_way = asyncio.Event()
            async with aclosing(resources.core.execute(queued, on_under_way=under_way.set)) as second:
                waiting = asyncio.ensure_future(anext(second))
                await asyncio.wait_for(under_way.wait(), 10)
                status = await waiting
                assert isinstance(status, Status) and status.phase is Phase.QUEUED
        resources.core.stop_accepting()  # the third is refused without ever reaching Replicate
        over = asyncio.Event()
        async with aclosing(resources.core.execute(late, on_under_way=over.set)) as third:
            final = [event async for event in third]
        assert over.is_set() and isinstance(final[-1], Failure)
    finally:
        await resources.aclose()


async def test_three_hundred_concurrent_commands_all_finish(replicate: FakeReplicate) -> None:
    replicate.add_model(ASK, TextModel(tokens=["ok"], token_interval_s=0.01))
    resources = make_core(replicate, RunPolicy(timeout_s=60.0), max_concurrent_predictions=50, max_queued=250)
    try:
        results = await asyncio.gather(*(run(resources, "ask", f"q{i}") for i in range(300)))
    finally:
        await resources.aclose()

    assert all(isinstance(events[-1], TextDone) and events[-1].text == "ok" for events in results)
    assert len(replicate.creates) == 300


async def test_invalid_input_never_reaches_replicate(replicate: FakeReplicate, core: CoreResources) -> None:
    for text in ["", "   ", "--seed 3", "cat --ar 16x9", "cat --bogus 1", "x" * 4001, "cat --model evil/model"]:
        prepared = await core.core.prepare("imagine", text, ORIGIN)
        assert isinstance(prepared, Failure), text

    assert replicate.requests == []
