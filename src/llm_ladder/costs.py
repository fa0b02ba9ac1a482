"""Cost per 1k requests from measured tokens or measured time.

Hosted models: tokens in/out times the price per 1M tokens. Self-hosted models: the measured
compute seconds per request times the machine's dollars per hour. Prices are assumptions the
user sets in `task.toml` under `[prices.<model key>]`; the defaults below are placeholders to
override, and reports say which price was used.

Total cost of ownership per rung (`ownership`): the per-request cost, the one-time cost
(training or teacher labelling from a fine-tuning run's `one_time`; corpus indexing for RAG,
whose time is not recorded yet and is reported as not measured), the recurring one-time cost
(re-training on every base-model upgrade, `budget.base_model_upgrades_per_year`) and the
tokens per request (a prompt that grows makes every request dearer). Training time is priced
at the model's `training_usd_per_hour` (default: its serving `usd_per_hour`). `break_even`
says which of two rungs costs less in the long run and after how many requests (and days at
`budget.requests_per_day`), in either direction; `break_even_interval` bootstraps that point
from the measured per-request costs. Skipped: storage, engineering time, idle capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def training_price(price: Price | None) -> tuple[float | None, str]:
    """$/hour of the training machine: `training_usd_per_hour`, else the serving price."""
    if price is None:
        return None, ""
    if price.training_usd_per_hour is not None:
        return price.training_usd_per_hour, "training_usd_per_hour"
    if price.usd_per_hour is not None:
        return price.usd_per_hour, "the serving usd_per_hour; set training_usd_per_hour"
    return None, ""


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
            hourly, which = training_price(price)
            if hourly is not None:
                o.one_time_usd = o.one_time_s * hourly / 3600
                o.notes.append(f"one-time cost = {minutes(o.one_time_s)} × "
                               f"${hourly:g}/hour ({source}, {which})")
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
    """When the rung that is dearer up front catches up through cheaper requests.

    `cheap` comes first in the ladder, `other` later. `overtaker` is the rung that costs less in
    the long run and `requests` the number of requests after which it does (0: from the first
    request); `requests` is None when the rung with the larger one-time cost never repays it.
    Returns None when a cost is unknown.
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
                           "requests": None, "days": None, "overtaker": None}
    if extra <= 0 and saving >= 0:  # other is no dearer either way
        doc["requests"], doc["overtaker"] = 0.0, other.rung if (extra, saving) != (0, 0) \
            else None
    elif extra >= 0 and saving <= 0:  # cheap is no dearer either way
        doc["overtaker"] = cheap.rung
        doc["requests"] = 0.0 if extra == 0 else None
    else:  # one is dearer up front, the other per request: they cross
        doc["requests"] = abs(extra) / abs(saving)
        doc["overtaker"] = other.rung if extra > 0 else cheap.rung
    if doc["requests"] is not None and requests_per_day:
        doc["days"] = doc["requests"] / requests_per_day
    return doc


def break_even_interval(cheap: Ownership, other: Ownership, costs_cheap: Sequence[float],
                        costs_other: Sequence[float], requests_per_day: float | None,
                        resamples: int = 2000, level: float = 0.95,
                        seed: int = 0) -> dict[str, Any]:
    """Percentile interval of the break-even point from resampling each run's measured
    per-request costs: {"requests_low", "requests_high"}; a bound is None when, within the
    interval, the crossing may not happen (the per-request saving may be ≤ 0)."""
    be = break_even(cheap, other, requests_per_day)
    if be is None or be["requests"] in (None, 0.0) or len(costs_cheap) == 0 \
            or len(costs_other) == 0:
        return {"requests_low": None, "requests_high": None}
    rng = np.random.default_rng(seed)
    ca, cb = np.asarray(costs_cheap, float), np.asarray(costs_other, float)
    mean_a = ca[rng.integers(0, ca.size, (resamples, ca.size))].mean(axis=1)
    mean_b = cb[rng.integers(0, cb.size, (resamples, cb.size))].mean(axis=1)
    upkeep_a = (cheap.per_request_with_upkeep(requests_per_day) or 0) - (cheap.per_request_usd
                                                                          or 0)
    upkeep_b = (other.per_request_with_upkeep(requests_per_day) or 0) - (other.per_request_usd
                                                                          or 0)
    saving = (mean_a + upkeep_a) - (mean_b + upkeep_b)
    extra = be["extra_one_time_usd"]
    sign = 1.0 if extra > 0 else -1.0  # the crossing needs saving with the same sign
    with np.errstate(divide="ignore", invalid="ignore"):
        req = np.where(sign * saving > 0, abs(extra) / np.abs(saving), np.inf)
    a = (1 - level) / 2
    lo, hi = np.quantile(req, a, method="lower"), np.quantile(req, 1 - a, method="higher")
    return {"requests_low": float(lo) if np.isfinite(lo) else None,
            "requests_high": float(hi) if np.isfinite(hi) else None}


def break_even_sentence(be: dict[str, Any] | None) -> str:
    """Which rung costs less in the long run, and from when; both directions."""
    if be is None or be.get("unknown"):
        names = f"{be['other']} against {be['cheap']}: " if be else ""
        return f"{names}break-even unknown (a one-time or per-request cost is not measured)"
    cheap, other = be["cheap"], be["other"]
    over = be.get("overtaker")
    if be["requests"] is None:
        return (f"{other} never repays its extra one-time cost against {cheap} "
                "(its requests are not cheaper)")
    if over is None:
        return f"{other} and {cheap} cost the same"
    if be["requests"] == 0:
        return f"{over} costs less than {other if over == cheap else cheap} from the first request"
    under = other if over == cheap else cheap
    when = f"after {be['requests']:,.0f} requests"
    lo, hi = be.get("requests_low"), be.get("requests_high")
    if "requests_low" in be:
        when += (f" (95% interval {lo:,.0f} to " if lo is not None else " (95% interval up to ")
        when += (f"{hi:,.0f})" if hi is not None else "possibly never)")
    if be["days"] is not None:
        when += f", {be['days']:,.1f} days at the budget's request rate"
    return (f"{over} repays its extra one-time cost against {under} through cheaper requests "
            f"{when}")
