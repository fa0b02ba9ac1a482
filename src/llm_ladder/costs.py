"""Cost per 1k requests from measured tokens or measured time.

Hosted models: tokens in/out times the price per 1M tokens. Self-hosted models: the measured
compute seconds per request times the machine's dollars per hour. Prices are assumptions the
user sets in `task.toml` under `[prices.<model key>]`; the defaults below are placeholders to
override, and reports say which price was used. One-time costs (training, indexing) and
break-even come with the fine-tuning and decision work.
"""

from __future__ import annotations

from llm_ladder.task import Price, Task

# Placeholder prices, used only when the task sets none: a small CPU cloud VM for local
# backends; hosted servers have no default (cost is then reported as unknown).
DEFAULT_PRICES: dict[str, Price] = {
    "local": Price(usd_per_hour=0.10),
    "llamacpp": Price(usd_per_hour=0.10),
}


def price_for(task: Task, model_key: str) -> tuple[Price | None, str]:
    if model_key in task.prices:
        return task.prices[model_key], f"task.toml [prices.{model_key}]"
    backend = task.model(model_key).backend
    if backend in DEFAULT_PRICES:
        return DEFAULT_PRICES[backend], f"default placeholder for backend {backend!r}"
    return None, "no price set"


def cost_per_1k(price: Price | None, tokens_in: float, tokens_out: float,
                compute_s: float) -> float | None:
    """Dollars per 1000 requests given mean tokens and mean compute seconds per request."""
    if price is None:
        return None
    if price.input_per_1m is not None or price.output_per_1m is not None:
        per = (tokens_in * (price.input_per_1m or 0) + tokens_out * (price.output_per_1m or 0))
        return 1000 * per / 1e6
    if price.usd_per_hour is not None:
        return 1000 * compute_s * price.usd_per_hour / 3600
    return None
