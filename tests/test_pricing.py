"""The spend estimate: the built-in prices, the operator's, and the per-second fallback."""

from __future__ import annotations

from bot.pricing import PriceTable, format_usd
from bot.replies import RunInfo
from config.governance import parse_price

TABLE = PriceTable({"stability-ai/sdxl": parse_price("0.0023/s"), "acme/chat": parse_price("1/run")}, 0.001)


def test_flux_schnell_costs_three_tenths_of_a_cent_per_image() -> None:
    run = RunInfo("black-forest-labs/flux-schnell", "p1", predict_time_s=0.9, image_count=4)
    assert TABLE.estimate_micro_usd(run) == 12_000


def test_llama_is_priced_per_million_input_and_output_tokens() -> None:
    run = RunInfo("meta/meta-llama-3-8b-instruct", "p1", predict_time_s=2.0, input_tokens=1_000, output_tokens=2_000)
    assert TABLE.estimate_micro_usd(run) == 50 + 500


def test_the_operators_price_replaces_the_built_in_one_and_versions_share_it() -> None:
    run = RunInfo("Stability-AI/SDXL:" + "a" * 64, "p1", predict_time_s=10.0, image_count=1)
    assert TABLE.estimate_micro_usd(run) == 23_000


def test_a_model_without_a_price_counts_its_predict_time_at_the_default_rate() -> None:
    assert TABLE.estimate_micro_usd(RunInfo("someone/else", "p1", predict_time_s=3.5)) == 3_500


def test_missing_token_counts_fall_back_to_time_once_not_per_term() -> None:
    run = RunInfo("meta/meta-llama-3-8b-instruct", "p1", predict_time_s=2.0)
    assert TABLE.estimate_micro_usd(run) == 2_000


def test_a_per_run_price_needs_no_metrics() -> None:
    assert TABLE.estimate_micro_usd(RunInfo("acme/chat", "p1")) == 1_000_000


def test_amounts_show_cents_or_enough_digits_for_a_fraction_of_one() -> None:
    assert [format_usd(n) for n in (0, 3_000, 12_345_678, 550)] == ["$0.00", "$0.003", "$12.35", "$0.0006"]
