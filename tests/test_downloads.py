"""Model output is untrusted, URLs included: files come only from the configured delivery hosts, over https,
without our token, without redirects, capped in size and time, and only images are kept.

Driven over the wire: the real runner against the fake Replicate (whose file port stands in for
replicate.delivery), plus a small local HTTPS "elsewhere" server that records whatever reaches it.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

import pytest
from aiohttp import web

from bot.downloads import OutputFetcher, OutputHosts, OutputRefused
from bot.factory import CoreResources, create_core
from bot.replies import Images, ReplyEvent
from bot.requests import CommandRequest, Origin
from bot.runner import MAX_OUTPUT_FILES, RunPolicy
from config.settings import Settings
from tests.fakes.base import serve_app
from tests.fakes.replicate_server import FakeReplicate, ImageModel, tls_files

IMAGINE = "black-forest-labs/flux-schnell"
PNG = b"\x89PNG\r\n\x1a\n" + b"elsewhere-png"
ORIGIN = Origin(platform="test", user_id="U1", channel_id="C1")
FAST = RunPolicy(timeout_s=5.0, poll_interval_s=0.05, create_wait_s=1)
TOKEN = "r8_download_test_token"


@dataclass
class Elsewhere:
    """An HTTPS server that is not a delivery host; it records every request, and serves what a test scripts."""

    port: int = 0
    seen: list[web.Request] = field(default_factory=list)
    body: bytes = PNG
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall: asyncio.Event | None = None  # when set, the body never finishes until this is set

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/out.png") -> str:
        return f"https://{self.host}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        response = web.StreamResponse(status=self.status, headers=self.headers)
        await response.prepare(request)
        await response.write(self.body)
        if self.stall is not None:
            await self.stall.wait()
        return response


@pytest.fixture
async def elsewhere() -> AsyncIterator[Elsewhere]:
    server = Elsewhere()
    app = web.Application()
    app.router.add_get("/{path:.*}", server.handle)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tls_files()["cert"], tls_files()["key"])
    runner, ports = await serve_app(app, tls=tls)
    server.port = ports[1]
    yield server
    if server.stall is not None:
        server.stall.set()
    await runner.cleanup()


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate(api_token=TOKEN) as fake:
        yield fake
        assert fake.fake_errors == []


def core_for(replicate: FakeReplicate, *hosts: str) -> CoreResources:
    settings = Settings(
        replicate_api_token=TOKEN,
        replicate_base_url=replicate.base_url,
        replicate_output_hosts=hosts or (replicate.output_host,),
        ca_bundle=Path(replicate.ca_bundle),
    )
    return create_core(settings, FAST)


async def imagine(resources: CoreResources) -> Images:
    request = await resources.core.prepare("imagine", "a lighthouse", ORIGIN)
    assert isinstance(request, CommandRequest)
    async with aclosing(resources.core.execute(request)) as events:
        replies: list[ReplyEvent] = [event async for event in events]
    await resources.aclose()
    final = replies[-1]
    assert isinstance(final, Images), final
    return final


def model_returning(replicate: FakeReplicate, *urls: str) -> None:
    replicate.add_model(IMAGINE, ImageModel(output_override=list(urls)))


async def test_a_delivery_host_file_is_fetched_without_our_token(replicate: FakeReplicate) -> None:
    replicate.add_model(IMAGINE, ImageModel(images=[(PNG, "image/png")]))

    images = await imagine(core_for(replicate))

    assert [image.data for image in images.images] == [PNG]
    downloads = replicate.requests_to("GET", "/files/")
    assert len(downloads) == 1 and "Authorization" not in downloads[0].headers


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "isn't an https file link"),
        ("https://169.254.169.254/latest/meta-data/", "a host this bot doesn't download from"),
        ("https://10.0.0.7/out.png", "a host this bot doesn't download from"),
        ("/v1/predictions", "isn't an https file link"),  # relative: the API itself, with our token, if resolved
        ("file:///etc/passwd", "isn't an https file link"),
        ("https://user:secret@replicate.delivery/x.png", "credentials"),
        ("https://[::1/x.png", "malformed"),  # urlsplit raises on this one
        ("https://replicate.delivery/\x1b[2J.png", "malformed"),
    ],
)
async def test_an_output_url_off_the_delivery_hosts_is_refused_unfetched_and_never_posted(
    replicate: FakeReplicate, url: str, why: str
) -> None:
    model_returning(replicate, url)

    images = await imagine(core_for(replicate))

    [image] = images.images
    assert image.data == b"" and image.url is None and url not in (image.problem or "")
    assert why in (image.problem or ""), image.problem
    assert replicate.requests_to("GET", "/v1/predictions") == []  # the API was never called with the output


async def test_a_loopback_server_that_is_not_listed_receives_nothing(
    replicate: FakeReplicate, elsewhere: Elsewhere
) -> None:
    model_returning(replicate, elsewhere.url())

    images = await imagine(core_for(replicate))

    assert images.images[0].data == b"" and images.images[0].url is None
    assert elsewhere.seen == []


async def test_a_listed_host_name_that_resolves_to_loopback_is_refused(
    replicate: FakeReplicate, elsewhere: Elsewhere
) -> None:
    model_returning(replicate, f"https://localhost:{elsewhere.port}/out.png")

    images = await imagine(core_for(replicate, f"localhost:{elsewhere.port}"))

    assert images.images[0].data == b"" and "private address" in (images.images[0].problem or "")
    assert elsewhere.seen == []


async def test_outputs_are_capped_in_number(replicate: FakeReplicate) -> None:
    replicate.add_model(IMAGINE, ImageModel(images=[(PNG, "image/png")] * (MAX_OUTPUT_FILES + 5)))

    images = await imagine(core_for(replicate))

    assert len(images.images) == MAX_OUTPUT_FILES
    assert len(replicate.requests_to("GET", "/files/")) == MAX_OUTPUT_FILES


# --- the fetcher itself, against a listed server ---------------------------------------------------------


class FetchLimits(TypedDict, total=False):
    """`OutputFetcher`'s limits, as keyword arguments."""

    max_bytes: int
    timeout_s: float
    max_parallel: int


def fetcher_for(server: Elsewhere, **limits: Unpack[FetchLimits]) -> OutputFetcher:
    context = ssl.create_default_context(cafile=tls_files()["bundle"])
    return OutputFetcher(OutputHosts([server.host]), ssl_context=context, **limits)


async def test_a_redirect_is_not_followed(elsewhere: Elsewhere) -> None:
    elsewhere.status, elsewhere.headers = 302, {"Location": "http://169.254.169.254/"}
    fetcher = fetcher_for(elsewhere)
    try:
        with pytest.raises(OutputRefused, match="answered 302"):
            await fetcher.fetch(elsewhere.url())
    finally:
        await fetcher.aclose()
    assert len(elsewhere.seen) == 1


async def test_bytes_that_are_not_an_image_are_refused(elsewhere: Elsewhere) -> None:
    elsewhere.body = b'{"results": [{"input": {"prompt": "someone else\'s prompt"}}]}'
    fetcher = fetcher_for(elsewhere)
    try:
        with pytest.raises(OutputRefused, match="isn't an image"):
            await fetcher.fetch(elsewhere.url())
    finally:
        await fetcher.aclose()


async def test_a_file_past_the_byte_cap_is_refused_while_streaming(elsewhere: Elsewhere) -> None:
    elsewhere.body = PNG + b"\0" * 200_000  # no Content-Length: the cap must hold while reading
    fetcher = fetcher_for(elsewhere, max_bytes=100_000)
    try:
        with pytest.raises(OutputRefused, match="larger than"):
            await fetcher.fetch(elsewhere.url())
    finally:
        await fetcher.aclose()


async def test_a_download_that_never_ends_is_cut_at_the_time_limit(elsewhere: Elsewhere) -> None:
    elsewhere.stall = asyncio.Event()
    fetcher = fetcher_for(elsewhere, timeout_s=0.5)
    try:
        with pytest.raises(OutputRefused, match=r"longer than 0\.5 seconds") as refused:
            await fetcher.fetch(elsewhere.url())
    finally:
        await fetcher.aclose()
    assert refused.value.link_is_safe  # a listed host that was merely slow: its link may stand in


async def test_a_data_url_image_is_decoded_and_a_data_url_of_anything_else_is_refused(elsewhere: Elsewhere) -> None:
    fetcher = fetcher_for(elsewhere)
    try:
        image = await fetcher.fetch("data:image/png;base64," + base64.b64encode(PNG).decode())
        with pytest.raises(OutputRefused, match="isn't an image"):
            await fetcher.fetch("data:text/html;base64," + base64.b64encode(b"<script>").decode())
    finally:
        await fetcher.aclose()
    assert image.data == PNG and image.content_type == "image/png"
    assert elsewhere.seen == []
