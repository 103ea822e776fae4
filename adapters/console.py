"""The terminal adapter: type `/ask …` or `/imagine …`, watch status and text stream, find images on disk.

How a newcomer tries the bot without a chat account. Reads a line at a time from a terminal or a
pipe and exits 0 at end of input. Model output is untrusted: control characters (terminal escape
sequences) are removed before printing.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import unicodedata
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import TextIO, assert_never

from bot.core import CommandCore
from bot.replies import Failure, Images, Status, TextDelta, TextDone
from bot.requests import CommandName, CommandRequest, Origin

PROMPT = "> "
HELP_TEXT = (
    "Type `/ask <question>` or `/imagine <description>` (options at the end, e.g. `--ar 16:9`). "
    "A line without a command continues the conversation (/ask starts a new one). `/replicate help` shows more. "
    "Ctrl-D quits."
)
ADMIN_COMMAND = "replicate"
CONSOLE_ORIGIN = Origin(platform="console", user_id="you", channel_id="terminal")
_COMMAND_LINE = re.compile(r"^/(\w+)\s*(.*)$", re.S)


def printable(text: str) -> str:
    """Model text without control characters, so it cannot drive the terminal."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of standard input, read in a thread so the event loop never blocks on the terminal."""
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        yield line


class ConsoleAdapter:
    """Runs commands one at a time, printing what each platform adapter would render."""

    def __init__(self, core: CommandCore, out: TextIO, image_dir: Path, *, interactive: bool = False) -> None:
        self._core = core
        self._out = out
        self._image_dir = image_dir
        self._interactive = interactive
        self._conversation: str | None = None  # the one a plain line continues: the latest /ask's

    async def run(self, lines: AsyncIterator[str]) -> None:
        if self._interactive:
            self._write(HELP_TEXT + "\n" + PROMPT)
        async for line in lines:
            await self.handle_line(line.strip())
            if self._interactive:
                self._write(PROMPT)

    async def handle_line(self, line: str) -> None:
        if not line:
            return
        match = _COMMAND_LINE.match(line)
        if match is None:  # a plain line: the next turn of the current conversation
            await self._run(await self._core.prepare_turn(line, CONSOLE_ORIGIN, conversation_id=self._conversation))
            return
        command, text = match.group(1).lower(), match.group(2)
        if command in ("help", "h"):
            self._write(HELP_TEXT + "\n")
            return
        if command == ADMIN_COMMAND:  # the console's user is the bot's admin
            self._write(printable(await self._core.administer(CONSOLE_ORIGIN, text)) + "\n")
            return
        if command not in {name.value for name in CommandName}:
            self._write(f"✗ Unknown command /{command}. {HELP_TEXT}\n")
            return
        await self._run(await self._core.prepare(command, text, CONSOLE_ORIGIN))

    async def _run(self, prepared: CommandRequest | Failure) -> None:
        if isinstance(prepared, Failure):
            self._write(f"✗ {prepared.message}\n")
            return
        if prepared.conversation_id is not None:
            self._conversation = prepared.conversation_id
        await self._render(prepared)

    async def _render(self, request: CommandRequest) -> None:
        streamed = ""
        last_status = ""
        async with aclosing(self._core.execute(request)) as events:
            async for event in events:
                match event:
                    case Status():
                        if event.text != last_status:
                            last_status = event.text
                            self._write(f"· {event.text}\n")
                    case TextDelta():
                        streamed += event.text
                        self._write(printable(event.text))
                    case TextDone():
                        if event.text.startswith(streamed):
                            self._write(printable(event.text[len(streamed) :]))
                        else:
                            self._write("\n" + printable(event.text))
                        self._write("\n")
                    case Images():
                        for path in await self._save(event):
                            self._write(f"🖼  saved {path}\n")
                        self._write(f"   prompt: {printable(event.prompt)} · model: {printable(event.run.model)}"
                                    f" · seed: {event.seed}\n")
                        for note in event.notes:
                            self._write(f"   {printable(note)}\n")
                    case Failure():
                        self._write(("\n" if streamed else "") + printable(f"✗ {event.message}") + "\n")
                    case _:
                        assert_never(event)

    async def _save(self, images: Images) -> list[Path]:
        # Disk writes go to a thread: an image of megabytes would otherwise hold the event loop.
        await asyncio.to_thread(self._image_dir.mkdir, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = []
        for index, image in enumerate(images.images, start=1):
            if not image.data:
                why = image.problem or f"Image {index} could not be downloaded."
                link = f" Link: {image.url}" if image.url else ""
                self._write(printable(f"⚠ {why}{link}") + "\n")
                continue
            extension = image.filename.rsplit(".", 1)[-1]
            path = self._image_dir / f"{stamp}-{images.run.prediction_id or 'image'}-{index}.{extension}"
            await asyncio.to_thread(path.write_bytes, image.data)
            paths.append(path)
        return paths

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()
