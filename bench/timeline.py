"""Where each answer's time went: command sent → create reached Replicate → model done → answer posted.

Why: "all answers took 3.5× the model latency" alone does not say whether the bot was slow to start
predictions, slow to read their streams, or slow to post. The fake Replicate records when each create
arrived and when each prediction finished; the prompt names the command (`Workload.prompt`).
"""

from __future__ import annotations

import re
from typing import Any

from bench.stats import percentile
from tests.fakes.replicate_server import FakePrediction

_INDEX = re.compile(r"benchmark question (\d+)$")


def breakdown(sent_at: dict[int, float], final_at: dict[int, float],
              predictions: list[FakePrediction]) -> dict[str, dict[str, float | None]]:
    """p50/max (ms) of each leg, over the commands that got that far."""
    legs: dict[str, list[float]] = {"send_to_create": [], "create_to_model_done": [], "model_done_to_posted": []}
    for prediction in predictions:
        match = _INDEX.match(str(prediction.input.get("prompt", "")))
        if match is None:
            continue
        index = int(match.group(1))
        if index in sent_at:
            legs["send_to_create"].append(prediction.created_at - sent_at[index])
        if prediction.completed_at is not None:
            legs["create_to_model_done"].append(prediction.completed_at - prediction.created_at)
            if index in final_at:
                legs["model_done_to_posted"].append(final_at[index] - prediction.completed_at)
    return {leg: _summary(values) for leg, values in legs.items()}


def _summary(values: list[float]) -> dict[str, Any]:
    p50 = percentile(values, 0.5)
    return {"p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "max_ms": round(max(values) * 1000, 1) if values else None}
