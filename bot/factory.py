"""Assembles one command core from settings: client, admission queue, runner, models. Owned by the process."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import certifi
import replicate

from bot.admission import AdmissionQueue
from bot.buttons import AgainPayloads
from bot.command_log import CommandObserver
from bot.conversation_memory import ConversationMemory
from bot.core import CommandCore, CoreConfig
from bot.downloads import OutputFetcher, OutputHosts
from bot.governance import Governor
from bot.model_catalog import ConfiguredModels, ModelCatalog, load_catalog
from bot.parsing import InputLimits
from bot.pricing import PriceTable
from bot.replicate_client import build_replicate_client, close_replicate_client
from bot.runner import PredictionRunner, RunPolicy
from bot.state import open_store
from bot.state.retention import purge_expired
from bot.state.store import StateStore
from config.settings import Settings

# Each prediction holds at most a stream or wait plus a download or cancel at once.
CONNECTIONS_PER_PREDICTION = 2
SPARE_CONNECTIONS = 10
# At close, the last commands' bookkeeping (store writes; no Replicate call once shutting down) gets this long.
SETTLEMENTS_AT_CLOSE_S = 0.25


@dataclass
class CoreResources:
    core: CommandCore
    client: replicate.Client
    outputs: OutputFetcher
    configured_models: ConfiguredModels
    settings: Settings
    store: StateStore | None = None

    async def open_state(self) -> None:
        """Open the state store (`STATE_URL`) and govern every command from now on; raises `StateStoreError`."""
        if self.store is None:
            self.store = await open_store(self.settings.governance.state_url)
            await purge_expired(self.store)
            governance = self.settings.governance
            self.core.use_state(
                Governor(self.store, governance, running_slot_s=self.settings.prediction_timeout_s),
                ConversationMemory(self.store, governance.retention_days),
                AgainPayloads(self.store, governance.retention_days),
            )
            self.core.share_state(self.store)

    async def load_models(self) -> None:
        """Learn each configured model's kind and inputs from Replicate (bounded in time; never raises for it)."""
        self.core.use_models(await load_catalog(self.client, self.configured_models))

    async def aclose(self) -> None:
        await self.core.finish_settlements(SETTLEMENTS_AT_CLOSE_S)
        await close_replicate_client(self.client)
        await self.outputs.aclose()
        if self.store is not None:
            await self.store.aclose()


def create_core(
    settings: Settings, policy: RunPolicy | None = None, observer: CommandObserver | None = None
) -> CoreResources:
    """A core wired to Replicate with the settings' token, URL, timeout, concurrency cap and queue bound;
    `observer` hears of every command's end and every refusal (the service's metrics).

    Until `load_models()` runs, the core knows the models from the fallback table only.
    """
    # Loading a CA bundle takes ~15 ms: once, for every client.
    ssl_context = ssl.create_default_context(cafile=str(settings.ca_bundle or certifi.where()))
    client = build_replicate_client(
        settings.require_replicate_token(),
        settings.replicate_base_url,
        max_connections=settings.max_concurrent_predictions * CONNECTIONS_PER_PREDICTION + SPARE_CONNECTIONS,
        ssl_context=ssl_context,
    )
    outputs = OutputFetcher(OutputHosts(settings.replicate_output_hosts), ssl_context=ssl_context)
    policy = policy or RunPolicy(timeout_s=settings.prediction_timeout_s)
    runner = PredictionRunner(client, outputs, policy)
    config = CoreConfig(
        limits=InputLimits(max_prompt_chars=settings.max_prompt_chars, allowed_models=settings.allowed_models),
        prices=PriceTable(settings.governance.model_prices, settings.governance.default_price_per_second),
        system_prompt=settings.system_prompt,
        context_max_chars=settings.context_max_chars,
        retention_days=settings.governance.retention_days,
    )
    configured = ConfiguredModels(settings.ask_model, settings.imagine_model, settings.allowed_models)
    admission = AdmissionQueue(settings.max_concurrent_predictions, max_queued=settings.max_queued)
    core = CommandCore(runner, admission, config, ModelCatalog.from_table(configured), observer)
    return CoreResources(core=core, client=client, outputs=outputs, configured_models=configured, settings=settings)
