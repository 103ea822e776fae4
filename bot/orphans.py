"""Finding the prediction a create made even though we never heard back (a 5xx, a lost answer, a deadline).

A create that reached Replicate may have made its prediction, billed and running, even when its answer was an
error or never came. Retrying would pay twice; ignoring it leaves it running unwatched. So we look among our
newest predictions (`GET /v1/predictions`, newest first, with their `input`) for one of the same model and
input made since the create was sent, that no other command of ours already owns.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction

log = logging.getLogger(__name__)

# How far before our create request an orphan's `created_at` may be (clocks differ) and still be ours.
ORPHAN_CLOCK_SKEW = timedelta(seconds=30)
KNOWN_PREDICTIONS = 10_000  # far more than a search reads
ORPHAN_SEARCH_PAGES = 10  # of 100 predictions each: a search reads back this far at most
_FRACTION = re.compile(r"(\.\d{6})\d+")


class OwnedPredictions:
    """The ids of the predictions this process made or took up, so none is claimed by two commands."""

    def __init__(self) -> None:
        self._known: dict[str, None] = {}  # oldest first

    def remember(self, prediction_id: str) -> None:
        self._known[prediction_id] = None
        if len(self._known) > KNOWN_PREDICTIONS:
            del self._known[next(iter(self._known))]

    async def find_orphan(
        self, client: replicate.Client, model: str, model_input: dict[str, Any], sent_at: datetime
    ) -> Prediction | None:
        """The prediction a failed create may have made anyway: not ours yet, same model and input, made just now.

        Pages back through the list (newest first) until it reaches predictions made before the create was sent:
        a burst of creates (a process killed with 100 in flight) pushes one past the first page."""
        name, _, version = model.partition(":")
        earliest = sent_at - ORPHAN_CLOCK_SKEW
        cursor: Any = ...  # replicate's "first page"
        for _ in range(ORPHAN_SEARCH_PAGES):
            try:
                page = await client.predictions.async_list(cursor)
            except (ReplicateError, httpx.HTTPError) as error:
                log.warning("Could not list predictions to look for one a failed create made (%s)",
                            type(error).__name__)
                return None
            for prediction in page.results:
                if (
                    prediction.id not in self._known
                    and (prediction.version == version if version else prediction.model == name)
                    and prediction.input == model_input
                    and _created_since(prediction, earliest)
                ):
                    log.warning("Create for %s failed, but prediction %s was made: following it", model,
                                prediction.id)
                    self.remember(prediction.id)
                    return prediction
            if not page.next or not page.results or not _created_since(page.results[-1], earliest):
                return None  # no older page, or this one already reaches back before the create
            cursor = page.next
        return None


def _created_since(prediction: Prediction, earliest: datetime) -> bool:
    try:  # "2026-11-25T10:00:00.123456789Z": Python reads at most six fractional digits
        created = datetime.fromisoformat(_FRACTION.sub(r"\1", prediction.created_at or "").replace("Z", "+00:00"))
    except ValueError:
        return False
    return created.tzinfo is not None and created >= earliest
