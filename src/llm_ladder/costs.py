"""Cost per 1k requests from measured tokens or measured time.

Hosted models: tokens in/out times the price per 1M tokens. Self-hosted models: the measured
compute seconds per request times the machine's dollars per hour. Prices are assumptions the
user sets in `task.toml` under `[prices.<model key>]`; the defaults below are placeholders to
override, and reports say which price was used.

Total cost of ownership per rung (`ownership`): the per-request cost, the one-time cost
(training or teacher labelling from a fine-tuning run's `one_time`; corpus indexing for RAG,
whose time is not recorded yet and is reported as not measured), the recurring one-time cost
(re-training on every base-model upgrade, `budget.base_model_upgrades_per_year`) and the
tokens per request (a prompt that grows makes every request dearer). `break_even` says after
how many requests (and days at `budget.requests_per_day`) a rung with a cheaper request repays
its larger one-time cost. Skipped: storage, engineering time, and hosting idle capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


# ---- total cost of ownership ------------------------------------------------------------

@dataclass
class Ownership:
    """What running one rung costs over time. `None` means not known (never a guess)."""

    rung: str
    per_request_usd: float | None
    one_time_usd: float | None = None
    one_time_s: float | None = None
    one_time_what: str = ""
    recurring_per_year_usd: float | None = None
    recurring_what: str = ""
    tokens_per_request: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def per_request_with_upkeep(self, requests_per_day: float | None) -> float | None:
        """Per-request cost with the yearly recurring cost spread over the requests."""
        if self.per_request_usd is None:
            return None
        if self.recurring_per_year_usd and requests_per_day:
            return self.per_request_usd + self.recurring_per_year_usd / (365 * requests_per_day)
        return self.per_request_usd

    def cumulative_usd(self, requests: float, requests_per_day: float | None) -> float | None:
        """One-time cost plus `requests` requests (with upkeep at `requests_per_day`)."""
        per = self.per_request_with_upkeep(requests_per_day)
        if per is None:
            return None
        return (self.one_time_usd or 0.0) + per * requests


def minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ownership(task: Task, summary: dict[str, Any], config: dict[str, Any] | None = None,
              model_key: str | None = None) -> Ownership:
    """Cost of ownership of one stored run (its summary and config)."""
    per_1k = summary.get("cost_per_1k_usd")
    o = Ownership(summary.get("rung", "?"), None if per_1k is None else per_1k / 1000,
                  tokens_per_request=(summary.get("tokens_in_mean") or 0.0)
                  + (summary.get("tokens_out_mean") or 0.0))
    one = summary.get("one_time")
    if one:
        o.one_time_s = one.get("seconds")
        o.one_time_usd = one.get("usd")
        o.one_time_what = one.get("what") or "one-time work"
        if o.one_time_usd is None and o.one_time_s is not None and model_key:
            price, source = price_for(task, model_key)
            if price is not None and price.usd_per_hour is not None:
                o.one_time_usd = o.one_time_s * price.usd_per_hour / 3600
                o.notes.append(f"one-time cost = {minutes(o.one_time_s)} × "
                               f"${price.usd_per_hour:g}/hour ({source})")
        upgrades = task.budget.base_model_upgrades_per_year
        if upgrades is None:
            o.recurring_what = ("re-training on every base-model upgrade (set "
                                "budget.base_model_upgrades_per_year to count it)")
        else:
            o.recurring_what = f"re-training {upgrades:g}× a year on base-model upgrades"
            if o.one_time_usd is not None:
                o.recurring_per_year_usd = upgrades * o.one_time_usd
    index = (config or {}).get("index")
    if index and summary.get("rag"):  # a rung that retrieved (every rung's config names it)
        chunks = index.get("count")
        o.one_time_what = (o.one_time_what + "; " if o.one_time_what else "") + (
            f"indexing the corpus ({chunks} chunks; time not measured: `ladder index` does "
            "not record it yet)")
        o.recurring_what = (o.recurring_what + "; " if o.recurring_what else "") + (
            "re-indexing changed documents (only changed chunks are embedded)")
    return o


def break_even(cheap: Ownership, other: Ownership,
               requests_per_day: float | None) -> dict[str, Any] | None:
    """When `other` (larger one-time cost) repays it against `cheap` through cheaper requests.

    Returns None when a cost is unknown; `requests` is None when it never does.
    """
    pa = cheap.per_request_with_upkeep(requests_per_day)
    pb = other.per_request_with_upkeep(requests_per_day)
    if pa is None or pb is None or (cheap.one_time_usd is None and cheap.one_time_what) \
            or (other.one_time_usd is None and other.one_time_what):
        return None
    extra = (other.one_time_usd or 0.0) - (cheap.one_time_usd or 0.0)
    saving = pa - pb
    doc: dict[str, Any] = {"cheap": cheap.rung, "other": other.rung,
                           "extra_one_time_usd": extra, "saving_per_request_usd": saving,
                           "requests": None, "days": None}
    if extra <= 0 and saving >= 0:
        doc["requests"] = 0.0
    elif saving > 0:
        doc["requests"] = extra / saving
    if doc["requests"] is not None and requests_per_day:
        doc["days"] = doc["requests"] / requests_per_day
    return doc


def break_even_sentence(be: dict[str, Any] | None) -> str:
    if be is None or be.get("unknown"):
        names = f"{be['other']} against {be['cheap']}: " if be else ""
        return f"{names}break-even unknown (a one-time or per-request cost is not measured)"
    if be["requests"] is None:
        return (f"{be['other']} never repays its one-time cost against {be['cheap']} "
                "(its requests are not cheaper)")
    when = f"after {be['requests']:,.0f} requests"
    if be["days"] is not None:
        when += f" ({be['days']:,.1f} days at the budget's request rate)"
    return f"{be['other']} repays its one-time cost against {be['cheap']} {when}"
