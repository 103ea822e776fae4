"""The models each command may use, looked up on Replicate once at start-up and kept in memory.

Each configured model's schema says whether it writes text or makes images, and which inputs it
takes (`bot.models.describe_schema`). The look-ups run concurrently within `LOOKUP_TIMEOUT_S`, so a
slow Replicate can't hold up start-up. A model Replicate doesn't have (404), one the bot can't use,
and a command's default model of the wrong kind are named in one log line and left out. Where
Replicate gave no answer (unreachable, 5xx, time out, token refused) the fallback table in
`config.models` stands in, so the bot still starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import replicate
from replicate.exceptions import ReplicateError

from bot.models import ModelInfo, ModelKind, describe_profile, describe_schema
from config.models import FLUX_ASPECT_RATIOS, known_profile
from config.settings import REPLICATE_TOKEN_PAGE

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 5.0  # all look-ups together; past it, the fallback table stands in for the rest
MAX_OFFERED_RATIOS = 25  # Discord takes at most 25 choices per option


@dataclass(frozen=True)
class ConfiguredModels:
    """What the operator configured: each command's default model and every model allowed."""

    ask: str
    imagine: str
    allowed: frozenset[str]

    def default_for(self, kind: ModelKind) -> str:
        return (self.ask if kind is ModelKind.TEXT else self.imagine).lower()

    def setting_for(self, kind: ModelKind) -> str:
        return "ASK_MODEL" if kind is ModelKind.TEXT else "IMAGINE_MODEL"


@dataclass(frozen=True)
class _NotUsable:
    """Replicate answered: the model can't be used (it doesn't exist, has no version…)."""

    reason: str


@dataclass(frozen=True)
class _NoAnswer:
    """Replicate couldn't say (unreachable, 5xx, time out, 401): the fallback table stands in."""

    reason: str
    token_refused: bool = False


_LookupResult = ModelInfo | _NotUsable | _NoAnswer
COMMAND_OF = {ModelKind.TEXT: "/ask", ModelKind.IMAGE: "/imagine"}
A_MODEL_OF = {ModelKind.TEXT: "a text model", ModelKind.IMAGE: "an image model"}


class ModelCatalog:
    """Which models serve /ask (text) and /imagine (images), with what each takes. Read-only once built."""

    def __init__(self, models: Iterable[ModelInfo], configured: ConfiguredModels) -> None:
        self._configured = configured
        self._by_kind: dict[ModelKind, dict[str, ModelInfo]] = {ModelKind.TEXT: {}, ModelKind.IMAGE: {}}
        for info in models:
            if info.kind in self._by_kind:
                self._by_kind[info.kind][info.ref.lower()] = info

    @classmethod
    def from_table(cls, configured: ConfiguredModels) -> ModelCatalog:
        """Every allowed model as the fallback table describes it (no I/O)."""
        return cls([info for ref in sorted(configured.allowed) for info in _table_infos(ref, configured)], configured)

    def refs(self, kind: ModelKind) -> tuple[str, ...]:
        return tuple(sorted(self._by_kind.get(kind, {})))

    def all_refs(self) -> frozenset[str]:
        return frozenset(ref for models in self._by_kind.values() for ref in models)

    def find(self, ref: str, kind: ModelKind) -> ModelInfo | None:
        """`ref` as a model of `kind`; a version of an allowed `owner/name` is described by that model."""
        models = self._by_kind.get(kind, {})
        return models.get(ref.lower()) or models.get(ref.lower().partition(":")[0])

    def kind_of(self, ref: str) -> ModelKind | None:
        return next((kind for kind in self._by_kind if self.find(ref, kind) is not None), None)

    def default(self, kind: ModelKind) -> ModelInfo | None:
        """The command's configured model, or None when it was left out (the start-up log said why)."""
        return self._by_kind.get(kind, {}).get(self._configured.default_for(kind))

    # --- what chat platforms offer as typed options ---------------------------------------------------

    def max_tokens_limit(self, cap: int) -> int:
        """The largest `max_tokens` any text model takes, within the operator's cap."""
        maxima = [info.max_tokens.maximum for info in self._by_kind[ModelKind.TEXT].values()]
        if not maxima or any(maximum is None for maximum in maxima):
            return cap
        return max(1, min(cap, int(max(m for m in maxima if m is not None))))

    def aspect_ratio_choices(self) -> tuple[str, ...]:
        """The default image model's own ratios first, then other models' (any ratio fits width/height models)."""
        images = self._by_kind[ModelKind.IMAGE]
        default = self.default(ModelKind.IMAGE)
        ordered = ([default] if default else []) + [info for ref, info in sorted(images.items()) if info is not default]
        ratios = list(dict.fromkeys(ratio for info in ordered for ratio in info.aspect_ratios))
        if not ratios and any(info.size_style is not None for info in images.values()):
            ratios = list(FLUX_ASPECT_RATIOS)
        return tuple(ratios[:MAX_OFFERED_RATIOS])

    def takes_negative_prompt(self) -> bool:
        return any(info.negative_prompt_field for info in self._by_kind[ModelKind.IMAGE].values())


async def load_catalog(
    client: replicate.Client, configured: ConfiguredModels, *, timeout_s: float = LOOKUP_TIMEOUT_S
) -> ModelCatalog:
    """Look every allowed model up on Replicate at once and build the catalog; logs what was left out and why."""
    refs = sorted(configured.allowed)
    tasks = {ref: asyncio.create_task(_look_up(client, ref), name=f"model-lookup-{ref}") for ref in refs}
    done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    results: dict[str, _LookupResult] = {
        ref: task.result() if task in done else _NoAnswer(f"no answer within {timeout_s:g} s")
        for ref, task in tasks.items()
    }
    models: list[ModelInfo] = []
    left_out: list[str] = []
    unanswered: list[_NoAnswer] = []
    for ref, result in results.items():
        if isinstance(result, _NoAnswer):
            unanswered.append(result)
            models.extend(_table_infos(ref, configured))
        elif isinstance(result, _NotUsable):
            left_out.append(f"{ref} ({result.reason})")
        elif result.kind is ModelKind.OTHER:
            left_out.append(f"{ref} ({result.why_unusable or 'the bot cannot use it'})")
        else:
            models.append(result)
    wrong_kind = _wrong_kind_defaults(ModelCatalog(models, configured), configured)
    for ref, (wanted, actual) in wrong_kind.items():
        left_out.append(
            f"{ref} ({A_MODEL_OF[actual]}, so not for {COMMAND_OF[wanted]}: set {configured.setting_for(wanted)} "
            f"to {A_MODEL_OF[wanted]})"
        )
    # A configured model of the wrong kind is a mistake, so it is offered nowhere; unless it is also the
    # other command's configured model, where it fits.
    misfits = {ref for ref, (_, actual) in wrong_kind.items() if configured.default_for(actual) != ref}
    catalog = ModelCatalog([info for info in models if info.ref.lower() not in misfits], configured)
    _log_outcome(catalog, left_out, unanswered, results)
    return catalog


def _wrong_kind_defaults(found: ModelCatalog, configured: ConfiguredModels) -> dict[str, tuple[ModelKind, ModelKind]]:
    """Each command's configured model that is of another kind: ref → (the kind wanted, its kind)."""
    wrong: dict[str, tuple[ModelKind, ModelKind]] = {}
    for kind in (ModelKind.TEXT, ModelKind.IMAGE):
        default = configured.default_for(kind)
        actual = found.kind_of(default)
        if found.default(kind) is None and actual is not None:
            wrong[default] = (kind, actual)
    return wrong


async def _look_up(client: replicate.Client, ref: str) -> _LookupResult:
    name, _, version_id = ref.partition(":")
    try:
        model = await client.models.async_get(name)
        version = await model.versions.async_get(version_id) if version_id else model.latest_version
    except ReplicateError as error:
        if error.status == 401:
            return _NoAnswer("HTTP 401", token_refused=True)
        if error.status in (403, 404):
            return _NotUsable("not found on Replicate, or this token has no access to it")
        return _NoAnswer(f"HTTP {error.status}")
    except httpx.HTTPError as error:
        return _NoAnswer(type(error).__name__)
    except ValueError as error:  # a body the client could not read as a model (pydantic's ValidationError)
        log.debug("Unreadable model description of %s", ref, exc_info=error)
        return _NoAnswer("an answer the bot could not read")
    if version is None:
        return _NotUsable("it has no version to run")
    return describe_schema(ref, model.description, version.openapi_schema)


def _table_infos(ref: str, configured: ConfiguredModels) -> list[ModelInfo]:
    """The fallback table's view of `ref`; a model it doesn't know is taken at its configured word."""
    profile = known_profile(ref)
    if profile is not None:
        return [describe_profile(ref, ModelKind.IMAGE if profile.is_image else ModelKind.TEXT, profile)]
    kinds = [kind for kind in (ModelKind.TEXT, ModelKind.IMAGE) if configured.default_for(kind) == ref]
    return [describe_profile(ref, kind) for kind in kinds or (ModelKind.TEXT, ModelKind.IMAGE)]


def _log_outcome(
    catalog: ModelCatalog, left_out: list[str], unanswered: list[_NoAnswer], results: dict[str, _LookupResult]
) -> None:
    if any(result.token_refused for result in unanswered):
        log.error(
            "Replicate refused REPLICATE_API_TOKEN (HTTP 401) when looking up the models: create a token at %s, "
            "set REPLICATE_API_TOKEN to it and restart the bot. Until then every command fails.",
            REPLICATE_TOKEN_PAGE,
        )
    elif unanswered:
        names = [ref for ref, result in results.items() if isinstance(result, _NoAnswer)]
        reasons = sorted({result.reason for result in unanswered})
        log.warning(
            "Replicate did not answer the look-up of %s (%s); assuming the built-in model table for them",
            ", ".join(names),
            ", ".join(reasons),
        )
    if left_out:
        log.warning("Models left out: %s", "; ".join(left_out))
    log.info(
        "Models: /ask %s; /imagine %s",
        ", ".join(catalog.refs(ModelKind.TEXT)) or "none",
        ", ".join(catalog.refs(ModelKind.IMAGE)) or "none",
    )
