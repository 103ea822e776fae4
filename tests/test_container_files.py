"""The container and its deployment, checked without a Docker engine: the Dockerfile installs the locked tree
with hashes, runs as an unprivileged user and checks /healthz; the compose file runs two bot instances on one
Redis; the Grafana dashboard charts only metrics a running bot exposes on /metrics."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tests.bot_harness import running_bots
from tests.test_architecture import imported_modules, modules_under
from tests.test_metrics import command_lines, scrape

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "deploy" / "compose.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "replicate-chatbot.json"
SHARED_STATE = "redis://redis:6379/0"
METRIC_NAME = re.compile(r"\breplicate_bot_\w+")
RUNTIME_PACKAGES = ("bot", "adapters", "service", "config")


# --- Dockerfile ------------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines()
                                            if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_image_is_python_311_slim_with_the_locked_tree_installed_by_hash() -> None:
    steps = instructions()

    assert steps[0] == ("FROM", "python:3.11-slim")
    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 1 and "--require-hashes" in installs[0] and "-r requirements.lock" in installs[0]
    assert ("COPY", "requirements.lock ./") in steps


def test_the_image_holds_every_package_the_bot_imports_from_this_repository() -> None:
    local = {path.name for path in ROOT.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    needed = {
        module.split(".")[0]
        for package in RUNTIME_PACKAGES
        for path in modules_under(package)
        for _, module in imported_modules(ast.parse(path.read_text(encoding="utf-8")))
    } & local
    copied = {args.split()[0] for keyword, args in instructions() if keyword == "COPY"}

    assert needed and needed <= copied, f"not copied into the image: {needed - copied}"


def test_the_bot_runs_as_an_unprivileged_user_and_is_pid_1() -> None:
    steps = instructions()
    users = [index for index, (keyword, _) in enumerate(steps) if keyword == "USER"]
    commands = [index for index, (keyword, _) in enumerate(steps) if keyword == "CMD"]

    assert users and commands and users[-1] < commands[-1]
    assert steps[users[-1]][1] not in ("root", "0", "0:0")
    assert not any(keyword == "RUN" for keyword, _ in steps[users[-1]:])  # nothing runs as root after it
    # Exec form: SIGTERM reaches the bot itself, which finishes its commands within SHUTDOWN_GRACE.
    assert json.loads(steps[commands[-1]][1]) == ["python", "-m", "bot"]


def test_the_health_check_asks_healthz_with_the_standard_library() -> None:
    [check] = [args for keyword, args in instructions() if keyword == "HEALTHCHECK"]

    assert "/healthz" in check and "urllib.request" in check
    assert "curl" not in check and "wget" not in check  # neither is in python:3.11-slim


def test_the_build_context_leaves_out_secrets_state_and_caches() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}

    assert {".env", ".venv", ".git", "data", "**/__pycache__"} <= ignored


# --- compose ---------------------------------------------------------------------------------------------


def compose_services() -> dict[str, str]:
    """Each service's block of text under `services:` (two-space indented names; no YAML parser needed)."""
    text = COMPOSE.read_text()
    body = re.search(r"^services:\n(.*?)(?=^\S)", text, re.MULTILINE | re.DOTALL)
    assert body is not None
    parts = re.split(r"^  ([\w-]+):\n", body.group(1), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def bot_services() -> dict[str, str]:
    return {name: block for name, block in compose_services().items() if re.search(r"^\s+build:", block, re.M)}


def test_compose_runs_two_bot_instances_on_one_redis() -> None:
    services, bots = compose_services(), bot_services()

    assert "redis" in services and re.search(r"image: redis:\S+", services["redis"])
    assert "redis-cli" in services["redis"] and "healthcheck:" in services["redis"]
    assert len(bots) >= 2
    for name, block in bots.items():
        assert re.search(rf"^\s+STATE_URL: {re.escape(SHARED_STATE)}$", block, re.M), name
        assert "- ../.env" in block, name
        assert re.search(r"depends_on:\n\s+redis:\n\s+condition: service_healthy", block), name
        assert "healthcheck:" in block and "/healthz" in block, name


def test_each_bot_instance_runs_its_own_share_of_discords_gateway() -> None:
    shares = [re.search(r'DISCORD_SHARD_IDS: "([\d,]+)"', block) for block in bot_services().values()]
    counts = {match.group(1) for block in bot_services().values()
              if (match := re.search(r'DISCORD_SHARD_COUNT: "(\d+)"', block))}

    ids = [int(shard) for match in shares if match for shard in match.group(1).split(",")]
    assert len(ids) == len(set(ids)) == len(bot_services())  # two sessions on one shard would both answer
    assert counts == {str(len(ids))}


def test_prometheus_scrapes_every_bot_instance() -> None:
    targets = set(re.findall(r'"([\w-]+):3000"', PROMETHEUS.read_text()))

    assert targets == set(bot_services())


# --- the dashboard ---------------------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_dashboard_charts_every_aspect_the_metrics_cover() -> None:
    names = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}

    assert {"replicate_bot_commands_total", "replicate_bot_predictions_running", "replicate_bot_predictions_queued",
            "replicate_bot_answer_seconds_bucket", "replicate_bot_prediction_seconds_bucket",
            "replicate_bot_refusals_total", "replicate_bot_estimated_spend_usd_total",
            "replicate_bot_edit_budget_left"} <= names
    assert json.loads(DASHBOARD.read_text())["timezone"] == "utc"  # "today" is the budget's UTC day


@pytest.mark.parametrize("quantile", ["0.5", "0.95"])
def test_the_dashboard_reads_latency_quantiles_from_the_histograms(quantile: str) -> None:
    assert any(f"histogram_quantile({quantile}," in query and "_seconds_bucket" in query
               for query in dashboard_queries())


async def test_every_metric_the_dashboard_queries_is_exposed_by_a_running_bot() -> None:
    with command_lines() as lines:
        async with running_bots(discord=False) as bots:
            assert bots.slack is not None
            await bots.slack.send_slash_command(command="/ask", text="hello", channel_id="C0DASH")
            await bots.slack_final("C0DASH")
            empty = await bots.slack.send_slash_command(command="/ask", text="", channel_id="C0DASH")
            await bots.slack.wait_for_ack(empty)  # refused (the usage text): a refusal by reason
            await lines.wait_for(1)
            _, samples = await scrape(bots)

    exposed = {name for name, _ in samples}
    queried = {name for query in dashboard_queries() for name in METRIC_NAME.findall(query)}
    assert queried <= exposed, f"the dashboard asks for what /metrics never shows: {sorted(queried - exposed)}"
