"""Fetching a model's output files: untrusted URLs, fetched without credentials, from delivery hosts only.

Why a client of its own: the replicate client's `FileOutput.aread()` downloads through the API client, which
sends `Authorization: Bearer <token>` to whatever URL the model returned, and resolves a relative URL such as
`/v1/predictions` against the API itself (replicate/helpers.py, `FileOutput`). A model is untrusted code: its
output could point the bot at a cloud metadata service (`http://169.254.169.254/`), an intranet host, or the API
with our token. So outputs are fetched here: https only, from Replicate's delivery hosts only (configurable, for
proxies and tests), never to a loopback, private or link-local address, without credentials, without following
redirects, with a byte cap and a time limit, and only image bytes are kept.

Known limit: a host name is resolved and checked before the request, and httpx resolves it again to connect; a
DNS answer that changes in between (rebinding) is not caught. Listing only Replicate's own hosts keeps that
window to hosts Replicate controls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from bot.images import sniff_image_type

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 25 * 1024 * 1024  # far above any image model's output; Slack and Discord refuse more anyway
DOWNLOAD_TIMEOUT_S = 30.0
MAX_PARALLEL_DOWNLOADS = 8  # per process, across every prediction
HTTPS_PORT = 443
CHUNK_BYTES = 64 * 1024


class OutputRefused(Exception):
    """An output file we will not fetch or keep; `reason` is safe to show users (it never repeats the URL).

    `link_is_safe`: the URL itself passed the checks (an allowed, public https host), so posting it as a link in
    place of the bytes is harmless.
    """

    def __init__(self, reason: str, *, link_is_safe: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.link_is_safe = link_is_safe


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    content_type: str
    extension: str


class OutputHosts:
    """The hosts output files may come from: `host`, `host:port`, or `*.domain` for its subdomains.

    An IP address is allowed only when listed literally (an operator's proxy, a test server): that is an explicit
    choice. A listed host name must resolve to public addresses only.
    """

    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact: set[tuple[str, int]] = set()
        self._suffixes: set[tuple[str, int]] = set()
        for pattern in patterns:
            host, port = _split_host_port(pattern.strip().lower())
            if host.startswith("*."):
                self._suffixes.add((host[1:], port))  # ".replicate.delivery"
            elif host:
                self._exact.add((host, port))

    def allows(self, host: str, port: int) -> bool:
        return (host, port) in self._exact or any(
            host.endswith(suffix) and port == suffix_port for suffix, suffix_port in self._suffixes
        )

    def is_listed_address(self, host: str, port: int) -> bool:
        """`host` is an IP address the operator listed as such (so it needs no public-address check)."""
        return _is_ip_address(host) and (host, port) in self._exact


class OutputFetcher:
    """Fetches output files as described above; one per process, shared by every prediction."""

    def __init__(
        self,
        hosts: OutputHosts,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_bytes: int = MAX_OUTPUT_BYTES,
        timeout_s: float = DOWNLOAD_TIMEOUT_S,
        max_parallel: int = MAX_PARALLEL_DOWNLOADS,
    ) -> None:
        self._hosts = hosts
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._parallel = asyncio.Semaphore(max_parallel)
        # No auth, no cookies, no redirects; `trust_env` keeps HTTPS_PROXY working for operators behind one.
        self._client = httpx.AsyncClient(
            verify=ssl_context or httpx.create_ssl_context(),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            headers={"Accept": "image/*"},
        )

    async def fetch(self, url: str) -> FetchedImage:
        """The image at `url`, or `OutputRefused` saying why not."""
        if url.startswith("data:"):
            return self._image(_decode_data_url(url, self._max_bytes))
        host, port = self._check_url(url)
        async with self._parallel:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if not self._hosts.is_listed_address(host, port):
                        await _require_public_addresses(host, port)
                    data = await self._download(url)
            except TimeoutError:
                raise OutputRefused(
                    f"it took longer than {self._timeout_s:g} seconds to download", link_is_safe=True
                ) from None
            except httpx.HTTPError as error:
                log.warning("Output download failed: %s", type(error).__name__)
                raise OutputRefused("the download failed", link_is_safe=True) from error
        return self._image(data)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _check_url(self, url: str) -> tuple[str, int]:
        if not url.isprintable() or " " in url:
            raise OutputRefused("the model returned a malformed link")
        try:
            parsed = urllib.parse.urlsplit(url)
            hostname, port = parsed.hostname, parsed.port or HTTPS_PORT
        except ValueError:
            raise OutputRefused("the model returned a malformed link") from None
        if parsed.scheme != "https" or not hostname:
            raise OutputRefused("the model returned a link that isn't an https file link")
        if parsed.username or parsed.password:
            raise OutputRefused("the model returned a link with credentials in it")
        host = hostname.lower()
        if not self._hosts.allows(host, port):
            log.warning("Refused an output file from %s:%d (not a configured output host)", host, port)
            raise OutputRefused("the model returned a link to a host this bot doesn't download from")
        return host, port

    async def _download(self, url: str) -> bytes:
        async with self._client.stream("GET", url) as response:
            if response.status_code != 200:
                # A redirect is not followed: it could lead anywhere, past every check above.
                raise OutputRefused(f"the file server answered {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise OutputRefused(_too_large(self._max_bytes), link_is_safe=True)
            received = bytearray()
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                received += chunk
                if len(received) > self._max_bytes:
                    raise OutputRefused(_too_large(self._max_bytes), link_is_safe=True)
            return bytes(received)

    @staticmethod
    def _image(data: bytes) -> FetchedImage:
        content_type, extension = sniff_image_type(data)
        if not content_type.startswith("image/"):
            raise OutputRefused("the file the model returned isn't an image")
        return FetchedImage(data=data, content_type=content_type, extension=extension)


async def _require_public_addresses(host: str, port: int) -> None:
    """Every address `host` resolves to is a public one (no loopback, private, link-local, reserved…)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise OutputRefused("the file's host name could not be resolved") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            log.warning("Refused an output file from %s: it resolves to a non-public address", host)
            raise OutputRefused("the file's host resolves to a private address")


def _decode_data_url(url: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise OutputRefused("the model returned a data link that isn't base64")
    if len(payload) * 3 // 4 > max_bytes:
        raise OutputRefused(_too_large(max_bytes))
    try:
        return base64.b64decode(urllib.parse.unquote(payload), validate=True)
    except (binascii.Error, ValueError):
        raise OutputRefused("the model returned a malformed data link") from None


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host_port(pattern: str) -> tuple[str, int]:
    host, colon, port = pattern.rpartition(":")
    if colon and port.isdigit() and "]" not in port:
        return host.strip("[]"), int(port)
    return pattern.strip("[]"), HTTPS_PORT


def _too_large(max_bytes: int) -> str:
    return f"the file is larger than {max_bytes // (1024 * 1024)} MB"
