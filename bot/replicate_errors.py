"""Replicate's answers, as the bot's typed failures: one class per kind, the raw detail kept for the log.

Replicate answers errors as RFC 7807 JSON (`title`, `detail`, `status`; https://replicate.com/docs/reference/http):
401 a bad token, 403/404 an unknown model or version, 422 invalid input (`detail` names the field), 429
throttled, 5xx trouble on their side. A prediction that fails carries its own `error` text, where safety
filters say so in words ("NSFW content detected…").
"""

from __future__ import annotations

import json
import logging
import re

from replicate.exceptions import ReplicateError

from bot.errors import (
    BotMisconfigured,
    FailureKind,
    InvalidModelInput,
    ModelFailed,
    ModelNotFound,
    PredictionError,
    ReplicateBusy,
    ReplicateUnavailable,
    SafetyFilterBlocked,
    describe_failure,
)

log = logging.getLogger(__name__)

_NSFW = re.compile(r"nsfw|safety (checker|filter)|content (policy|moderation)|flagged as (sensitive|unsafe)", re.I)
_RETRY_IN_DETAIL = re.compile(r"(?:in|after)\s+~?(\d+(?:\.\d+)?)\s*s", re.I)
DETAIL_SHOWN_CHARS = 500


def api_error(model: str, error: ReplicateError, prediction_id: str | None = None) -> PredictionError:
    """One user-facing class per API failure; the raw detail goes to the log only (except 422's)."""
    status = error.status or 0
    log.warning("Replicate answered %s for %s: %s %s", status, model, error.title, error.detail)
    if status == 401:
        log.error("Replicate rejected REPLICATE_API_TOKEN (401): check the token")
        return BotMisconfigured(describe_failure(FailureKind.MISCONFIGURED), cause=error, prediction_id=prediction_id)
    if status in (403, 404):
        return ModelNotFound(
            describe_failure(FailureKind.MODEL_NOT_FOUND, model=model), cause=error, prediction_id=prediction_id
        )
    if status == 422:
        detail = (error.detail or error.title or "invalid input").strip()
        return InvalidModelInput(
            describe_failure(FailureKind.INVALID_MODEL_INPUT, model=model, detail=detail[:DETAIL_SHOWN_CHARS]),
            cause=error,
            prediction_id=prediction_id,
        )
    if status == 429:
        return ReplicateBusy(describe_failure(FailureKind.REPLICATE_BUSY), cause=error, prediction_id=prediction_id)
    if status >= 500:
        return ReplicateUnavailable(
            describe_failure(FailureKind.REPLICATE_UNAVAILABLE), cause=error, prediction_id=prediction_id
        )
    return ModelFailed(
        describe_failure(FailureKind.MODEL_FAILED, model=model), cause=error, prediction_id=prediction_id
    )


def model_error(model: str, detail: str, prediction_id: str | None, cause: BaseException | None) -> PredictionError:
    """A prediction that failed while running: its safety filter, or any other failure of the model."""
    log.warning("Prediction %s of %s failed: %s", prediction_id, model, detail)
    if _NSFW.search(detail):
        return SafetyFilterBlocked(
            describe_failure(FailureKind.SAFETY_FILTER), cause=cause, prediction_id=prediction_id
        )
    return ModelFailed(
        describe_failure(FailureKind.MODEL_FAILED, model=model), cause=cause, prediction_id=prediction_id
    )


def retry_after_from_detail(detail: str | None) -> float | None:
    """Seconds a 429's text asks us to wait ("…resets in ~3s"), for when no Retry-After header came."""
    match = _RETRY_IN_DETAIL.search(detail or "")
    return float(match.group(1)) if match else None


def stream_error_detail(data: str) -> str:
    """The `detail` of an SSE `error` event (`{"detail": …}`), or the raw data."""
    try:
        payload = json.loads(data)
    except ValueError:
        return data
    return str(payload.get("detail", data)) if isinstance(payload, dict) else data
