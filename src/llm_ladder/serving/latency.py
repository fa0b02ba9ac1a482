"""Served latency: a rung's per-request latency measured the way `ladder serve` serves it.

`ladder run` evaluates a rung in chunks (a padded batch of `batch_size` for local models, so
every prediction's stored latency is its whole batch's wall time): good for throughput, not
what one user waits. After a rung's test predictions are stored, `probe_rung` sends
`[serve] latency_probe` of the test inputs through the serving engine (serving/app.Engine:
the same `pipeline.prepare` -> model -> guards path, dynamic batching and token streaming as
`ladder serve`):

- **alone**: one request at a time, an idle server. Streamed token by token when the server
  would stream it (the model streams and no guard needs the whole answer), which also gives
  the time to first token;
- **concurrent**: `[serve] latency_concurrency` clients, each sending its next request as soon
  as its previous one is answered (a closed loop), not streamed, so the engine batches what
  arrives together as it does for real clients. This is the figure the latency budget is
  judged on (decide.budget_latency).

The answers are thrown away: nothing is scored, stored as a prediction or logged as a
request, so a killed run that resumes simply probes again. Test inputs are used (nothing is
learned or chosen from them here) so the served figures describe the same inputs as the
batch figures. Skipped: HTTP (the engine is called in-process: no socket, JSON or auth;
docs/benchmarks.md, "Serving", times that path), open-loop (Poisson) arrivals, and the
multi-turn tool rungs (`ladder serve` does not serve tools).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from llm_ladder.models.base import ChatModel, Messages
from llm_ladder.rungs.base import Pipeline
from llm_ladder.serving.app import Engine, Result, Served
from llm_ladder.serving.guard import load_schema
from llm_ladder.stats import percentile
from llm_ladder.task import ServeConfig, Task


@dataclass
class Timing:
    """One probe request: how long the client waited, its first token (streamed), status."""

    seconds: float
    ttft_s: float | None
    status: str  # the server's status: ok, refused, invalid_output, error, timeout, busy, ...


def send(engine: Engine, request: Messages, max_tokens: int, timeout_s: float,
         stream: bool) -> Timing:
    """One request through the engine as `ladder serve`'s handler sends it; the wait ends when
    the client would have its whole answer (the last streamed delta, or the response)."""
    first: list[float] = []
    end: list[Any] = []
    ended = threading.Event()

    def sink(item: tuple[str, Any]) -> None:  # called on the engine's threads
        kind, value = item
        if kind == "delta" and not first:
            first.append(time.perf_counter())
        elif kind == "end":
            end.append(value)
            ended.set()

    t0 = time.perf_counter()
    job = engine.submit(request, max_tokens, sink if stream else None)
    if job is None:
        return Timing(time.perf_counter() - t0, None, "busy")
    try:
        res = job.future.result(timeout=timeout_s)
        if isinstance(res, Result) and res.status == "streaming":
            if not ended.wait(max(timeout_s - (time.perf_counter() - t0), 0.0)):
                return Timing(time.perf_counter() - t0, None, "timeout")
            res = end[0]
    except FutureTimeout:  # the server answers 504 after serve.timeout_s
        with job.lock:
            job.timed_out = not job.done
        return Timing(time.perf_counter() - t0, None, "timeout")
    except Exception:  # the worker failed: the server answers 500
        return Timing(time.perf_counter() - t0, None, "error")
    seconds = time.perf_counter() - t0
    status = res.status if isinstance(res, Result) else "error"
    return Timing(seconds, (first[0] - t0) if first else None, status)


def stats(timings: list[Timing]) -> dict[str, Any]:
    """p50/p95 of what clients waited: answered requests and timeouts (a timed-out client
    waited that long too); other failures are counted, not timed."""
    waited = [t.seconds for t in timings if t.status in ("ok", "refused", "timeout")]
    ttft = [t.ttft_s for t in timings if t.ttft_s is not None]
    failed = Counter(t.status for t in timings if t.status not in ("ok", "refused"))
    return {"n": len(timings), "p50_s": percentile(waited, 50), "p95_s": percentile(waited, 95),
            "mean_s": sum(waited) / len(waited) if waited else None,
            "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
            "errors": sum(failed.values()), "error_kinds": dict(failed)}


def probe(served: Served, cfg: ServeConfig, inputs: list[str | Messages],
          concurrency: int) -> dict[str, Any]:
    """Send `inputs` one at a time, then from `concurrency` clients at once, through a fresh
    engine that logs nothing; the two phases' latencies (summary["served_latency"])."""
    engine = Engine(served, cfg.model_copy(update={"log_requests": False}))
    stream = not engine.whole_answer
    max_tokens = min(served.pipeline.params.max_tokens, cfg.max_output_tokens)
    requests = [[{"role": "user", "content": i}] if isinstance(i, str) else list(i)
                for i in inputs]
    engine.start()
    try:
        # one untimed request first: what a server pays once (lazy imports, first-call setup)
        # is not what its users wait
        send(engine, requests[0], max_tokens, cfg.timeout_s, stream)
        alone = [send(engine, r, max_tokens, cfg.timeout_s, stream) for r in requests]
        if concurrency > 1:
            with ThreadPoolExecutor(concurrency, thread_name_prefix="ladder-probe") as pool:
                together = list(pool.map(
                    lambda r: send(engine, r, max_tokens, cfg.timeout_s, False), requests))
        else:
            together = alone
    finally:
        engine.stop()
    return {"k": len(requests), "concurrency": concurrency, "inputs": "test", "warmup": 1,
            "streamed_alone": stream,
            **({} if stream else {"not_streamed": engine.whole_answer}),
            "alone": stats(alone), "concurrent": stats(together)}


def probe_rung(task: Task, pipeline: Pipeline, model: ChatModel, rung: str, model_key: str,
               inputs: list[str | Messages], run_id: str | None = None) -> dict[str, Any]:
    """The served-latency probe of one evaluated rung, or {"skipped": why}."""
    cfg = task.serve
    k = min(cfg.latency_probe, len(inputs))
    if k == 0:
        return {"skipped": "serve.latency_probe = 0" if cfg.latency_probe == 0
                else "no test inputs"}
    if pipeline.loop is not None:
        return {"skipped": f"the {rung} rung calls tools, which `ladder serve` does not serve"}
    schema = (load_schema(task.path(cfg.output_schema)) if cfg.output_schema else None)
    served = Served(pipeline, pipeline.model or model, task.name, rung, model_key, run_id,
                    schema=schema)
    note = {}
    if cfg.strip_images and importlib.util.find_spec("markdown_it") is None:
        # the server itself needs the `serve` extra; the probe times the rest of its path
        cfg = cfg.model_copy(update={"strip_images": False})
        note = {"note": "measured without serve.strip_images: markdown-it-py is not installed "
                        "(pip install 'llm-ladder[serve]')"}
    return {**probe(served, cfg, inputs[:k], cfg.latency_concurrency), **note}


def served(summary: Mapping[str, Any], phase: str = "concurrent") -> dict[str, Any]:
    """A summary's served-latency figures of `phase` ("alone" or "concurrent"); {} for a run
    without a probe (older runs, or the probe skipped)."""
    return (summary.get("served_latency") or {}).get(phase) or {}
