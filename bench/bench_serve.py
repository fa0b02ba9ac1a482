"""Load test of `ladder serve` on loopback, and its overhead over calling the pipeline
in-process, side by side in the same run.

Workload: construction-FAQ questions (CC BY 4.0) through the zero-shot pipeline of
examples/construction-faq on the embedded SmolLM2-135M (transformers, CPU), greedy,
`--max-tokens` new tokens, request logging on (SQLite in a temporary folder).

1. Overhead: one client, `--pairs` rounds, each the same question in-process (prepare +
   model.generate + parse), over HTTP (httpx keep-alive) and over HTTP streamed, in rotating
   order; p50 of each, the relative difference of the first two (target: under 5%), and the
   streamed request's time to first token (first content delta) next to its total.
2. Load with streaming clients (`--load stream,plain` adds a second test with plain ones,
   outside `make bench`'s 30 minutes: the streamed test covers the target): `--clients`
   concurrent httpx clients until both `--seconds` have passed and `--min-requests` have
   been answered (bounded by 10x `--seconds`: the run always stops by itself, and says when
   the cap cut it short); requests/s, total latency p50/p95/p99 of the 200s and, streamed,
   time to first token p50/p95/p99; 429s (the deliberate overload answer) counted apart, and
   errors: any other status, an error event inside a stream, a stream without [DONE] AND any
   client exception (timeout, reset), so a failing server cannot look fast; RSS of this
   process (server + model) before and after; the mean batch size from the request log.
   Streamed requests are batched together like plain ones (each ends with its own answer).
3. The server's own path with a model that answers instantly (HTTP, validation, queue,
   hand-off to the worker, SQLite commit, JSON): 200 sequential requests, p50/p95.

    python bench/bench_serve.py [--clients 8] [--seconds 30] [--min-requests 500]
                                [--pairs 20] [--max-tokens 8] [--load stream] [--quick]

Results: bench/results/serve.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]

from benchlib import machine, publish  # noqa: E402  (bench/ is on sys.path when run)
from faq_prompts import faq_prompts  # noqa: E402


@contextlib.contextmanager
def serving(app):
    """uvicorn on 127.0.0.1 in a thread; yields the base URL."""
    import socket

    import httpx
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(f"{base}/health", timeout=2)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(120)


class Instant:
    """A ChatModel that answers at once, to time the server's own path."""

    name, context_length, batch_size = "instant", 8192, 8

    def __init__(self, real):
        self.real = real

    def generate(self, requests, params):
        from llm_ladder.models.base import Generation

        return [Generation("bygglov", 10, 2, 0.0) for _ in requests]

    def count_tokens(self, messages):
        return self.real.count_tokens(messages)

    def describe(self):
        return {"backend": "instant"}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def streamed(client, url: str, body: dict) -> tuple[int, float | None, str]:
    """One streamed request: (status, seconds to the first content delta, the text). A
    stream with an error event or without [DONE] is status -1 (an error)."""
    t0 = time.perf_counter()
    first, parts, done, failed = None, [], False, False
    with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, None, ""
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                ev = json.loads(line[6:])
                failed = failed or "error" in ev
                for ch in ev.get("choices") or []:
                    if ch["delta"].get("content"):
                        first = first if first is not None else time.perf_counter() - t0
                        parts.append(ch["delta"]["content"])
    return (200 if done and not failed else -1), first, "".join(parts)


def load(url: str, body, questions: list[str], args, store, stream: bool,
         rss_start: float) -> dict:
    """`--clients` concurrent clients, streamed or plain, until `--seconds` have passed and
    `--min-requests` have come back (capped at 10x `--seconds`)."""
    import httpx

    logged = len(store.request_logs())
    rss_before = rss_mib()
    start = time.perf_counter()
    deadline, cap = start + args.seconds, start + 10 * args.seconds
    lat: list[float] = []
    ttft: list[float] = []
    codes: dict[int, int] = {}
    exceptions: dict[str, int] = {}
    lock = threading.Lock()

    def more() -> bool:
        now = time.perf_counter()
        with lock:
            done = sum(codes.values()) + sum(exceptions.values())
        return now < cap and (now < deadline or done < args.min_requests)

    def worker(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            i = k
            while more():
                q = questions[i % len(questions)]
                i += args.clients
                t0 = time.perf_counter()
                first = None
                try:
                    if stream:
                        code, first, _ = streamed(c, url, body(q, True))
                    else:
                        code = c.post(url, json=body(q)).status_code
                except (httpx.HTTPError, json.JSONDecodeError) as ex:  # an error, counted
                    with lock:
                        name = type(ex).__name__
                        exceptions[name] = exceptions.get(name, 0) + 1
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == 200:
                        lat.append(dt)
                        if first is not None:
                            ttft.append(first)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    total = sum(codes.values()) + sum(exceptions.values())
    rows = store.request_logs()[logged:]
    batches = [r["details"]["batch"] for r in rows if r["status"] == "ok"]
    out = {"clients": args.clients, "stream": stream, "wall_s": wall, "requests": total,
           "requests_ok": ok, "capped": total < args.min_requests,
           "requests_per_s": ok / wall, "p50_ms": pct(lat, 50) * 1000,
           "p95_ms": pct(lat, 95) * 1000, "p99_ms": pct(lat, 99) * 1000,
           "status_counts": codes, "rejected_429": codes.get(429, 0),
           "client_exceptions": exceptions,
           "errors": sum(v for k, v in codes.items() if k not in (200, 429))
           + sum(exceptions.values()),
           "rss_mib_start": rss_start, "rss_mib_before_load": rss_before,
           "rss_mib_after_load": rss_mib(), "logged_rows": len(rows),
           "mean_batch": sum(batches) / len(batches) if batches else None}
    if stream:
        out.update(ttft_p50_ms=pct(ttft, 50) * 1000, ttft_p95_ms=pct(ttft, 95) * 1000,
                   ttft_p99_ms=pct(ttft, 99) * 1000,
                   server_ttft_p50_ms=pct([r["details"]["ttft_s"] for r in rows
                                           if r["details"].get("ttft_s") is not None],
                                          50) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--min-requests", type=int, default=500)
    ap.add_argument("--load", default="stream",
                    help="load phases to run, comma-separated: stream, plain")
    ap.add_argument("--quick", action="store_true",
                    help="2 clients, 5 s, 20 requests per load phase, 4 rounds; no docs")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds, args.min_requests, args.pairs = 2, 5.0, 20, 4
    m = machine()

    import httpx
    import torch

    from llm_ladder.models.base import GenParams
    from llm_ladder.models.local import TransformersModel
    from llm_ladder.serving.app import Served, create_app
    from llm_ladder.serving.build import build_served
    from llm_ladder.store import Store
    from llm_ladder.task import ServeConfig, load_task

    task = load_task(ROOT / "examples" / "construction-faq")
    model = TransformersModel(batch_size=16)
    served = build_served(task, "zero-shot", model=model)
    pipeline = served.pipeline
    questions = [p[0]["content"] for p in faq_prompts(200)]
    body = lambda q, stream=False: {"messages": [{"role": "user", "content": q}],  # noqa: E731
                                    "max_tokens": args.max_tokens, "stream": stream}
    params = GenParams(max_tokens=args.max_tokens, temperature=pipeline.params.temperature)

    # The baseline runs on one worker thread, as the server's model does: on this machine
    # generation in the main thread measured several times slower than in a second thread
    # under load (OpenMP), which would flatter the server.
    pool = ThreadPoolExecutor(max_workers=1)

    def in_process(q: str) -> str:
        def call() -> str:
            msgs, _ = pipeline.prepare(q)
            (gen,) = model.generate([msgs], params)
            return pipeline.parse(gen.text)

        return pool.submit(call).result()

    cfg = ServeConfig(max_output_tokens=args.max_tokens, max_concurrency=args.clients,
                      max_queue=args.clients)
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "runs.db")
    rss_start = rss_mib()
    result: dict = {"torch_threads": torch.get_num_threads(),
                    "args": {k: str(v) for k, v in vars(args).items()}}
    with serving(create_app(served, cfg, store)) as base, httpx.Client(timeout=600) as client:
        url = f"{base}/v1/chat/completions"
        in_process(questions[0])
        client.post(url, json=body(questions[0]))  # warm-up both paths
        streamed(client, url, body(questions[0], True))
        local, http, live, ttft, same, same_stream = [], [], [], [], 0, 0
        kinds = ("local", "http", "stream")
        for i in range(args.pairs):
            q = questions[1 + i % 50]
            for kind in kinds[i % 3:] + kinds[: i % 3]:  # rotating order
                t0 = time.perf_counter()
                if kind == "local":
                    a = in_process(q)
                    local.append(time.perf_counter() - t0)
                elif kind == "http":
                    r = client.post(url, json=body(q))
                    http.append(time.perf_counter() - t0)
                    b = r.json()["choices"][0]["message"]["content"]
                else:
                    code, first, text = streamed(client, url, body(q, True))
                    live.append(time.perf_counter() - t0)
                    if code != 200 or first is None:
                        raise SystemExit(f"a streamed request alone failed: {code}")
                    ttft.append(first)
            same += a == b
            same_stream += a == text
        p50l, p50h = pct(local, 50), pct(http, 50)
        paired = pct([h - lo for h, lo in zip(http, local, strict=True)], 50)
        result["overhead"] = {"pairs": args.pairs, "in_process_p50_ms": p50l * 1000,
                              "http_p50_ms": p50h * 1000,
                              "overhead_ms": (p50h - p50l) * 1000,
                              "overhead_pct": 100 * (p50h - p50l) / p50l,
                              "paired_median_diff_ms": paired * 1000,
                              "same_answers": same,
                              "stream_ttft_p50_ms": pct(ttft, 50) * 1000,
                              "stream_total_p50_ms": pct(live, 50) * 1000,
                              "same_answers_streamed": same_stream}
        result["load"] = {}
        for mode in [x.strip() for x in args.load.split(",") if x.strip()]:
            if mode not in ("stream", "plain"):
                raise SystemExit(f"--load: unknown phase {mode!r} (stream, plain)")
            result["load"][mode] = load(url, body, questions, args, store, mode == "stream",
                                        rss_start)

    # the server's own cost, free of model noise: the same path with a model that answers
    # at once (HTTP, validation, queue, worker hand-off, SQLite commit, JSON)
    instant = Served(pipeline, Instant(model), task.name, "zero-shot")
    with serving(create_app(instant, cfg, Store(tmp / "instant.db"))) as base, \
            httpx.Client(timeout=60) as client:
        url = f"{base}/v1/chat/completions"
        client.post(url, json=body(questions[0]))
        path = []
        for i in range(200):
            t0 = time.perf_counter()
            client.post(url, json=body(questions[i % len(questions)])).raise_for_status()
            path.append(time.perf_counter() - t0)
    result["server_path_instant_model"] = {"requests": len(path),
                                           "p50_ms": pct(path, 50) * 1000,
                                           "p95_ms": pct(path, 95) * 1000}
    print(json.dumps(result, indent=2))
    o, sp = result["overhead"], result["server_path_instant_model"]
    print(f"\noverhead at p50: {o['overhead_ms']:.1f} ms ({o['overhead_pct']:+.1f}%) over "
          f"{o['in_process_p50_ms']:.0f} ms in-process (paired median "
          f"{o['paired_median_diff_ms']:.1f} ms); streamed alone: first token "
          f"{o['stream_ttft_p50_ms']:.0f} ms of {o['stream_total_p50_ms']:.0f} ms; server path "
          f"with an instant model p50 {sp['p50_ms']:.1f} ms", file=sys.stderr)
    for mode, ld in result["load"].items():
        first = (f", first token p50/p95/p99 {ld['ttft_p50_ms']:.0f}/{ld['ttft_p95_ms']:.0f}/"
                 f"{ld['ttft_p99_ms']:.0f} ms" if ld["stream"] else "")
        print(f"load ({mode}): {ld['requests']} requests, {ld['requests_per_s']:.2f} req/s with "
              f"{args.clients} clients, total p50/p95/p99 {ld['p50_ms']:.0f}/{ld['p95_ms']:.0f}/"
              f"{ld['p99_ms']:.0f} ms{first}, mean batch {ld['mean_batch'] or 0:.1f}, errors "
              f"{ld['errors']}, 429s {ld['rejected_429']}, RSS {ld['rss_mib_before_load']:.0f} "
              f"-> {ld['rss_mib_after_load']:.0f} MiB", file=sys.stderr)
    lines = [
        f"Zero-shot pipeline of examples/construction-faq on the embedded SmolLM2-135M, "
        f"≤ {args.max_tokens} new tokens, request logging on. Time to first token (TTFT) is "
        "the client's time to the first content delta of a streamed request.",
        "",
        "| what | figure |",
        "| --- | --- |",
        f"| one request alone over HTTP, p50 | {o['http_p50_ms']:.0f} ms |",
        f"| the same in-process, p50 | {o['in_process_p50_ms']:.0f} ms |",
        f"| serving overhead at p50 ({o['pairs']} interleaved rounds) | "
        f"{o['overhead_ms']:.1f} ms ({o['overhead_pct']:+.1f}%), same answers "
        f"{o['same_answers']}/{o['pairs']} |",
        f"| one request alone, streamed: TTFT / total, p50 | {o['stream_ttft_p50_ms']:.0f} / "
        f"{o['stream_total_p50_ms']:.0f} ms, same answers {o['same_answers_streamed']}/"
        f"{o['pairs']} |",
        f"| server path with an instant model, p50 / p95 | {sp['p50_ms']:.1f} / "
        f"{sp['p95_ms']:.1f} ms |",
    ]
    for ld in result["load"].values():
        what = "streamed" if ld["stream"] else "plain"
        lines += [
            f"| load, {what}: {args.clients} clients, {ld['requests']} requests in "
            f"{ld['wall_s']:.0f} s{' (capped at 10x --seconds)' if ld['capped'] else ''} | "
            f"{ld['requests_per_s']:.2f} answered/s, total p50/p95/p99 {ld['p50_ms']:.0f}/"
            f"{ld['p95_ms']:.0f}/{ld['p99_ms']:.0f} ms, mean batch {ld['mean_batch'] or 0:.1f} |",
        ]
        if ld["stream"]:
            lines.append(f"| load, streamed: TTFT p50/p95/p99 | {ld['ttft_p50_ms']:.0f}/"
                         f"{ld['ttft_p95_ms']:.0f}/{ld['ttft_p99_ms']:.0f} ms |")
        lines += [
            f"| load, {what}: errors (other statuses, broken streams, client exceptions) / "
            f"429s | {ld['errors']} / {ld['rejected_429']} |",
            f"| load, {what}: RSS before -> after | {ld['rss_mib_before_load']:.0f} -> "
            f"{ld['rss_mib_after_load']:.0f} MiB |",
        ]
    md = "\n".join(lines)
    publish("serve", result, md, m, write_docs=not args.quick)


if __name__ == "__main__":
    main()
