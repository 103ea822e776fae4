"""The harness's handle on a bot running in a subprocess (the bot under test or the baseline).

Why a subprocess: the resident memory and event-loop lag we report must be the bot's alone, and the
fakes and the load generator must not share its CPU time slice by slice. Both bots speak the line
protocol described in `bench/instrumented_bot.py`; the harness reads RSS from /proc itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.stats import peak_rss_mb, rss_mb

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 30.0


class BotProcess:
    """`python -m <module>` with `env`, started in an empty directory (no stray `.env` is read)."""

    def __init__(self, module: str, env: dict[str, str], name: str, *, profile: bool = False) -> None:
        self.module = module
        self.name = name
        self.log_path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-")) / "bot.log"
        self.profile_path = self.log_path.with_name("profile.pstats") if profile else None
        self.env = {**env, "BENCH_PROFILE": str(self.profile_path)} if profile else env
        self.ready: dict[str, Any] = {}
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def start(self) -> None:
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        log = await asyncio.to_thread(self.log_path.open, "wb")  # file I/O, off the loop
        with log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=log, cwd=self.log_path.parent, env=env,
            )
        try:
            self.ready = await self._read(READY_TIMEOUT_S)
        except (TimeoutError, EOFError) as error:
            await self.kill()
            raise RuntimeError(f"{self.name} did not start ({error!r}); its log:\n{self.log_tail()}") from None

    async def request(self, line: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(line.encode() + b"\n")
        await self._process.stdin.drain()
        return await self._read(REPLY_TIMEOUT_S)

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.pid)

    async def stop(self) -> int | None:
        """Ask for a graceful stop; kill the process if it does not exit in time. Returns the exit status."""
        process = self._process
        if process is None or process.returncode is not None:
            return None if process is None else process.returncode
        try:
            assert process.stdin is not None
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
            process.stdin.close()
            return await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except (TimeoutError, ConnectionError):
            await self.kill()
            return process.returncode

    async def kill(self) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()  # this process only, by its own handle
            await process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_count(self, needle: str) -> int:
        try:
            return sum(needle in line for line in self.log_path.read_text(errors="replace").splitlines())
        except OSError:
            return 0

    async def _read(self, timeout_s: float) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        while True:
            raw = await asyncio.wait_for(self._process.stdout.readline(), timeout_s)
            if not raw:
                raise EOFError(f"{self.name} exited with {await self._process.wait()}")
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # a stray print from a library: not ours
            if isinstance(message, dict):
                return message
