"""A conversation as the model takes it: the one place that knows the three ways models take earlier turns.

- **A chat template** (`prompt_template` in the schema: Llama 3 on Replicate): the whole transcript is written
  in Llama 3's own markers into `prompt`, and `prompt_template` is `{prompt}` so the model adds nothing around it
  (Meta's Llama 3 prompt format: https://www.llama.com/docs/model-cards-and-prompt-formats/meta-llama-3/).
  The markers are removed from what users and the model wrote, so no text can forge a turn.
- **A `messages` list** (OpenAI-style models on Replicate): `[{"role": "system"|"user"|"assistant",
  "content": …}]`; `prompt` carries the latest message too, for models that read only it.
- **A plain transcript** otherwise: `User: …` / `Assistant: …` lines ending in `Assistant:`, with the system
  prompt in `system_prompt` where the model takes one, else written first.

The system prompt comes first; the oldest turns are dropped first beyond `max_chars`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bot.models import ModelInfo
from bot.requests import ContextMessage

LLAMA3_BEGIN = "<|begin_of_text|>"
LLAMA3_HEADER = "<|start_header_id|>{role}<|end_header_id|>\n\n"
LLAMA3_END_OF_TURN = "<|eot_id|>"
# Any `<|…|>` marker: Llama 3's special tokens, and lookalikes of other families', out of user and model text.
_SPECIAL_MARKER = re.compile(r"<\|[^|<>]{0,40}\|>")
_ROLE_NAMES = {"user": "User", "assistant": "Assistant"}


def conversation_input(
    info: ModelInfo, system_prompt: str, context: Sequence[ContextMessage], prompt: str, max_chars: int
) -> dict[str, Any]:
    """The inputs that carry a conversation: earlier `context` turns, then `prompt`, the new user message."""
    turns = [*fit_context(system_prompt, context, prompt, max_chars), ContextMessage("user", prompt)]
    if info.takes_prompt_template:
        return {"prompt": llama3_transcript(system_prompt, turns), "prompt_template": "{prompt}"}
    if info.messages_field:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": turn.role, "content": turn.text} for turn in turns]
        return {info.messages_field: messages, "prompt": prompt}
    transcript = "\n\n".join(f"{_ROLE_NAMES[turn.role]}: {turn.text}" for turn in turns) + "\n\nAssistant:"
    if info.system_prompt_field:
        return {"prompt": transcript, info.system_prompt_field: system_prompt}
    return {"prompt": f"{system_prompt}\n\n{transcript}" if system_prompt else transcript}


def fit_context(
    system_prompt: str, context: Sequence[ContextMessage], prompt: str, max_chars: int
) -> list[ContextMessage]:
    """The newest turns that fit in `max_chars` with the system prompt and the new message (oldest dropped first)."""
    room = max_chars - len(system_prompt) - len(prompt)
    kept: list[ContextMessage] = []
    for turn in reversed(context):
        room -= len(turn.text)
        if room < 0:
            break
        kept.append(turn)
    kept.reverse()
    while kept and kept[0].role != "user":  # a transcript starts with what someone asked
        kept.pop(0)
    return kept


def llama3_transcript(system_prompt: str, turns: Sequence[ContextMessage]) -> str:
    parts = [LLAMA3_BEGIN]
    if system_prompt:
        parts.append(LLAMA3_HEADER.format(role="system") + inert_markers(system_prompt) + LLAMA3_END_OF_TURN)
    for turn in turns:
        parts.append(LLAMA3_HEADER.format(role=turn.role) + inert_markers(turn.text) + LLAMA3_END_OF_TURN)
    parts.append(LLAMA3_HEADER.format(role="assistant"))
    return "".join(parts)


def inert_markers(text: str) -> str:
    """Text with every `<|…|>` special-token marker removed: a user can't close a turn and open another (removed
    until none is left, so `<|<|x|>eot_id|>` can't leave a marker behind)."""
    while (cleaned := _SPECIAL_MARKER.sub("", text)) != text:
        text = cleaned
    return text
