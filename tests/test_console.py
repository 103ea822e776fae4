"""`python -m bot console` as a newcomer runs it: a real process, real stdin/stdout, a fake Replicate."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.replicate_server import FakeReplicate, ImageModel, TextModel

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n" + b"console-png"


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicate]:
    async with FakeReplicate() as fake:
        fake.add_model("meta/meta-llama-3-8b-instruct", TextModel(tokens=["Hi", " there", "\x1b[2J"]))
        fake.add_model("black-forest-labs/flux-schnell", ImageModel(images=[(PNG, "image/png")]))
        yield fake


async def run_console(stdin: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), **env}, cwd=cwd,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_console_answers_ask_and_saves_imagine_images(replicate: FakeReplicate, tmp_path: Path) -> None:
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "IMAGE_DIR": str(tmp_path / "images"),
        "SSL_CERT_FILE": replicate.ca_bundle,  # the fake's files are served over its own TLS
    }

    code, out, _ = await run_console("/ask hello\n/imagine a lighthouse --seed 5\n/imagine\n", env, tmp_path)

    assert code == 0
    assert "Hi there" in out and "\x1b" not in out  # model text printed, terminal escapes removed
    saved = list((tmp_path / "images").iterdir())
    assert [path.read_bytes() for path in saved] == [PNG]
    assert str(saved[0]) in out and "seed: 5" in out
    assert "Usage: `/imagine <description>`" in out
    assert len(replicate.creates) == 2


async def test_console_without_a_token_says_what_to_set_and_exits_non_zero(tmp_path: Path) -> None:
    code, _out, err = await run_console("/ask hi\n", {}, tmp_path)

    assert code != 0
    assert "REPLICATE_API_TOKEN" in err and "replicate.com/account/api-tokens" in err


async def test_console_imagine_shows_starting_at_once_and_a_timeout_cancels_the_unanswered_create(
    replicate: FakeReplicate, tmp_path: Path
) -> None:
    replicate.add_model("black-forest-labs/flux-schnell", ImageModel(hang=True))
    replicate.hold("create", 1)  # the create reaches Replicate, which makes the prediction and never answers
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "PREDICTION_TIMEOUT": "2",
        "IMAGE_DIR": str(tmp_path / "images"),
    }

    code, out, _ = await run_console("/imagine a lighthouse\n", env, tmp_path)

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "· Starting the model (a cold start can take a minute)…"
    assert any("took longer than 2 seconds, so I cancelled it" in line for line in lines), out
    assert replicate.cancels == [replicate.creates[0].id] and replicate.running() == []


async def test_console_refuses_a_text_model_for_imagine_and_notes_an_unused_no(
    replicate: FakeReplicate, tmp_path: Path
) -> None:
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "IMAGE_DIR": str(tmp_path / "images"),
        "SSL_CERT_FILE": replicate.ca_bundle,
    }
    stdin = "/imagine a cat --model meta/meta-llama-3-8b-instruct\n/imagine a lighthouse --no fog\n"

    code, out, _ = await run_console(stdin, env, tmp_path)

    assert code == 0
    refusal = next(line for line in out.splitlines() if line.startswith("✗"))
    assert "meta/meta-llama-3-8b-instruct" in refusal and "text model" in refusal
    assert "`--no` was not used" in out and len(list((tmp_path / "images").iterdir())) == 1
    [create] = replicate.creates  # the refused command created nothing
    assert create.model == "black-forest-labs/flux-schnell" and "negative_prompt" not in create.input


async def test_console_strips_terminal_controls_from_error_details_and_refused_outputs(
    replicate: FakeReplicate, tmp_path: Path
) -> None:
    replicate.fail("create", 422, detail="- input.prompt: \x1b]0;pwned\x07\x1b[2Jbad")
    replicate.add_model("black-forest-labs/flux-schnell", ImageModel(output_override=["https://\x1b[2Jevil.test/x.png"]))
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "IMAGE_DIR": str(tmp_path / "images"),
    }

    code, out, _ = await run_console("/ask hi\n/imagine a lighthouse\n", env, tmp_path)

    assert code == 0
    assert "rejected the input" in out and "could not be posted" in out
    assert "\x1b" not in out and "\x07" not in out


async def test_console_replicate_answers_help_models_usage_and_its_controls_govern_the_next_commands(
    replicate: FakeReplicate, tmp_path: Path
) -> None:
    replicate.add_model("meta/meta-llama-3-8b-instruct", TextModel(tokens=["Hi"]), description="A small chat model")
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "IMAGE_DIR": str(tmp_path / "images"),
        "SSL_CERT_FILE": replicate.ca_bundle,
        "STATE_URL": f"sqlite:///{tmp_path}/bot.db",
    }
    stdin = "".join(f"{line}\n" for line in [
        "/replicate help", "/replicate models",
        "/replicate limit default ask 1/day", "/ask one", "/ask two", "/replicate usage",
        "/replicate block you", "/imagine a cat", "/replicate unblock you",
        "/replicate pause", "/imagine a dog", "/replicate resume", "/imagine a bird",
        "/replicate frobnicate",
    ])

    code, out, _ = await run_console(stdin, env, tmp_path)

    assert code == 0
    assert "`/replicate block <user>`" in out  # the console's user is the bot's admin
    assert "• `meta/meta-llama-3-8b-instruct` (default): A small chat model" in out
    assert "/ask for everyone (the default): at most 1 per day" in out
    assert "You've used your 1 /ask command for today" in out and "/ask: 1 today, limit 1/day: 0 left" in out
    assert "`console:you` is blocked" in out and "An admin has blocked you from using this bot." in out
    assert "The bot is paused by its admins." in out
    assert "There is no `/replicate frobnicate`. Try `/replicate help`." in out
    assert [create.input["prompt"] for create in replicate.creates] == ["one", "a bird"]


async def test_a_plain_line_continues_the_conversation_and_ask_starts_a_new_one(
    replicate: FakeReplicate, tmp_path: Path
) -> None:
    env = {
        "REPLICATE_API_TOKEN": "r8_test_token",
        "REPLICATE_BASE_URL": replicate.base_url,
        "REPLICATE_OUTPUT_HOSTS": replicate.output_host,
        "SYSTEM_PROMPT": "Be terse.",
    }

    code, _out, _ = await run_console("/ask I am Ada\nwho am I?\n/ask fresh start\nand now?\n", env, tmp_path)

    assert code == 0
    prompts = [create.input["prompt"] for create in replicate.creates]
    assert prompts[0] == "I am Ada" and prompts[2] == "fresh start"
    assert "I am Ada" in prompts[1] and "who am I?" in prompts[1] and "Hi there" in prompts[1]
    assert "fresh start" in prompts[3] and "and now?" in prompts[3]
    assert "I am Ada" not in prompts[3] and "Be terse." in prompts[3]
