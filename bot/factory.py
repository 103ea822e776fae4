"""Assembles one command core from settings: client, admission queue, runner. Owned by the process."""

from __future__ import annotations

from dataclasses import dataclass

from bot.admission import AdmissionQueue
from bot.core import CommandCore, CoreConfig
from bot.parsing import InputLimits
from bot.replicate_client import ReplicateClients
from bot.runner import PredictionRunner, RunPolicy
from config.settings import Settings

# Each prediction holds at most a stream or wait plus a download or cancel at once.
CONNECTIONS_PER_PREDICTION = 2
SPARE_CONNECTIONS = 10


@dataclass
class CoreResources:
    core: CommandCore
    clients: ReplicateClients

    async def aclose(self) -> None:
        await self.clients.aclose()


def create_core(settings: Settings, policy: RunPolicy | None = None) -> CoreResources:
    """A core wired to Replicate with the settings' token, URL, timeout, concurrency cap and queue bound."""
    clients = ReplicateClients.build(
        settings.require_replicate_token(),
        settings.replicate_base_url,
        max_connections=settings.max_concurrent_predictions * CONNECTIONS_PER_PREDICTION + SPARE_CONNECTIONS,
    )
    policy = policy or RunPolicy(timeout_s=settings.prediction_timeout_s)
    runner = PredictionRunner(clients, policy)
    config = CoreConfig(
        ask_model=settings.ask_model,
        imagine_model=settings.imagine_model,
        limits=InputLimits(max_prompt_chars=settings.max_prompt_chars, allowed_models=settings.allowed_models),
    )
    admission = AdmissionQueue(settings.max_concurrent_predictions, max_queued=settings.max_queued)
    core = CommandCore(runner, admission, config)
    return CoreResources(core=core, clients=clients)
