"""Admin settings live in the state store: they outlast a restart of the real process and win over the environment.

The bot runs as operators run it (`python -m bot`, `STATE_URL` left at its default, a file under the working
directory); the admin types `/replicate …` into `python -m bot console`, a separate process on the same state.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from tests.process_harness import QUICK_TOKENS, ROOT, Process, bot_process, process_env, slack_replies

WAIT_S = 15.0
LIMITED, OTHER = "U0LIMITED", "U0OTHER"
ANSWER = "".join(QUICK_TOKENS)  # what the bot process's /ask model says
LIMITS = "ask=5/day"  # what the operator configured (LIMITS); the admin's change must win over it


async def slash_ask(running: Process, user: str, channel: str) -> str | None:
    """An /ask from `user` in `channel`: the ack's (private) text, None when the command was taken."""
    envelope = await running.slack.send_slash_command(command="/ask", text="a question", user_id=user,
                                                      channel_id=channel)
    ack = await running.slack.wait_for_ack(envelope, timeout=WAIT_S)
    text = (ack.get("payload") or {}).get("text")
    return str(text) if text else None


async def answered(running: Process, user: str, channel: str) -> None:
    assert await slash_ask(running, user, channel) is None
    await running.slack.wait_until(lambda: any(ANSWER in text for text in slack_replies(running.slack, channel)),
                                   WAIT_S, what=f"the answer in {channel}")


async def console_admin(running: Process, cwd: Path, line: str) -> str:
    """`python -m bot console` with one line on its input, on the same state as the bot; what it printed."""
    env = {key: value for key, value in process_env(running.replicate, running.slack, running.discord, 0).items()
           if not key.startswith(("SLACK_", "DISCORD_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console", env={**env, "PYTHONPATH": str(ROOT)}, cwd=cwd,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(f"{line}\n".encode()), 30.0)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def stop(running: Process) -> None:
    running.bot.process.send_signal(signal.SIGTERM)
    assert await running.bot.exit_status() == 0


async def test_a_limit_and_a_pause_set_by_an_admin_outlast_restarts_and_win_over_limits(tmp_path: Path) -> None:
    async with bot_process(tmp_path, LIMITS=LIMITS) as first:
        await answered(first, LIMITED, "C0BEFORE")
        said = await console_admin(first, tmp_path, f"/replicate limit slack:{LIMITED} ask 1/day")
        assert "at most 1 per day" in said, said
        await stop(first)

    async with bot_process(tmp_path, LIMITS=LIMITS) as second:
        refusal = await slash_ask(second, LIMITED, "C0AFTER")
        assert refusal is not None and "You've used your 1 /ask command for today." in refusal, refusal
        assert second.slack.channel_messages("C0AFTER") == []
        await answered(second, OTHER, "C0OTHER")  # everyone else still has LIMITS' 5 a day
        said = await console_admin(second, tmp_path, "/replicate pause")
        assert said.startswith("Paused"), said
        await stop(second)

    async with bot_process(tmp_path, LIMITS=LIMITS) as third:
        refusal = await slash_ask(third, OTHER, "C0PAUSED")
        assert refusal is not None and "The bot is paused by its admins." in refusal, refusal
        assert third.slack.channel_messages("C0PAUSED") == []
        assert [r for r in third.replicate.requests_to("POST", "/v1/") if "predictions" in r.path] == []
        await stop(third)
