"""Self-test of `FakeReplicate`: the real `replicate` client (no mocks) runs, streams, waits, downloads, cancels
and gets errors from it. If these pass, runner tests built on the fake test the client's real behaviour."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput
from replicate.stream import ServerSentEvent

from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel

TOKEN = "r8_test_token"
LLAMA = "meta/meta-llama-3-8b-instruct"
LLAMA_VERSION = "5a6809ca6288247d06daf6365557e5e429063f32a21146b2a807c682652136b8"
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
NSFW = "NSFW content detected. Try running it again, or try a different prompt."
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
PNG = b"\x89PNG\r\n\x1a\n-not-really-a-png"
OUTPUT = ServerSentEvent.EventType.OUTPUT
DONE = ServerSentEvent.EventType.DONE


@pytest.fixture
async def fake() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_token=TOKEN, max_wait_s=5.0) as server:
        server.add_model(LLAMA, TextModel(tokens=["Hel", "lo", ",", " world"]), version=LLAMA_VERSION)
        server.add_model(FLUX, ImageModel(images=[(WEBP, "image/webp")]))
        server.add_model(SDXL, ImageModel(images=[(PNG, "image/png"), (PNG + b"2", "image/png")]), version=SDXL_VERSION)
        yield server
        assert server.fake_errors == []


def make_client(fake: FakeReplicate, token: str = TOKEN, transport: httpx.AsyncBaseTransport | None = None
                ) -> replicate.Client:
    if transport is None:
        transport = httpx.AsyncHTTPTransport(verify=fake.client_ssl_context())
    client = replicate.Client(api_token=token, base_url=fake.base_url, transport=transport)
    client.poll_interval = 0.02  # the client polls GET /v1/predictions/{id} when a wait ends in `starting`
    return client


async def run_listed(client: replicate.Client, ref: str, **options: Any) -> list[Any]:
    """`client.async_run` of a model whose output is a list (the client types its result `Any | AsyncIterator`:
    the iterator is for streamed runs)."""
    output = await client.async_run(ref, **options)
    assert isinstance(output, list), output
    return output


@pytest.fixture
async def client(fake: FakeReplicate) -> AsyncIterator[replicate.Client]:
    c = make_client(fake)
    yield c
    await c._async_client.aclose()


async def collect(events: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    return [event async for event in events]


# --- running ---------------------------------------------------------------------------------------

async def test_async_run_text_model_returns_tokens(fake: FakeReplicate, client: replicate.Client) -> None:
    output = await client.async_run(LLAMA, input={"prompt": "hi"})
    assert output == ["Hel", "lo", ",", " world"]
    create = fake.requests[0]
    assert (create.method, create.path) == ("POST", f"/v1/models/{LLAMA}/predictions")
    assert create.headers["prefer"] == "wait" and create.headers["Authorization"] == f"Bearer {TOKEN}"
    assert create.headers["User-Agent"].startswith("replicate-python/")
    assert create.json == {"input": {"prompt": "hi"}} and create.status == 201
    p = fake.creates[0]
    assert (p.model, p.version, p.input, p.status, p.stream) == (LLAMA, LLAMA_VERSION, {"prompt": "hi"}, "succeeded",
                                                                 False)
    assert len(fake.requests) == 1  # answered terminal within the wait: no polling

    # "owner/name:version" goes to POST /v1/predictions, then fetches the version's schema; the text model's
    # output is declared an iterator, so async_run returns an async iterator instead of a list.
    chunks = await client.async_run(f"{LLAMA}:{LLAMA_VERSION}", input={"prompt": "hi"})
    assert [c async for c in chunks] == ["Hel", "lo", ",", " world"]
    assert [(r.method, r.path) for r in fake.requests[1:]] == [
        ("POST", "/v1/predictions"), ("GET", f"/v1/models/{LLAMA}/versions/{LLAMA_VERSION}")]
    assert fake.requests[1].json == {"input": {"prompt": "hi"}, "version": LLAMA_VERSION}


async def test_prediction_json_has_every_field(fake: FakeReplicate, client: replicate.Client) -> None:
    raw = await client._async_client.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "a cat"}})
    assert raw.status_code == 201 and raw.headers["content-type"] == "application/json"
    body = raw.json()
    assert set(body) == {"id", "model", "version", "input", "logs", "output", "data_removed", "error", "status",
                         "created_at", "started_at", "completed_at", "urls"}
    assert len(body["id"]) == 26 and body["id"].isalnum() and body["id"].islower()
    assert (body["model"], body["version"], body["status"], body["output"]) == (FLUX, "hidden", "starting", None)
    assert body["created_at"].endswith("Z") and body["data_removed"] is False and body["logs"] == ""
    assert body["urls"] == {"get": f"{fake.base_url}/v1/predictions/{body['id']}",
                            "cancel": f"{fake.base_url}/v1/predictions/{body['id']}/cancel",
                            "web": f"https://replicate.com/p/{body['id']}"}
    await fake.wait_until(lambda: not fake.running())
    done = (await client._async_client.get(f"/v1/predictions/{body['id']}")).json()
    assert done["status"] == "succeeded" and done["completed_at"].endswith("Z") and done["started_at"]
    assert set(done["metrics"]) == {"predict_time", "total_time"}


async def test_image_model_wait_and_file_output(fake: FakeReplicate, client: replicate.Client) -> None:
    prediction = await client.models.predictions.async_create(model=FLUX, input={"prompt": "a cat"}, wait=True)
    assert prediction.status == "succeeded" and prediction.metrics is not None
    assert prediction.output == [f"{fake.files_url}/files/{prediction.id}/out-0.webp"]

    files = await run_listed(client, FLUX, input={"prompt": "a cat"})
    assert len(files) == 1 and isinstance(files[0], FileOutput)
    assert await files[0].aread() == WEBP
    download = fake.requests[-1]
    assert download.path.startswith("/files/") and download.headers["Authorization"] == f"Bearer {TOKEN}"

    # output files are served to anyone with the link, like replicate.delivery
    async with httpx.AsyncClient(verify=fake.client_ssl_context()) as bare:
        ok = await bare.get(str(files[0]))
        assert ok.content == WEBP and ok.headers["content-type"] == "image/webp"

    # By version (POST /v1/predictions); SDXL serves two PNGs.
    sdxl = await client.predictions.async_create(version=SDXL_VERSION, input={"prompt": "x"}, wait=True)
    assert sdxl.model == SDXL and sdxl.version == SDXL_VERSION
    assert isinstance(sdxl.output, list) and len(sdxl.output) == 2
    assert sdxl.output[1].endswith("/out-1.png")
    with pytest.raises(ReplicateError) as unknown:
        await client.predictions.async_create(version="0" * 64, input={"prompt": "x"})
    assert unknown.value.status == 404


async def test_clients_trust_the_file_server_explicitly_and_the_environment_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with FakeReplicate(api_token=TOKEN) as fake:
        assert "SSL_CERT_FILE" not in os.environ
        fake.add_model(FLUX, ImageModel(images=[(WEBP, "image/webp")]))
        trusting = make_client(fake, transport=httpx.AsyncHTTPTransport(verify=fake.client_ssl_context()))
        [image] = await run_listed(trusting, FLUX, input={})
        assert image.url.startswith(fake.files_url) and await image.aread() == WEBP
        await trusting._async_client.aclose()


async def test_data_urls_and_empty_outputs(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/data", ImageModel(images=[(PNG, "image/png")], as_data_urls=True))
    [item] = await run_listed(client, "acme/data", input={})
    assert isinstance(item, FileOutput) and item.url.startswith("data:image/png;base64,")
    assert await item.aread() == PNG

    for override in ([], None, [""]):
        fake.add_model("acme/empty", TextModel(tokens=["x"], output_override=override))
        assert await client.async_run("acme/empty", input={}) == override


async def test_text_token_starting_with_https_becomes_file_output(fake: FakeReplicate,
                                                                   client: replicate.Client) -> None:
    fake.add_model("acme/links", TextModel(tokens=["See ", "https://example.com", " now"]))
    output = await run_listed(client, "acme/links", input={})
    assert isinstance(output[1], FileOutput) and "".join(str(t) for t in output) == "See https://example.com now"
    plain = await client.async_run("acme/links", input={}, use_file_output=False)
    assert plain == ["See ", "https://example.com", " now"]

    # Streams too, and there `use_file_output=False` is ignored (`use_file_output or True`): the event's
    # `data` becomes a FileOutput and `str(event)` raises. Join `str(event.data)` of output events instead.
    prediction = await client.models.predictions.async_create(model="acme/links", input={}, stream=True)
    events = [e async for e in prediction.async_stream(use_file_output=False)]
    data: object = events[1].data  # typed `str` by replicate, which is what this shows it is not
    assert isinstance(data, FileOutput)
    with pytest.raises(TypeError):
        str(events[1])
    assert "".join(str(e.data) for e in events if e.event == OUTPUT) == "See https://example.com now"


async def test_failed_model_raises_model_error(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/nsfw", ImageModel(fail_with=NSFW))
    with pytest.raises(ModelError) as failed:
        await client.async_run("acme/nsfw", input={"prompt": "x"})
    assert str(failed.value) == NSFW
    assert failed.value.prediction.status == "failed" and failed.value.prediction.error == NSFW
    assert failed.value.prediction.output is None


async def test_progress_parses_logs(fake: FakeReplicate, client: replicate.Client) -> None:
    logs = ["Using seed: 42", "  25%|██▌       | 1/4 [00:00<00:01,  2.0it/s]",
            "  50%|█████     | 2/4 [00:01<00:01,  1.9it/s]"]
    fake.add_model("acme/slow", ImageModel(logs=logs, run_s=0.05, hang=True))
    prediction = await client.models.predictions.async_create(model="acme/slow", input={})
    assert (prediction.status, prediction.progress) == ("starting", None)  # (a tuple: not narrowed past the reload)
    await fake.wait_until(lambda: fake.creates[0].logs.count("\n") == 3)
    await prediction.async_reload()
    assert prediction.status == "processing" and prediction.logs == "\n".join(logs) + "\n"
    progress = prediction.progress
    assert progress is not None and (progress.percentage, progress.current, progress.total) == (0.5, 2, 4)
    await prediction.async_cancel()

    full = "100%|██████████| 4/4 [00:02<00:00,  2.0it/s]"
    fake.add_model("acme/done", ImageModel(logs=[*logs[1:], full]))
    finished = await client.models.predictions.async_create(model="acme/done", input={}, wait=True)
    assert finished.progress is not None and finished.progress.percentage == 1.0


# --- streaming -------------------------------------------------------------------------------------

async def test_stream_yields_tokens_and_multiline_tokens_rejoin(fake: FakeReplicate, client: replicate.Client) -> None:
    tokens = ["Line one\nline two", "\n\n", " end", ""]
    fake.add_model("acme/lines", TextModel(tokens=tokens, token_interval_s=0.01))
    prediction = await client.models.predictions.async_create(model="acme/lines", input={}, stream=True)
    assert prediction.urls is not None and prediction.urls["stream"] == f"{fake.base_url}/v1/streams/{prediction.id}"
    events = await collect(prediction.async_stream())
    assert [e.data for e in events if e.event == OUTPUT] == tokens
    assert events[-1].event == DONE and events[-1].data == "{}"
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    stream_request = fake.requests[-1]
    assert stream_request.headers["Accept"] == "text/event-stream"

    # Connecting after the end replays everything from the start.
    late = await collect(prediction.async_stream())
    assert [e.data for e in late if e.event == OUTPUT] == tokens

    # Without `stream: true` there is no stream URL; image models never stream.
    plain = await client.models.predictions.async_create(model=LLAMA, input={})
    image = await client.models.predictions.async_create(model=FLUX, input={}, stream=True)
    assert "stream" not in (plain.urls or {}) and "stream" not in (image.urls or {})

    # The top-level helper (create with stream=True + GET urls.stream).
    text = "".join([str(e) async for e in await client.async_stream(LLAMA, input={"prompt": "hi"})])
    assert text == "Hello, world" and fake.creates[-1].stream


async def test_stream_of_failing_model_raises(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/fails", TextModel(tokens=["partial"], fail_with="CUDA out of memory"))
    prediction = await client.models.predictions.async_create(model="acme/fails", input={}, stream=True)
    seen: list[str] = []
    with pytest.raises(RuntimeError) as raised:
        async for event in prediction.async_stream():
            seen.append(event.data)
    assert seen == ["partial"] and '"detail": "CUDA out of memory"' in str(raised.value)
    assert fake.creates[0].events[-2:] == [("error", '{"detail": "CUDA out of memory"}'),
                                           ("done", '{"reason": "error"}')]


async def test_cancel_hung_prediction_ends_stream(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/hang", TextModel(tokens=["a", "b"], hang=True))
    prediction = await client.models.predictions.async_create(model="acme/hang", input={}, stream=True)
    reader = asyncio.create_task(collect(prediction.async_stream()))
    await fake.wait_until(lambda: any(r.path.startswith("/v1/streams/") for r in fake.requests))
    await fake.wait_until(lambda: fake.creates[0].output == ["a", "b"])
    assert fake.running() == [fake.creates[0]] and fake.creates[0].status == "processing"

    await prediction.async_cancel()
    assert prediction.status == "canceled" and prediction.metrics is not None
    events = await asyncio.wait_for(reader, 5)
    assert [e.data for e in events] == ["a", "b", '{"reason": "canceled"}'] and events[-1].event == DONE
    assert fake.cancels == [prediction.id] and fake.creates[0].canceled and fake.running() == []
    await prediction.async_wait()  # canceled is terminal and does not raise
    assert (await client.predictions.async_get(prediction.id)).status == "canceled"


# --- waiting ---------------------------------------------------------------------------------------

async def test_prefer_wait_is_capped_and_client_falls_back_to_polling(client: replicate.Client) -> None:
    async with FakeReplicate(api_token=TOKEN, max_wait_s=0.2) as fake:
        poller = make_client(fake)
        # Still booting when the wait ends: the answer is `starting`, and async_run polls until done.
        fake.add_model("acme/cold", TextModel(tokens=["ok"], boot_s=0.4))
        started = time.monotonic()
        assert await poller.async_run("acme/cold", input={}) == ["ok"]
        assert 0.4 <= time.monotonic() - started < 3
        gets = [r for r in fake.requests if r.method == "GET"]
        assert fake.requests[0].status == 201 and len(gets) >= 2
        # `Prefer: wait=N` is honoured too (capped by max_wait_s).
        raw = await poller._async_client.post("/v1/models/acme/cold/predictions", json={"input": {}},
                                              headers={"Prefer": "wait=1"})
        assert raw.json()["status"] == "starting" and fake.requests[-1].headers["Prefer"] == "wait=1"
        await poller._async_client.aclose()


async def test_wait_ending_in_processing_returns_partial_output(fake: FakeReplicate) -> None:
    """A client quirk the runner must know: `async_run` treats any non-`starting` answer as final, so a wait
    that ends while `processing` returns the tokens so far, without error."""
    async with FakeReplicate(api_token=TOKEN, max_wait_s=0.15) as short:
        c = make_client(short)
        short.add_model("acme/long", TextModel(tokens=["a"] * 20, token_interval_s=0.05))
        output = await run_listed(c, "acme/long", input={})
        assert 0 < len(output) < 20 and short.creates[0].status == "processing"
        await c._async_client.aclose()


# --- errors ----------------------------------------------------------------------------------------

async def test_auth_and_not_found_errors(fake: FakeReplicate, client: replicate.Client) -> None:
    wrong = make_client(fake, token="r8_wrong")
    with pytest.raises(ReplicateError) as unauthenticated:
        await wrong.async_run(LLAMA, input={})
    assert (unauthenticated.value.status, unauthenticated.value.title) == (401, "Unauthenticated")
    assert unauthenticated.value.detail == "You did not pass a valid authentication token"
    await wrong._async_client.aclose()

    with pytest.raises(ReplicateError) as missing:
        await client.async_run("nobody/nothing", input={})
    assert (missing.value.status, missing.value.title) == (404, "Model not found")
    raw = await client._async_client.get("/v1/predictions/doesnotexist")
    assert raw.status_code == 404 and raw.headers["content-type"] == "application/problem+json"
    assert fake.creates == []


async def test_injected_create_errors(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.fail("create", 422, detail="- prompt: Invalid type. Expected: string, given: integer\n")
    with pytest.raises(ReplicateError) as invalid:
        await client.async_run(LLAMA, input={"prompt": 1})
    assert (invalid.value.status, invalid.value.title) == (422, "Input validation failed")
    assert "prompt" in (invalid.value.detail or "")

    fake.rate_limit("create", times=2, retry_after=1.2)
    raw = await client._async_client.post(f"/v1/models/{LLAMA}/predictions", json={"input": {}})
    assert raw.status_code == 429 and raw.headers["Retry-After"] == "2"
    assert raw.json() == {"title": "Request was throttled.", "status": 429,
                          "detail": "Request was throttled. Your rate limit resets in ~2s."}
    with pytest.raises(ReplicateError) as throttled:  # POST is never retried by the client
        await client.async_run(LLAMA, input={})
    assert throttled.value.status == 429 and fake.creates == []
    assert await client.async_run(LLAMA, input={}) == ["Hel", "lo", ",", " world"]


async def test_server_error_after_create_still_runs_prediction(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/slowtext", TextModel(tokens=["x"] * 3, token_interval_s=0.05))
    fake.fail("create", 500, created=True)
    with pytest.raises(ReplicateError) as error:
        await client.async_run("acme/slowtext", input={"prompt": "once"})
    assert error.value.status == 500 and len(fake.creates) == 1
    assert fake.creates[0].input == {"prompt": "once"} and fake.running() == fake.creates
    await fake.wait_until(lambda: fake.creates[0].status == "succeeded")


async def test_get_faults_and_client_retries(fake: FakeReplicate, client: replicate.Client) -> None:
    prediction = await client.models.predictions.async_create(model=LLAMA, input={}, wait=True)
    fake.fail("get", 503, times=2)  # the client retries GETs on 429/503/504 with backoff
    assert (await client.predictions.async_get(prediction.id)).status == "succeeded"
    assert [r.status for r in fake.requests if r.method == "GET"] == [503, 503, 200]
    fake.fail("get", 500)
    with pytest.raises(ReplicateError) as failed:
        await client.predictions.async_get(prediction.id)
    assert failed.value.status == 500


async def test_rate_limited_gets_answer_rfc7807_429_and_the_client_retries(fake: FakeReplicate,
                                                                          client: replicate.Client) -> None:
    prediction = await client.models.predictions.async_create(model=LLAMA, input={}, wait=True)
    fake.rate_limit("get", times=1, retry_after=2)
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as raw:
        throttled = await raw.get(f"/v1/predictions/{prediction.id}")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
    assert throttled.headers["content-type"] == "application/problem+json"
    assert throttled.json() == {"title": "Request was throttled.", "status": 429,
                                "detail": "Request was throttled. Your rate limit resets in ~2s."}
    fake.rate_limit("get", times=1, retry_after=0)  # the client waits Retry-After, then asks again
    assert (await client.predictions.async_get(prediction.id)).status == "succeeded"
    assert [r.status for r in fake.requests_to("GET", f"/v1/predictions/{prediction.id}")] == [429, 429, 200]


async def test_model_faults_answer_rfc7807(fake: FakeReplicate) -> None:
    fake.fail("model", 502, times=2)
    fake.rate_limit("model", retry_after=3)
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as raw:
        answers = [await raw.get(f"/v1/models/{LLAMA}"), await raw.get(f"/v1/models/{LLAMA}/versions/{LLAMA_VERSION}"),
                   await raw.get(f"/v1/models/{LLAMA}"), await raw.get(f"/v1/models/{LLAMA}")]
    assert [a.status_code for a in answers] == [502, 502, 429, 200]
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers[:3])
    assert answers[0].json() == {"title": "Bad Gateway", "detail": "Bad Gateway", "status": 502}
    assert answers[2].headers["Retry-After"] == "3" and answers[2].json()["title"] == "Request was throttled."
    assert answers[3].json()["latest_version"]["id"] == LLAMA_VERSION


async def test_faults_are_named_by_what_they_answer(fake: FakeReplicate) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        fake.fail("create", 429)
    with pytest.raises(ValueError, match="only a create"):
        fake.fail("get", 500, created=True)


async def test_held_create_and_cancel_take_effect_and_answer_when_released(fake: FakeReplicate,
                                                                          client: replicate.Client) -> None:
    fake.add_model("acme/hang", TextModel(tokens=["a"], hang=True))
    fake.hold("create")
    create = asyncio.create_task(client.models.predictions.async_create(model="acme/hang", input={}))
    await fake.wait_until(lambda: len(fake.creates) == 1 and fake.creates[0].status == "processing")
    [posted] = fake.requests_to("POST", "/v1/models/acme/hang/predictions")
    assert posted.status == 0 and not create.done()  # made and running, still unanswered
    fake.release_held()
    assert (await asyncio.wait_for(create, 5)).id == fake.creates[0].id and posted.status == 201

    fake.hold("cancel")
    cancel = asyncio.create_task(client.predictions.async_cancel(fake.creates[0].id))
    await fake.wait_until(lambda: fake.creates[0].status == "canceled")
    [canceling] = fake.requests_to("POST", f"/v1/predictions/{fake.creates[0].id}/cancel")
    assert canceling.status == 0 and not cancel.done()
    fake.release_held()
    assert (await asyncio.wait_for(cancel, 5)).status == "canceled" and canceling.status == 200


async def test_a_bug_in_the_fake_is_a_fake_error(fake: FakeReplicate, client: replicate.Client) -> None:
    fake.add_model("acme/broken", TextModel(tokens=None))  # type: ignore[arg-type]  # len(None) in the fake
    prediction = await client.models.predictions.async_create(model="acme/broken", input={}, wait=True)
    assert prediction.status == "failed"
    assert fake.fake_errors == [f"prediction {prediction.id}: TypeError(\"object of type 'NoneType' has no len()\")"]
    fake.fake_errors.clear()  # the fixture asserts it empty


# --- scale and shutdown ----------------------------------------------------------------------------

async def test_300_concurrent_streams(fake: FakeReplicate) -> None:
    fake.add_model("acme/fast", TextModel(tokens=["a", "b", "c", "d", "e"], token_interval_s=0.02))
    wide = make_client(fake, transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=400)))

    async def one(i: int) -> str:
        prediction = await wide.models.predictions.async_create(model="acme/fast", input={"i": i}, stream=True)
        return "".join([str(e) async for e in prediction.async_stream()])

    # ~7 s here, nearly all of it httpcore's connection-pool bookkeeping (quadratic in open connections); the
    # fake alone serves the same load in ~0.2 s (see the next test).
    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(300))), 30)
    assert results == ["abcde"] * 300 and len(fake.creates) == 300 and fake.running() == []
    await wide._async_client.aclose()


async def test_fake_holds_300_open_streams_and_cancels_them(fake: FakeReplicate) -> None:
    """The server side alone (raw aiohttp, whose pool is cheap): 300 predictions running and streaming at once."""
    fake.add_model("acme/hang", TextModel(tokens=["t"], hang=True))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000), headers=auth) as session:
        async def create() -> str:
            async with session.post(f"{fake.base_url}/v1/models/acme/hang/predictions",
                                    json={"input": {}, "stream": True}) as answer:
                stream_url: str = (await answer.json())["urls"]["stream"]
                return stream_url

        async def read(url: str) -> bytes:
            async with session.get(url) as answer:
                assert answer.headers["Content-Type"] == "text/event-stream"
                return await answer.read()

        urls = await asyncio.gather(*(create() for _ in range(300)))
        readers = [asyncio.create_task(read(url)) for url in urls]
        await fake.wait_until(lambda: len(fake.requests_to("GET", "/v1/streams/")) == 300
                              and all(p.output == ["t"] for p in fake.creates))
        assert len(fake.running()) == 300
        for p in fake.creates:
            async with session.post(f"{fake.base_url}/v1/predictions/{p.id}/cancel") as answer:
                assert answer.status == 200
        bodies = await asyncio.wait_for(asyncio.gather(*readers), 10)
    expected = b'event: output\nid: 0\ndata: t\n\nevent: done\nid: 1\ndata: {"reason": "canceled"}\n\n'
    assert all(body == expected for body in bodies)
    assert fake.running() == [] and len(fake.cancels) == 300


async def test_cancelled_client_call_leaves_prediction_running(fake: FakeReplicate, client: replicate.Client) -> None:
    """Why the runner must create and cancel predictions itself: cancelling `async_run` only drops the request."""
    fake.add_model("acme/hang", TextModel(tokens=["t"], hang=True))
    run = asyncio.create_task(client.async_run("acme/hang", input={}))
    await fake.wait_until(lambda: len(fake.creates) == 1)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert fake.running() == fake.creates and fake.cancels == []


async def test_close_ends_open_streams_and_held_waits() -> None:
    fake = await FakeReplicate(api_token=TOKEN, max_wait_s=30).start()
    c = make_client(fake)
    fake.add_model("acme/hang", TextModel(tokens=["a"], hang=True))
    prediction = await c.models.predictions.async_create(model="acme/hang", input={}, stream=True)
    reader = asyncio.create_task(collect(prediction.async_stream()))
    held = asyncio.create_task(c.models.predictions.async_create(model="acme/hang", input={}, wait=True))
    await fake.wait_until(lambda: len(fake.creates) == 2 and fake.creates[0].output == ["a"]
                          and any(r.path.startswith("/v1/streams/") for r in fake.requests))
    await fake.close()
    assert [e.data for e in await asyncio.wait_for(reader, 5)] == ["a"]  # ended without `done`
    assert (await asyncio.wait_for(held, 5)).status == "processing"
    assert fake.fake_errors == []
    await c._async_client.aclose()


async def test_wait_until_times_out_with_context(fake: FakeReplicate) -> None:
    with pytest.raises(TimeoutError) as timed_out:
        await fake.wait_until(lambda: len(fake.creates) > 0, timeout=0.05)
    assert "creates=0" in str(timed_out.value)


async def test_list_shows_our_predictions_newest_first_without_logs(
    fake: FakeReplicate, client: replicate.Client
) -> None:
    older = await client.models.predictions.async_create(model=FLUX, input={"prompt": "one"})
    newer = await client.models.predictions.async_create(model=FLUX, input={"prompt": "two"})

    page = await client.predictions.async_list()

    assert [p.id for p in page.results] == [newer.id, older.id] and page.next is None
    assert page.results[0].input == {"prompt": "two"} and page.results[0].logs is None
    raw = (await client._async_client.get("/v1/predictions")).json()
    assert raw["results"][0]["source"] == "api" and set(raw["results"][0]["urls"]) == {"get", "cancel"}
    await fake.wait_until(lambda: not fake.running())
