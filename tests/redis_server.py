"""A real redis-server for the tests, on a Unix socket in a temporary directory (no TCP port, no disk writes).

One server per test session; `redis_url` empties it before each test. Without a `redis-server` binary the
Redis tests skip, naming how to install it, except under CI=true where they fail: CI never skips them silently.
`bin/test` installs Debian's package when it runs as root.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

READY_TIMEOUT_S = 10.0  # a loaded 2-core machine starts redis-server in well under a second
READY_LINE = b"ready to accept connections"  # "Ready to…" before Redis 7, "…now ready to…" since
INSTALL_HINT = "redis-server is not installed: `apt-get install redis-server` (bin/test does this when run as root)"


@dataclass
class RedisServer:
    socket_path: Path
    process: subprocess.Popen[bytes]
    log: list[bytes] = field(default_factory=list)
    drain: threading.Thread | None = None  # keeps reading its log

    def url(self, db: int = 0) -> str:
        return f"unix://{self.socket_path}?db={db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A plain synchronous client, for fixtures and for checking what the store wrote."""
        return redis.Redis(unix_socket_path=str(self.socket_path), db=db, decode_responses=True)


def _wait_until_ready(process: subprocess.Popen[bytes], log: list[bytes]) -> None:
    """Read the server's log until it accepts connections (or exits, or READY_TIMEOUT_S passes)."""
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    deadline = time.monotonic() + READY_TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(descriptor, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and selector.select(timeout=left):
            chunk = os.read(descriptor, 65536)  # unbuffered: select() and a buffered readline() disagree
            if not chunk:
                raise RuntimeError(f"redis-server exited: {b''.join(log).decode(errors='replace')[-2000:]}")
            log.append(chunk)
            if READY_LINE in b"".join(log).lower():
                return
    raise RuntimeError(f"redis-server not ready within {READY_TIMEOUT_S} s")


def _drain(process: subprocess.Popen[bytes], log: list[bytes]) -> None:
    """Keep reading the log so a chatty server never blocks on a full pipe."""
    assert process.stdout is not None
    while chunk := os.read(process.stdout.fileno(), 65536):
        log.append(chunk)


def start_redis_server(directory: Path, binary: str = "redis-server") -> RedisServer:
    """A redis-server on a Unix socket in `directory`, ready (the benchmark's several-instance runs use it too)."""
    socket_path = directory / "redis.sock"
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, bufsize=0)
    server = RedisServer(socket_path, process)
    try:
        _wait_until_ready(process, server.log)
    except BaseException:
        stop_redis_server(server)
        raise
    server.drain = threading.Thread(target=_drain, args=(process, server.log), daemon=True)
    server.drain.start()
    return server


def stop_redis_server(server: RedisServer) -> None:
    server.process.kill()
    server.process.wait(timeout=READY_TIMEOUT_S)
    if server.drain is not None and server.drain.is_alive():
        server.drain.join(timeout=READY_TIMEOUT_S)  # it ends at the log's end of file
    if server.process.stdout is not None:
        server.process.stdout.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{INSTALL_HINT}; under CI the Redis tests must run, not skip")
        pytest.skip(INSTALL_HINT)
    server = start_redis_server(tmp_path_factory.mktemp("redis"), binary)
    try:
        yield server
    finally:
        stop_redis_server(server)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """Database 0 of the session's server, empty (every database is emptied before each test)."""
    with redis_server.client() as client:
        client.flushall()
    yield redis_server.url()
