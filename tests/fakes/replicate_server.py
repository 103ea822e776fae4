"""`FakeReplicate`: Replicate's HTTP API on 127.0.0.1, for driving the real `replicate` client in tests.

Why a server and not mocks: what the bot gets wrong about Replicate lives in the client library (which calls
poll, which retry, what `async_run` returns, how SSE is decoded, when a URL becomes a `FileOutput`). Pointing
the unmodified `replicate.Client(api_token=..., base_url=fake.base_url)` at this server exercises all of it.

Wire formats follow the real API: prediction JSON with every field, RFC 7807 errors
(`application/problem+json`), `Prefer: wait[=N]` holding the create, SSE streams (`output`/`logs`/`error`/
`done`), output files served without a token (as replicate.delivery serves them). Each prediction is driven by
one task (no polling loops), so hundreds run at once. Everything received is recorded (`requests`, `creates`,
`cancels`) for assertions.
Faults are scripted per endpoint ("create", "get", "model"): `fail`, `rate_limit`, and `hold` for answers that
never come (the vocabulary shared by every fake is in `base.py`).

Output files are served over HTTPS (`files_url`, a second port with a self-signed certificate for 127.0.0.1):
the client turns only strings starting with `https:` or `data:` into `FileOutput`, so `http://` URLs would
reach the bot as plain strings, which real Replicate never sends. Clients trust the certificate explicitly:
the bot through its `ca_bundle` setting (`SSL_CERT_FILE` for a bot process) set to `fake.ca_bundle`, other
clients with `verify=fake.client_ssl_context()`. The fake never changes the process environment.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import hashlib
import json
import math
import mimetypes
import os
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from http import HTTPStatus
from typing import Any, Literal, get_args

import certifi
from aiohttp import web
from multidict import CIMultiDict

from .base import LocalServer
from .replicate_schemas import IMAGE_LIST_OUTPUT, STREAMED_TEXT_OUTPUT, cog_schema, known_schema

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
# A valid 1x1 PNG, so a default ImageModel serves real image bytes.
TINY_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAA"
                            "AABJRU5ErkJggg==")
_TITLES = {401: "Unauthenticated", 402: "Insufficient credit", 404: "Not found", 422: "Input validation failed",
           429: "Request was throttled."}
_DETAILS = {401: "You did not pass a valid authentication token",
            402: "You have insufficient credit to run this model. Go to https://replicate.com/account/billing "
                 "to purchase credit.",
            422: "- input: prompt is required\n"}


class _Missing(Enum):
    MISSING = "MISSING"


MISSING = _Missing.MISSING  # "no override": distinct from None, which is a legitimate (empty) output


@dataclass(kw_only=True)
class _Behaviour:
    boot_s: float = 0.0  # time in `starting` (queue / cold boot) before `processing`
    logs: list[str] = field(default_factory=list)  # emitted evenly while processing
    fail_with: str | None = None  # ends `failed` with this `error`
    hang: bool = False  # stays `processing` until cancelled
    output_override: Any = MISSING  # replaces the final output (e.g. [], None, [""])


@dataclass(kw_only=True)
class TextModel(_Behaviour):
    """A language model: output is the list of tokens so far; processing lasts len(tokens)*token_interval_s."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world"])
    token_interval_s: float = 0.0
    token_metrics: bool = True  # metrics carry input/output token counts, as official language models' do


@dataclass(kw_only=True)
class ImageModel(_Behaviour):
    """An image model: after `run_s` of processing, output is a list of file URLs (or data: URLs)."""

    images: list[tuple[bytes, str]] = field(default_factory=lambda: [(TINY_PNG, "image/png")])
    run_s: float = 0.0
    as_data_urls: bool = False
    url_suffix: str = ""  # appended to each file URL (e.g. a long signed query, as CDNs add); ignored when served


ModelBehaviour = TextModel | ImageModel


@dataclass
class RecordedRequest:
    """One request as the fake saw it; `status` is what it answered (0 while still in flight)."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive: headers["prefer"] works
    json: Any
    at: float  # time.monotonic()
    status: int = 0


@dataclass(eq=False)
class FakePrediction:
    """A prediction's server-side state. Times are time.monotonic(); the JSON carries ISO 8601 copies."""

    id: str
    model: str
    version: str
    input: dict[str, Any]
    stream: bool  # the create asked `stream: true`
    created_at: float
    behaviour: ModelBehaviour
    status: str = "starting"
    canceled: bool = False
    output: Any = None
    logs: str = ""
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    events: list[tuple[str, str]] = field(default_factory=list)  # SSE (event, data); the id is the index
    iso: dict[str, str | None] = field(default_factory=dict)
    _change: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def _emit(self, event: str, data: str) -> None:
        self.events.append((event, data))
        self._wake()

    def _wake(self) -> None:
        """Wake this prediction's streams (fresh Event per generation: nothing missed, no polling)."""
        event, self._change = self._change, asyncio.Event()
        event.set()


@dataclass
class _Fault:
    status: int
    times: int
    retry_after: float | None
    detail: str | None
    created: bool = False


LIST_PAGE_SIZE = 100
Endpoint = Literal["create", "get", "model"]  # what `fail` and `rate_limit` address
Holdable = Literal["create", "cancel"]  # what `hold` addresses
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)


def _iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    """26 lowercase base32 characters, like Replicate's prediction ids."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower()[:26]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": "application/json"})


def problem(status: int, title: str | None = None, detail: str | None = None,
            headers: dict[str, str] | None = None) -> web.Response:
    """An RFC 7807 error, as every Replicate API error is (the client reads `title`/`detail` from it)."""
    title = title or _TITLES.get(status) or HTTPStatus(status).phrase
    body = {"title": title, "detail": detail or _DETAILS.get(status) or title, "status": status}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        headers={"Content-Type": "application/problem+json", **(headers or {})})


def _fault_response(fault: _Fault) -> web.Response:
    headers = {} if fault.retry_after is None else {"Retry-After": str(math.ceil(fault.retry_after))}
    detail = fault.detail
    if detail is None and fault.status == 429:
        detail = f"Request was throttled. Your rate limit resets in ~{math.ceil(fault.retry_after or 1)}s."
    return problem(fault.status, detail=detail, headers=headers)


def _take(faults: list[_Fault]) -> _Fault | None:
    if not faults:
        return None
    fault = faults[0]
    fault.times -= 1
    if fault.times <= 0:
        faults.pop(0)
    return fault


def _is_file(request: web.Request) -> bool:
    """Output files are public to whoever has the link, as on replicate.delivery: no token needed (or wanted)."""
    return request.path.startswith("/files/")


def _prefer_wait(header: str | None) -> float | None:
    """`Prefer: wait` → 60 s, `Prefer: wait=N` → N s, anything else → no wait."""
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return float(value) if value.strip() else 60.0
            except ValueError:
                return 60.0
    return None


def _sse(index: int, event: str, data: str) -> bytes:
    """One SSE frame; a multi-line datum becomes several `data:` lines (the client rejoins them with \\n)."""
    lines = [f"event: {event}", f"id: {index}"] + [f"data: {line}" for line in re.split(r"\r\n|\r|\n", data)]
    return ("\n".join(lines) + "\n\n").encode()


def _generic_schema(behaviour: ModelBehaviour) -> dict[str, Any]:
    """A Cog OpenAPI schema; text models declare an iterator output, which changes what `async_run` returns."""
    output = STREAMED_TEXT_OUTPUT if isinstance(behaviour, TextModel) else IMAGE_LIST_OUTPUT
    return cog_schema({"prompt": {"type": "string", "title": "Prompt"}}, output)


@dataclass
class _Model:
    name: str
    behaviour: ModelBehaviour
    version: str | None
    schema: dict[str, Any]
    description: str

    @property
    def latest_version(self) -> str:
        """The explicit version, or a stable made-up id (official models hide theirs from predictions)."""
        return self.version or hashlib.sha256(self.name.encode()).hexdigest()


_TLS: dict[str, str] = {}


def tls_files() -> dict[str, str]:
    """`cert`, `key` (self-signed for IP 127.0.0.1, made once per process with the openssl CLI) and `bundle`
    (certifi's CAs plus that certificate, so trusting it distrusts nothing else)."""
    if not _TLS:
        directory = tempfile.mkdtemp(prefix="fake-replicate-tls-")
        atexit.register(shutil.rmtree, directory, True)
        cert, key, bundle = (os.path.join(directory, n) for n in ("cert.pem", "key.pem", "bundle.pem"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "7", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        with open(bundle, "w") as out, open(certifi.where()) as cas, open(cert) as own:
            out.write(cas.read() + "\n" + own.read())
        _TLS.update(cert=cert, key=key, bundle=bundle)
    return _TLS


_REC: web.RequestKey[RecordedRequest] = web.RequestKey("replicate_recorded", RecordedRequest)


class FakeReplicate(LocalServer):
    """Replicate's API on 127.0.0.1:<random port>. Use `async with FakeReplicate() as fake:`."""

    def __init__(self, api_token: str = "r8_test_token", max_wait_s: float = 5.0) -> None:
        super().__init__()
        self.api_token = api_token
        self.max_wait_s = max_wait_s
        self.tls_port = 0
        self.requests: list[RecordedRequest] = []
        self.predictions: dict[str, FakePrediction] = {}
        self.creates: list[FakePrediction] = []
        self.cancels: list[str] = []
        self._models: dict[str, _Model] = {}
        self._versions: dict[str, str] = {}  # version id → model name
        self._files: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._faults: dict[Endpoint, list[_Fault]] = {endpoint: [] for endpoint in ENDPOINTS}
        self._held: dict[Holdable, int] = {"create": 0, "cancel": 0}
        self._release_held = asyncio.Event()  # set by `release_held()` and by `close()`
        self._closing = False

    # --- lifecycle ---------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create)
        app.router.add_get("/v1/models/{owner}/{name}", self._get_model)
        app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", self._get_version)
        app.router.add_post("/v1/predictions", self._create)
        app.router.add_get("/v1/predictions", self._list)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_post("/v1/predictions/{id}/cancel", self._cancel)
        app.router.add_get("/v1/streams/{id}", self._stream)
        app.router.add_get("/files/{id}/{name}", self._file)
        return app

    def _tls(self) -> ssl.SSLContext:
        tls = tls_files()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(tls["cert"], tls["key"])
        return server_ssl

    def _started(self, ports: list[int]) -> None:
        self.port, self.tls_port = ports

    async def _before_close(self) -> None:
        """Stop every prediction task, end open streams and held answers (the server stops after)."""
        self._closing = True
        self._release_held.set()
        tasks = [p._task for p in self.predictions.values() if p._task is not None and not p._task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for p in self.predictions.values():
            p._done.set()
            p._wake()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def files_url(self) -> str:
        """Origin of output file URLs (HTTPS, self-signed; same routes and auth as `base_url`)."""
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def output_host(self) -> str:
        """`files_url`'s host:port, as the bot's REPLICATE_OUTPUT_HOSTS lists it."""
        return f"127.0.0.1:{self.tls_port}"

    @property
    def ca_bundle(self) -> str:
        """certifi's CAs plus the fake's certificate: what a bot (or any client) needs to trust its files."""
        return tls_files()["bundle"]

    @staticmethod
    def client_ssl_context() -> ssl.SSLContext:
        """Trusts the fake's certificate (and certifi's CAs): `httpx.AsyncHTTPTransport(verify=...)`."""
        return ssl.create_default_context(cafile=tls_files()["bundle"])

    # --- test controls -----------------------------------------------------------------------------

    def add_model(self, name: str, behaviour: ModelBehaviour, version: str | None = None, *,
                  schema: dict[str, Any] | None = None, description: str | None = None) -> None:
        """Serve `owner/name`; with `version`, also reachable as `POST /v1/predictions {"version": ...}`.
        Without one, predictions report `"version": "hidden"` (as official models do). `GET /v1/models/...`
        describes it with `schema` (an OpenAPI document), else the real-shaped schema of a well-known model
        (`replicate_schemas.KNOWN`), else a minimal one that fits `behaviour`."""
        known = known_schema(name)
        schema = schema or (known[0] if known else _generic_schema(behaviour))
        description = description or (known[1] if known else f"A {type(behaviour).__name__} served by the fake")
        self._models[name] = _Model(name, behaviour, version, schema, description)
        if version is not None:
            self._versions[version] = name

    def fail(self, endpoint: Endpoint, status: int, times: int = 1, *, detail: str | None = None,
             retry_after: float | None = None, created: bool = False) -> None:
        """The next `times` requests to `endpoint` answer `status` as an RFC 7807 problem (`detail`, else the
        status's usual one). "create": POST a prediction; `created=True` makes and runs (and bills) the
        prediction all the same, like a 5xx after the request reached Replicate. "get": GET /v1/predictions/{id}
        (the client retries 429/503/504). "model": GET /v1/models/... (a model or one of its versions)."""
        if status == 429:
            raise ValueError("a 429 is `rate_limit(endpoint, …)`")
        if created and endpoint != "create":
            raise ValueError("only a create can make its prediction and still fail")
        self._faults[endpoint].append(_Fault(status, times, retry_after, detail, created))

    def rate_limit(self, endpoint: Endpoint, times: int = 1, retry_after: float | None = 1.0) -> None:
        """The next `times` requests to `endpoint` answer 429 "Request was throttled." (RFC 7807) with
        `Retry-After: <ceil(retry_after)>` (no header when None). The client never retries a POST."""
        self._faults[endpoint].append(_Fault(429, times, retry_after, None))

    def hold(self, endpoint: Holdable, times: int = 1) -> None:
        """The next `times` requests to `endpoint` take effect but are not answered until `release_held()` or
        `close()`: a create makes its prediction (the client learns nothing of it unless it goes looking), a
        cancel cancels (a slow or hung API at shutdown)."""
        self._held[endpoint] += times

    def release_held(self) -> None:
        """Requests held so far answer now, late, with their prediction's current state (later ones are held)."""
        released, self._release_held = self._release_held, asyncio.Event()
        released.set()

    def take_requests(self) -> list[RecordedRequest]:
        """The requests recorded so far, cleared: a test started after the bot's start-up model look-ups
        sees only what its own commands cost."""
        taken, self.requests = self.requests, []
        return taken

    def running(self) -> list[FakePrediction]:
        return [p for p in self.predictions.values() if not p.done]

    def requests_to(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def _describe(self) -> str:
        recent = ", ".join(f"{r.method} {r.path}→{r.status}" for r in self.requests[-6:])
        return (f"requests={len(self.requests)} (last: {recent or 'none'}); creates={len(self.creates)} "
                f"running={len(self.running())} cancels={self.cancels!r}")

    # --- predictions -------------------------------------------------------------------------------

    def _render(self, p: FakePrediction) -> dict[str, Any]:
        api = f"{self.base_url}/v1/predictions/{p.id}"
        urls = {"get": api, "cancel": f"{api}/cancel", "web": f"https://replicate.com/p/{p.id}"}
        if p.stream:
            urls["stream"] = f"{self.base_url}/v1/streams/{p.id}"
        data: dict[str, Any] = {
            "id": p.id, "model": p.model, "version": p.version, "input": p.input, "logs": p.logs, "output": p.output,
            "data_removed": False, "error": p.error, "status": p.status, "created_at": p.iso.get("created"),
            "started_at": p.iso.get("started"), "completed_at": p.iso.get("completed"), "urls": urls}
        if p.done and p.completed_at is not None:
            predict = p.completed_at - p.started_at if p.started_at is not None else 0.0
            data["metrics"] = {"predict_time": round(predict, 6), "total_time": round(p.completed_at - p.created_at, 6)}
            if isinstance(p.behaviour, TextModel) and p.behaviour.token_metrics:
                # Official language models also count tokens (cog's docs/metrics.md); here: words in, tokens out.
                data["metrics"]["input_token_count"] = len(str(p.input.get("prompt", "")).split())
                data["metrics"]["output_token_count"] = len(p.output) if isinstance(p.output, list) else 0
        return data

    def _new_prediction(self, model: _Model, body: dict[str, Any]) -> FakePrediction:
        stream = bool(body.get("stream")) and isinstance(model.behaviour, TextModel)
        p = FakePrediction(id=_new_id(), model=model.name, version=model.version or "hidden", input=body["input"],
                           stream=stream, created_at=time.monotonic(), behaviour=model.behaviour)
        p.iso["created"] = _iso()
        self.predictions[p.id] = p
        self.creates.append(p)
        p._task = asyncio.get_running_loop().create_task(self._run(p), name=f"fake-replicate-{p.id}")
        self._changed()
        return p

    async def _run(self, p: FakePrediction) -> None:
        """Drive one prediction through its states on the model's schedule (absolute offsets: no drift)."""
        b = p.behaviour
        try:
            if b.boot_s > 0:
                await asyncio.sleep(b.boot_s)
            p.status, p.started_at, p.iso["started"] = "processing", time.monotonic(), _iso()
            self._changed()
            steps: list[tuple[float, Callable[[], None]]] = []
            if isinstance(b, TextModel):
                duration = len(b.tokens) * b.token_interval_s
                steps += [((i + 1) * b.token_interval_s, partial(self._token, p, t)) for i, t in enumerate(b.tokens)]
            else:
                duration = b.run_s
            steps += [(duration * (k + 1) / (len(b.logs) + 1), partial(self._log, p, line))
                      for k, line in enumerate(b.logs)]
            steps.sort(key=lambda step: step[0])
            loop = asyncio.get_running_loop()
            start = loop.time()
            for offset, action in [*steps, (duration, lambda: None)]:
                if (delay := start + offset - loop.time()) > 0:
                    await asyncio.sleep(delay)
                action()
            if b.hang:
                await loop.create_future()  # until cancelled
            self._finish(p)
        except Exception as error:  # a bug in the fake: record it and fail the prediction, don't hang tests
            self._fake_error(f"prediction {p.id}", error)
            p.error = repr(error)
            p._emit("done", json.dumps({"reason": "error"}))
            self._complete(p, "failed")

    def _token(self, p: FakePrediction, token: str) -> None:
        p.output = [*(p.output or []), token]
        p._emit("output", token)
        self._changed()

    def _log(self, p: FakePrediction, line: str) -> None:
        p.logs += line + "\n"
        p._emit("logs", line)
        self._changed()

    def _complete(self, p: FakePrediction, status: str) -> None:
        p.status, p.completed_at, p.iso["completed"] = status, time.monotonic(), _iso()
        p._done.set()
        self._changed()

    def _finish(self, p: FakePrediction) -> None:
        b = p.behaviour
        if b.fail_with is not None:
            p.error = b.fail_with
            if isinstance(b, ImageModel):
                p.output = None
            p._emit("error", json.dumps({"detail": b.fail_with}))
            p._emit("done", json.dumps({"reason": "error"}))
            self._complete(p, "failed")
            return
        if isinstance(b, ImageModel):
            p.output = []
            for i, (data, content_type) in enumerate(b.images):
                if b.as_data_urls:
                    p.output.append(f"data:{content_type};base64,{base64.b64encode(data).decode()}")
                else:
                    name = f"out-{i}{mimetypes.guess_extension(content_type) or '.bin'}"
                    self._files[(p.id, name)] = (data, content_type)
                    p.output.append(f"{self.files_url}/files/{p.id}/{name}{b.url_suffix}")
        elif p.output is None:
            p.output = []
        if b.output_override is not MISSING:
            p.output = b.output_override
        p._emit("done", "{}")
        self._complete(p, "succeeded")

    def cancel(self, p: FakePrediction) -> None:
        """What `POST .../cancel` does; a terminal prediction is left as it is."""
        if p.done:
            return
        if p._task is not None:
            p._task.cancel()
        p.canceled = True
        p._emit("done", json.dumps({"reason": "canceled"}))
        self._complete(p, "canceled")

    # --- HTTP handlers -----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        rec = RecordedRequest(request.method, request.path, dict(request.query), CIMultiDict(request.headers),
                              body, time.monotonic())
        self.requests.append(rec)
        request[_REC] = rec
        self._changed()
        try:
            if request.headers.get("Authorization") != f"Bearer {self.api_token}" and not _is_file(request):
                response: web.StreamResponse = problem(401)
            else:
                response = await handler(request)
        except web.HTTPException as error:
            response = problem(error.status, detail=error.reason)
        except Exception as error:
            self._fake_error(f"{request.method} {request.path}", error)
            response = problem(500)
        rec.status = response.status
        self._changed()
        return response

    async def _create(self, request: web.Request) -> web.Response:
        body = request[_REC].json
        if not isinstance(body, dict):
            return problem(400, detail="The request body must be a JSON object")
        if "owner" in request.match_info:
            model = self._models.get(f"{request.match_info['owner']}/{request.match_info['name']}")
            if model is None:
                return problem(404, "Model not found", "The requested model does not exist or you do not have access")
        else:
            name = self._versions.get(str(body.get("version")))
            if name is None:
                return problem(404, "Invalid version or not permitted",
                               "The specified version does not exist (or perhaps you don't have permission to use it?)")
            model = self._models[name]
        if not isinstance(body.get("input"), dict):
            return problem(422, detail="- input: Invalid type. Expected: object\n")
        fault = _take(self._faults["create"])
        if fault is not None and not fault.created:
            return _fault_response(fault)
        p = self._new_prediction(model, body)
        if fault is not None:
            return _fault_response(fault)
        if self._held["create"] > 0:
            self._held["create"] -= 1
            await self._release_held.wait()
            if self._closing:
                return problem(503)
        wait = _prefer_wait(request.headers.get("Prefer"))
        if wait is not None and not self._closing:
            try:
                async with asyncio.timeout(min(wait, self.max_wait_s)):
                    await p._done.wait()
            except TimeoutError:
                pass  # answer with the current state, as the real API does
        return _json(self._render(p), 201)

    async def _get(self, request: web.Request) -> web.Response:
        fault = _take(self._faults["get"])
        if fault is not None:
            return _fault_response(fault)
        p = self.predictions.get(request.match_info["id"])
        return _json(self._render(p)) if p is not None else problem(404, detail="Not found.")

    async def _list(self, request: web.Request) -> web.Response:
        """`GET /v1/predictions`: the newest first, 100 a page; `next` is the URL of the next page (its `cursor`),
        as the API's cursor pagination gives it (https://replicate.com/docs/reference/http#predictions.list)."""
        newest_first = sorted(self.predictions.values(), key=lambda p: p.created_at, reverse=True)
        try:
            start = max(int(request.query.get("cursor", "0")), 0)
        except ValueError:
            return problem(400, detail="Invalid cursor.")
        listed = []
        for p in newest_first[start:start + LIST_PAGE_SIZE]:
            item = self._render(p)
            del item["logs"]  # the list leaves out logs and says where a prediction came from, as the API does
            item["source"] = "api"
            item["urls"] = {key: item["urls"][key] for key in ("get", "cancel")}
            listed.append(item)
        after = start + LIST_PAGE_SIZE
        following = f"{self.base_url}/v1/predictions?cursor={after}" if after < len(newest_first) else None
        return _json({"next": following, "previous": None, "results": listed})

    async def _cancel(self, request: web.Request) -> web.Response:
        self.cancels.append(request.match_info["id"])
        p = self.predictions.get(request.match_info["id"])
        if p is None:
            return problem(404, detail="Not found.")
        self.cancel(p)
        if self._held["cancel"] > 0:
            self._held["cancel"] -= 1
            await self._release_held.wait()
            if self._closing:
                return problem(503)
        return _json(self._render(p))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        p = self.predictions.get(request.match_info["id"])
        if p is None or not p.stream:
            return problem(404, detail="Not found.")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        sent = 0
        try:
            await response.prepare(request)  # the client may have gone already (a follower that gave up at once)
            while True:
                if sent < len(p.events):
                    frames = b"".join(_sse(i, *p.events[i]) for i in range(sent, len(p.events)))
                    sent = len(p.events)
                    await response.write(frames)
                    continue  # more may have arrived during the write
                if (p.events and p.events[-1][0] == "done") or self._closing:
                    return response
                await p._change.wait()
        except ConnectionError:  # the client went away
            return response

    async def _file(self, request: web.Request) -> web.Response:
        found = self._files.get((request.match_info["id"], request.match_info["name"]))
        if found is None:
            return problem(404, detail="Not found.")
        return web.Response(body=found[0], headers={"Content-Type": found[1]})

    async def _get_model(self, request: web.Request) -> web.Response:
        fault = _take(self._faults["model"])
        if fault is not None:
            return _fault_response(fault)
        name = f"{request.match_info['owner']}/{request.match_info['name']}"
        model = self._models.get(name)
        if model is None:
            return problem(404, "Model not found", "The requested model does not exist or you do not have access")
        owner, short = name.split("/", 1)
        return _json({"url": f"https://replicate.com/{name}", "owner": owner, "name": short,
                      "description": model.description, "visibility": "public", "github_url": None,
                      "paper_url": None, "license_url": None,
                      "run_count": len([p for p in self.creates if p.model == name]), "cover_image_url": None,
                      "default_example": None, "latest_version": self._version_json(model, model.latest_version)})

    async def _get_version(self, request: web.Request) -> web.Response:
        fault = _take(self._faults["model"])
        if fault is not None:
            return _fault_response(fault)
        model = self._models.get(f"{request.match_info['owner']}/{request.match_info['name']}")
        if model is None or request.match_info["version"] not in (model.version, model.latest_version):
            return problem(404, detail="Not found.")
        return _json(self._version_json(model, request.match_info["version"]))

    @staticmethod
    def _version_json(model: _Model, version: str) -> dict[str, Any]:
        return {"id": version, "created_at": "2024-04-17T21:44:13.482460Z", "cog_version": "0.9.4",
                "openapi_schema": model.schema}
