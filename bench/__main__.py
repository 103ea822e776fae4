"""`python -m bench`: run the load against the bot (Slack, Discord) and the baseline, then report.

Runs are sequential, each with a fresh bot process and fresh fakes, so one run's memory and
connections never colour the next one's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import render_markdown, render_table
from bench.workload import Workload, clean_environ

BENCH_DIR = Path(__file__).resolve().parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bin/bench", description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="concurrent /ask commands (default 200)")
    parser.add_argument("--latency", type=float, default=2.0, help="model latency in seconds (default 2)")
    parser.add_argument("--platform", choices=("slack", "discord", "both"), default="both")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the seed-style baseline")
    parser.add_argument("--skip-follow-ups", action="store_true",
                        help="do not run the follow-up load (N second turns in the /ask threads, on Slack)")
    parser.add_argument("--skip-instances", action="store_true",
                        help="do not run the two-instance loads (N split over two processes on one Redis; then the "
                             "same with one of them killed mid-load)")
    parser.add_argument("--slack-tiers", action="store_true",
                        help="the fake Slack enforces the documented rate-limit tiers of every method the bot uses "
                             "(chat.update 50/min, streams 20/min, ...) and offers native streaming")
    parser.add_argument("--channels", type=int, default=None,
                        help="Slack channels the commands are spread over (default: one per command)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the bot process with cProfile (slows it down); stats go next to its log")
    parser.add_argument("--output-dir", type=Path, default=BENCH_DIR,
                        help="where RESULTS.md and results.json go (default bench/)")
    return parser.parse_args(argv)


async def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.discord_load import run_discord
    from bench.instances import run_instances
    from bench.slack_load import run_slack

    workload = Workload(n=args.n, latency_s=args.latency, slack_tiers=args.slack_tiers, profile=args.profile,
                        channels=args.channels)
    runs: list[dict[str, Any]] = []
    plan: list[tuple[str, Any]] = []
    if args.platform in ("slack", "both"):
        plan.append(("bot on Slack", lambda: run_slack(workload, baseline=False)))
        if not args.skip_follow_ups:
            plan.append(("follow-ups on Slack", lambda: run_slack(workload, baseline=False, follow_ups=True)))
        if not args.skip_instances:
            plan.append(("2 instances on Slack", lambda: run_instances(workload, kill=False)))
            plan.append(("2 instances, 1 killed", lambda: run_instances(workload, kill=True)))
    if args.platform in ("discord", "both"):
        plan.append(("bot on Discord", lambda: run_discord(workload)))
    if not args.skip_baseline:
        plan.append(("baseline on Slack", lambda: run_slack(workload, baseline=True)))
    for label, run in plan:
        print(f"running: {label} (N={workload.n}, model latency {workload.latency_s:g}s)…", file=sys.stderr)
        started = time.monotonic()
        result = await run()
        result["label"] = label
        result["run_s"] = round(time.monotonic() - started, 1)
        runs.append(result)
    return runs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    clean_environ()
    runs = asyncio.run(run_all(args))
    meta = {"n": args.n, "latency_s": args.latency, "slack_tiers": args.slack_tiers, "channels": args.channels,
            "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(render_table(runs, meta))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "RESULTS.md").write_text(render_markdown(runs, meta))
    results = json.dumps({"meta": meta, "runs": runs}, indent=2, default=str)
    (args.output_dir / "results.json").write_text(results + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
