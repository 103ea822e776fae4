"""`bot.http_transport`: httpx requests over aiohttp, against servers on 127.0.0.1, with httpx's meanings kept.

What the runner relies on: only a failure before the request left is a connect error (nothing can have been
created); a connection that dies after the request went out is a protocol or read error.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import httpx
import pytest
from aiohttp import web

from bot.http_transport import AiohttpTransport
from bot.replicate_client import build_replicate_client, close_replicate_client
from bot.sse import EventKind, stream_events
from tests.fakes.replicate_server import FakeReplicate, TextModel

WAIT_S = 10.0  # how long a test waits for something that must happen
TOKEN = "r8_test_token"


def client_over_aiohttp(max_connections: int = 10, timeout: httpx.Timeout | None = None) -> httpx.AsyncClient:
    transport = AiohttpTransport(max_connections=max_connections, ssl_context=httpx.create_ssl_context())
    return httpx.AsyncClient(transport=transport, timeout=timeout or httpx.Timeout(WAIT_S))


@asynccontextmanager
async def web_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def raw_server(on_request: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> AsyncIterator[str]:
    """A server that reads one request's head, then does whatever `on_request` does with the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await on_request(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_a_request_arrives_as_httpx_built_it_and_its_answer_comes_back() -> None:
    received: list[tuple[str, str, Mapping[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((request.method, request.path_qs, request.headers.copy(), await request.read()))
        return web.json_response({"id": "p1"}, status=201, headers={"Retry-After": "3"})

    async with web_server(handler) as url, client_over_aiohttp() as client:
        response = await client.post(f"{url}/v1/predictions?x=1", json={"input": {"prompt": "hi"}},
                                     headers={"Authorization": "Bearer r8_token", "Prefer": "wait=5"})
    assert (response.status_code, response.json(), response.headers["retry-after"]) == (201, {"id": "p1"}, "3")
    method, path, headers, body = received[0]
    assert (method, path, json.loads(body)) == ("POST", "/v1/predictions?x=1", {"input": {"prompt": "hi"}})
    assert headers["Authorization"] == "Bearer r8_token"
    assert headers["Prefer"] == "wait=5"
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"].startswith("python-httpx/")  # httpx's own headers, not aiohttp's


async def test_a_streamed_body_arrives_while_the_server_is_still_writing() -> None:
    first_read = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: output\ndata: one\n\n")
        await first_read.wait()  # the rest only once the client has shown the first part
        await response.write(b"event: done\ndata: {}\n\n")
        await response.write_eof()
        return response

    async with web_server(handler) as url, client_over_aiohttp() as client:
        async with client.stream("GET", f"{url}/stream") as response:
            chunks = response.aiter_text()
            first = await asyncio.wait_for(anext(chunks), WAIT_S)
            first_read.set()
            rest = "".join([chunk async for chunk in chunks])
    assert first == "event: output\ndata: one\n\n"
    assert rest == "event: done\ndata: {}\n\n"


async def test_a_gzip_body_is_decoded_once() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"status": "succeeded"}'),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async with web_server(handler) as url, client_over_aiohttp() as client:
        response = await client.get(f"{url}/v1/predictions/p1")
    assert response.json() == {"status": "succeeded"}


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with client_over_aiohttp() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/v1/predictions", json={})


async def test_a_server_closing_after_the_request_arrived_is_a_protocol_error_not_a_connect_error() -> None:
    async def hang_up(writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with raw_server(hang_up) as url, client_over_aiohttp() as client:
        with pytest.raises(httpx.TransportError) as raised:
            await client.post(f"{url}/v1/predictions", json={})
    assert isinstance(raised.value, httpx.RemoteProtocolError)
    assert not isinstance(raised.value, (httpx.ConnectError, httpx.ConnectTimeout))  # it may have been created


async def test_an_answer_that_stops_arriving_is_a_read_timeout() -> None:
    hold = asyncio.Event()

    async def say_nothing(writer: asyncio.StreamWriter) -> None:
        await hold.wait()
        writer.close()

    async with raw_server(say_nothing) as url, client_over_aiohttp(timeout=httpx.Timeout(WAIT_S, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{url}/v1/predictions/p1")
        hold.set()


async def test_the_pool_holds_max_connections_and_a_request_that_finds_no_room_in_time_was_never_sent() -> None:
    in_flight: list[web.Request] = []
    two_in = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        in_flight.append(request)
        if len(in_flight) == 2:
            two_in.set()
        await release.wait()
        return web.Response(text="ok")

    timeout = httpx.Timeout(WAIT_S, connect=0.1, pool=0.1)
    async with web_server(handler) as url, client_over_aiohttp(max_connections=2, timeout=timeout) as client:
        held = [asyncio.create_task(client.get(f"{url}/{index}")) for index in range(2)]
        await asyncio.wait_for(two_in.wait(), WAIT_S)
        with pytest.raises(httpx.ConnectTimeout):  # a "not sent" error: safe to retry a create
            await client.get(f"{url}/third")
        release.set()
        answers = await asyncio.gather(*held)
    assert [answer.text for answer in answers] == ["ok", "ok"]
    assert len(in_flight) == 2


async def test_a_stream_left_early_gives_its_connection_back() -> None:
    test_over = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/next":
            return web.Response(text="next")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await test_over.wait()  # does not end on its own
        return response

    async with web_server(handler) as url, client_over_aiohttp(max_connections=1) as client:
        async with client.stream("GET", f"{url}/stream") as response:
            await asyncio.wait_for(anext(response.aiter_bytes()), WAIT_S)
        # With the only connection still held by the stream, this would wait for the pool until it timed out.
        response = await asyncio.wait_for(client.get(f"{url}/next"), WAIT_S)
        test_over.set()
    assert response.text == "next"


async def test_the_replicate_client_streams_over_tls_and_never_talks_to_a_server_it_does_not_trust() -> None:
    async with FakeReplicate(api_token=TOKEN) as fake:
        fake.add_model("acme/tls", TextModel(tokens=["se", "cure"]))
        trusting = build_replicate_client(TOKEN, fake.files_url, max_connections=4,
                                          ssl_context=fake.client_ssl_context())
        try:
            prediction = await trusting.models.predictions.async_create(model="acme/tls", input={}, stream=True)
            assert prediction.urls is not None
            over_tls = prediction.urls["stream"].replace(fake.base_url, fake.files_url)  # the same routes
            events = [event async for event in stream_events(trusting, over_tls)]
        finally:
            await close_replicate_client(trusting)
        untrusting = build_replicate_client(TOKEN, fake.files_url, max_connections=4)  # certifi's CAs only
        try:
            with pytest.raises(httpx.ConnectError):  # refused before the request left: nothing was created
                await untrusting.models.predictions.async_create(model="acme/tls", input={}, stream=True)
        finally:
            await close_replicate_client(untrusting)
    assert "".join(event.data for event in events if event.kind is EventKind.OUTPUT) == "secure"
    assert len(fake.creates) == 1
