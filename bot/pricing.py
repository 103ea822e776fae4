"""What a finished prediction probably cost, from its metrics and a price table (Replicate has no price API).

Replicate bills official models per output (tokens, images) and other models by compute time
(https://replicate.com/docs/topics/billing, https://replicate.com/pricing). The table below ships prices for the
default models; `MODEL_PRICES` adds or replaces entries; a model without a price counts its `predict_time` at
`DEFAULT_PRICE_PER_SECOND`. Amounts are kept in whole micro-dollars, so counters add up exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from bot.replies import RunInfo
from config.governance import Price, PriceUnit, parse_price

MICRO_USD_PER_USD = 1_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000

BUILT_IN_PRICES: Mapping[str, Price] = MappingProxyType({
    # https://replicate.com/black-forest-labs/flux-schnell: $3 per thousand output images.
    "black-forest-labs/flux-schnell": parse_price("0.003/image"),
    # https://replicate.com/meta/meta-llama-3-8b-instruct: $0.05 per million input tokens, $0.25 per million output.
    "meta/meta-llama-3-8b-instruct": parse_price("0.05/Mtok-in+0.25/Mtok-out"),
    # A community model, billed by time on its GPU (Nvidia L40S, https://replicate.com/pricing).
    "stability-ai/sdxl": parse_price("0.000975/s"),
})


class PriceTable:
    """The built-in prices under the operator's, and the fallback per second for every other model."""

    def __init__(self, overrides: Mapping[str, Price], default_per_second_usd: float) -> None:
        self._prices = {**BUILT_IN_PRICES, **{model.lower(): price for model, price in overrides.items()}}
        self._default = Price(((default_per_second_usd, PriceUnit.SECOND),))

    def price_of(self, model: str) -> Price:
        """The price of `owner/name[:version]` (versions share their model's price)."""
        return self._prices.get(model.split(":", 1)[0].lower(), self._default)

    def estimate_micro_usd(self, run: RunInfo) -> int:
        """The run's estimated cost. A term whose metric is missing counts by time at the default price
        instead (a model whose metrics lack token counts), so nothing that ran is ever counted as free."""
        total, unmetered = 0.0, False
        for usd, unit in self.price_of(run.model).terms:
            amount = _amount(run, unit)
            if amount is None:
                unmetered = True
            else:
                total += usd * amount
        if unmetered:
            total += (run.predict_time_s or 0.0) * self._default.terms[0][0]
        return round(total * MICRO_USD_PER_USD)


def _amount(run: RunInfo, unit: PriceUnit) -> float | None:
    """How many of `unit` the run used, or None when its metrics don't say."""
    match unit:
        case PriceUnit.SECOND:
            return run.predict_time_s
        case PriceUnit.IMAGE:
            return None if run.image_count is None else float(run.image_count)
        case PriceUnit.RUN:
            return 1.0
        case PriceUnit.MILLION_INPUT_TOKENS:
            return None if run.input_tokens is None else run.input_tokens / TOKENS_PER_PRICE_UNIT
        case PriceUnit.MILLION_OUTPUT_TOKENS:
            return None if run.output_tokens is None else run.output_tokens / TOKENS_PER_PRICE_UNIT


def format_usd(micro_usd: int) -> str:
    """`$0.0042`, `$1.23`: cents when there are any, else enough digits to show a fraction of one."""
    usd = micro_usd / MICRO_USD_PER_USD
    return f"${usd:,.2f}" if usd >= 1 or micro_usd == 0 else f"${usd:.4f}".rstrip("0").rstrip(".")
