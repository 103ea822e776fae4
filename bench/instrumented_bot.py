"""The real bot (`service.bot_service.BotService`, settings from the environment) plus a loop-lag probe.

Run by the harness as `python -m bench.instrumented_bot` in its own process, so that the lag and memory
it reports are the bot's own, not the fakes'. It speaks a line protocol on stdin/stdout:

    stdout: {"ready": true, ...}        once every configured adapter has started
    stdin:  reset  → lag samples cleared   stdout: {"reset": true}
    stdin:  stats  → stdout: {"lag": {...}, "rss_mb": ..., "peak_rss_mb": ..., "in_flight": ..., "queued": ...}
    stdin:  stop (or end of input) → graceful shutdown, exit 0

Logs go to stderr (the harness sends them to a file). With `BENCH_PROFILE=<path>` (`bin/bench --profile`)
the whole run is profiled with cProfile and the stats are written to that path at exit.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import sys

from bench.stats import LoopLagProbe, peak_rss_mb, rss_mb
from bot.logs import install_logging
from config.settings import load_settings
from service.bot_service import BotService


async def serve() -> int:
    settings = load_settings(env_file=None)  # the harness passes everything in the environment
    install_logging(settings.log_level, settings.secrets)
    service = BotService(settings)
    probe = LoopLagProbe()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await service.start()
        probe.start()
        _say({"ready": True, "adapters": service.adapter_names, "rss_mb": rss_mb()})
        while line := (await reader.readline()).decode().strip():
            if line == "reset":
                probe.reset()
                _say({"reset": True})
            elif line == "stats":
                _say({"lag": probe.summary(), "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(),
                      "in_flight": service.core.in_flight, "queued": service.core.queued})
            elif line == "stop":
                break
            else:
                _say({"error": f"unknown request {line!r}"})
    finally:
        await probe.stop()
        await service.shutdown()
    return 0


def _say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        return asyncio.run(serve())
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(asyncio.run, serve())
    finally:
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    sys.exit(main())
