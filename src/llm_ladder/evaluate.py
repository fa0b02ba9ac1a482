"""The evaluation runner: one pipeline, one model, one split, every prediction stored.

The loop is: build messages -> generate a chunk -> parse -> score -> store the chunk in one
transaction. Chunks are a batch for local models and `concurrency` requests for servers.
A killed run resumes from what is stored (keyed by example id), so nothing is generated,
scored or billed twice. The summary is always recomputed from the stored rows.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from llm_ladder.costs import cost_per_1k
from llm_ladder.data import Example
from llm_ladder.judging import evaluation_cost
from llm_ladder.metrics import Metric, Score, unscored
from llm_ladder.models.base import ChatModel
from llm_ladder.rag.scoring import rag_scores, summarize_rag
from llm_ladder.rungs import Pipeline
from llm_ladder.stats import bootstrap_mean, counted_score, percentile, run_quality
from llm_ladder.store import Store
from llm_ladder.task import Price

Progress = Callable[[int], None]


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("llm-ladder", "torch", "transformers", "llama_cpp_python", "openai",
                "sentence-transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def evaluate(pipeline: Pipeline, model: ChatModel, examples: list[Example], metric: Metric,
             store: Store, run_id: str, progress: Progress | None = None,
             chunk_size: int = 8) -> None:
    """Generate, score and store every example not yet stored for `run_id`."""
    model = pipeline.model or model
    done = store.done_ids(run_id)
    pending = [e for e in examples if e.id not in done]
    if progress and done:
        progress(len(examples) - len(pending))
    prepared = [(e, *pipeline.prepare(e.input)) for e in pending]
    prepared.sort(key=lambda p: sum(len(m.get("content") or "") for m in p[1]))
    for start in range(0, len(prepared), chunk_size):
        chunk = prepared[start : start + chunk_size]
        t0 = time.perf_counter()
        looped = pipeline.loop(model, [e for e, _, _ in chunk]) if pipeline.loop else None
        if looped is not None:  # multi-turn (tool use): its own batched turns, whole trace
            gens = [r.generation for r in looped]
            chunk = [(e, r.messages, c) for (e, _, c), r in zip(chunk, looped, strict=True)]
        else:
            gens = model.generate([m for _, m, _ in chunk], pipeline.params)
        share = (time.perf_counter() - t0) / len(chunk)
        rows = []
        answers = [("" if gen.error is not None else looped[k].output if looped is not None
                    else pipeline.parse(gen.text)) for k, gen in enumerate(gens)]
        scores = score_chunk(metric, [e for e, _, _ in chunk], gens, answers)
        for k, ((ex, msgs, context), gen) in enumerate(zip(chunk, gens, strict=True)):
            answer = answers[k]
            score: Score = scores[k]
            if looped is not None:
                score.details["trace"] = looped[k].trace
            if context is not None:
                score.details["retrieved"] = context
                if gen.error is None:
                    score.details["rag"] = rag_scores(ex, answer, context)
            rows.append({
                "example_id": ex.id, "input": ex.input, "messages": msgs,
                "raw_output": gen.text, "output": answer, "reference": ex.output,
                "score": score.value, "score_reason": score.reason,
                "details": {**score.details, "finish_reason": gen.finish_reason,
                            "compute_s": share},
                "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out,
                "latency_s": gen.latency_s, "error": gen.error,
            })
        store.add_predictions(run_id, rows)
        if progress:
            progress(len(chunk))


def score_chunk(metric: Metric, examples: list[Example], gens: list[Any],
                answers: list[str]) -> list[Score]:
    """A chunk's scores: a failed generation is unscored with its error; a metric with
    `score_many` (the judge, llm_ladder.judging) gets the inputs too, in one batch."""
    ok = [k for k, g in enumerate(gens) if g.error is None]
    many = getattr(metric, "score_many", None)
    got = (many([(examples[k].input, answers[k], examples[k].output) for k in ok])
           if many is not None and ok else
           [metric.score(answers[k], examples[k].output) for k in ok])
    out = [unscored(f"generation failed: {g.error}") for g in gens]
    for k, s in zip(ok, got, strict=True):
        out[k] = s
    return out


def summarize(preds: list[dict[str, Any]], metric: Metric, price: Price | None,
              price_source: str = "", bar: float | None = None) -> dict[str, Any]:
    """Quality with its 95% interval (exact binomial for 0/1 scores, BCa otherwise; with `bar`
    also the one-sided p-value of "quality ≤ bar"), failed generations counted as wrong,
    unscored counts and share, tokens, latency and cost."""
    quality, counts = run_quality(preds, metric, bar)
    scored = [p for p in preds if p["score"] is not None]
    reasons = Counter(p["score_reason"] for p in preds if counted_score(p, metric) is None)
    interval = quality.interval
    n = len(preds)
    lat = [p["latency_s"] for p in preds if not p["error"]]
    mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)  # noqa: E731
    tin = mean([p["tokens_in"] for p in preds])
    tout = mean([p["tokens_out"] for p in preds])
    compute = mean([(p["details"] or {}).get("compute_s", p["latency_s"]) for p in preds])
    return {
        "metric": metric.name,
        "quality": {**interval.as_dict(), "method": interval.method, "p_bar": quality.p_bar,
                    "bar": bar},
        "n": n,
        "scored": counts["counted"],
        "failed": counts["failed"],
        "unscored": counts["unscored"],
        "unscored_share": counts["unscored"] / n if n else 0.0,
        "unscored_reasons": dict(reasons),
        "errors": sum(1 for p in preds if p["error"]),
        "tokens_in_mean": tin,
        "tokens_out_mean": tout,
        "latency_p50_s": percentile(lat, 50),
        "latency_p95_s": percentile(lat, 95),
        "compute_s_per_request": compute,
        "cost_per_1k_usd": cost_per_1k(price, tin, tout, compute),
        "price_source": price_source,
        "rag": summarize_rag(preds),
        "sub_scores": sub_scores(scored),
        **({"evaluation_cost": evaluation_cost(preds)}
           if "judge" in getattr(metric, "needs", ()) else {}),
    }


def sub_scores(preds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Means with 95% intervals of the sub-scores metrics put in details["sub"] (e.g. the
    tool_call metric's name / args / irrelevance), each over the predictions that have it."""
    values: dict[str, list[float]] = {}
    for p in preds:
        for key, v in ((p["details"] or {}).get("sub") or {}).items():
            if isinstance(v, int | float):
                values.setdefault(key, []).append(float(v))
    return {k: bootstrap_mean(v).as_dict() for k, v in sorted(values.items())}
