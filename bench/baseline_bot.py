"""The seed-style baseline: the smallest Slack bot the quick-starts lead to, for comparison under the same load.

A synchronous `slack_bolt.App` over Socket Mode (`SocketModeHandler`, its defaults), whose `/ask` handler
acks, then calls the blocking `replicate.run()` (Replicate's quick-start: module-level client, token and
base URL from the environment, `Prefer: wait` holding the request until the model is done), then posts
the answer with `say()`. Every command holds a worker thread for the whole prediction.

Run by the harness as `python -m bench.baseline_bot`, with the line protocol of `bench/instrumented_bot.py`
(no loop-lag figures: it has no event loop). Reads SLACK_BOT_TOKEN, SLACK_APP_TOKEN, SLACK_API_URL,
REPLICATE_API_TOKEN, REPLICATE_BASE_URL and ASK_MODEL (optional) from the environment.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import replicate
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient

from bench.stats import peak_rss_mb, rss_mb

MODEL = os.environ.get("ASK_MODEL", "meta/meta-llama-3-8b-instruct")


def build_app() -> App:
    client = WebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"])
    app = App(client=client)

    @app.command("/ask")
    def ask(ack: Any, command: dict[str, Any], say: Any) -> None:
        ack()
        output = replicate.run(MODEL, input={"prompt": command["text"]})
        say("".join(str(token) for token in output))

    return app


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    handler = SocketModeHandler(build_app(), os.environ["SLACK_APP_TOKEN"])
    handler.connect()  # returns at once; the client's own threads serve the socket
    _say({"ready": True, "adapters": ["slack"], "rss_mb": rss_mb()})
    for line in sys.stdin:
        request = line.strip()
        if request == "stop":
            break
        if request == "reset":
            _say({"reset": True})
        elif request == "stats":
            _say({"lag": None, "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb()})
        else:
            _say({"error": f"unknown request {request!r}"})
    handler.close()
    return 0


def _say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
