"""The stored optimized prompt is what `ladder serve` and `ladder deploy` use, on real data.

The real embedded model (SmolLM2-135M) runs the optimized-prompt rung on a small real task
(construction-FAQ rows, a tiny search budget, a few test rows, few tokens); then the real
server (uvicorn on 127.0.0.1) answers a request with exactly the stored prompt's messages
(the request log's messages and the messages the model received), without a new search (the
search function is counted), and both deploy bundles carry the stored prompt verbatim: the
vLLM bundle's prompt.json, and the `ladder serve` bundle's task, which serves it again
without searching. A run whose stored prompt is gone is refused with a clear error.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import write_task
from helpers import free_port

from llm_ladder import optimize
from llm_ladder.errors import LadderError
from llm_ladder.ladder import run_rung
from llm_ladder.models.base import Generation, GenParams
from llm_ladder.rungs import optimize as optimize_rung
from llm_ladder.serving.app import create_app
from llm_ladder.serving.build import build_served
from llm_ladder.serving.deploy import write_bundle
from llm_ladder.session import open_session
from llm_ladder.store import Store
from llm_ladder.task import ServeConfig, load_task

OPTIMIZE = ("[optimize]\nbudget_calls = 8\nmax_dev = 2\nk = [0, 1]\ndemo_sets = 1\n"
            "finalists = 1\n")
QUESTION = "May I build a small shed next to the property line without a permit?"


class Recording:
    """The real model, with every request it receives kept (a spy, not a stand-in)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.requests: list[list[dict[str, Any]]] = []

    def generate(self, requests: list[Any], params: GenParams) -> list[Generation]:
        self.requests += [json.loads(json.dumps(r)) for r in requests]
        return self.inner.generate(requests, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """uvicorn in a thread (the real server, real sockets); yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
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


@pytest.fixture
def searches(monkeypatch) -> list[int]:
    """Counts the prompt searches started from here on (each still runs for real)."""
    count: list[int] = []
    original = optimize.search

    def counted(*args: Any, **kw: Any) -> optimize.SearchResult:
        count.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(optimize, "search", counted)
    return count


def test_serve_and_deploy_use_the_stored_prompt(tmp_path: Path, smol, searches) -> None:
    root = write_task(tmp_path / "t", n_rows=30, max_test=2, extra=OPTIMIZE)
    toml = root / "task.toml"  # few tokens: this test is about which messages are sent
    toml.write_text(toml.read_text().replace("max_tokens = 12", "max_tokens = 4"))
    task = load_task(root)
    session = open_session(task, rungs=["optimized-prompt"], load_model=False)
    model = Recording(smol)
    run = run_rung(session.prep, "optimized-prompt", "default", model, session.store)
    # search (at most 8 calls) + 2 test rows (write_task turns the served-latency probe off)
    assert len(searches) == 1 and 0 < len(model.requests) <= 8 + 2
    settings = run["config"]["settings"]
    doc = optimize.read(task.state_dir, settings["prompt_id"])
    assert doc is not None and doc["calls"] <= 8
    prompt = optimize.as_prompt(doc)
    expected = optimize.renderer(prompt, optimize_rung.nearest)(
        [{"role": "user", "content": QUESTION}])
    assert any(prompt.instruction in str(m["content"]) for m in expected)

    # (a) `ladder serve` of the run: exactly the stored prompt's messages, no new search
    model.requests.clear()
    store = Store(tmp_path / "serve.db")
    served = build_served(task, "optimized-prompt", run=session.store.get_run(run["id"]),
                          model=model)
    assert served.warnings == [] and served.pipeline.settings["prompt_id"] == prompt.id
    with serving(create_app(served, ServeConfig(max_output_tokens=4), store)) as base:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=300, json={
            "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert len(searches) == 1  # served without searching again
    logged = store.request_logs()
    assert [row["status"] for row in logged] == ["ok"]
    assert logged[0]["messages"] == expected  # what the log says was sent ...
    assert model.requests == [expected]  # ... is what the model received

    # (b) the deploy bundles carry the stored prompt verbatim
    vllm = write_bundle(task, session.store, run["id"], tmp_path / "vllm", "vllm")
    bundled = json.loads((Path(vllm["out"]) / "prompt.json").read_text(encoding="utf-8"))
    assert bundled["optimized_prompt"] == {k: v for k, v in doc.items() if k != "trace"}
    assert bundled["messages"] == optimize.renderer(prompt, optimize_rung.nearest)("{{input}}")
    write_bundle(task, session.store, run["id"], tmp_path / "lb", "ladder")
    copy = load_task(tmp_path / "lb" / "task")
    again = build_served(copy, "optimized-prompt", model=model)
    assert again.pipeline.settings["prompt_id"] == prompt.id and len(searches) == 1
    assert again.pipeline.prepare([{"role": "user", "content": QUESTION}])[0] == expected

    # a run whose stored prompt is gone is refused, never searched again
    shutil.rmtree(optimize.prompts_dir(task.state_dir) / prompt.id)
    with pytest.raises(LadderError, match="not stored"):
        build_served(task, "optimized-prompt", run=session.store.get_run(run["id"]),
                     model=model)
    assert len(searches) == 1
