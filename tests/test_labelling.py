"""The labelling queue of `ladder ui` (llm_ladder.labels, report/server.py), used the way a
person uses it: a real `ladder ui` process, a real headless Chromium (Playwright), a real
SQLite run store with request logs, and a judged task whose `[judge] labels` file has answers
still without a human score. Then where the labels go: the `labels` table, `ladder logs
export` (human outputs) and `ladder judge-check` (human scores). The write surface is attacked
with a plain HTTP client (no token, no CSRF, foreign Origin, DNS-rebound Host, oversized
body, script in an input) and must write nothing. The judge block of the HTML report is
checked on a judged climb with the scripted judge."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from helpers import LADDER, free_port, ladder
from test_report import ARGS, ARTIFACTS, CHROMIUM

from llm_ladder import synth
from llm_ladder.errors import LadderError
from llm_ladder.judge_check import judge_check, load_labels
from llm_ladder.ladder import climb
from llm_ladder.report import collect
from llm_ladder.report.html import render_report
from llm_ladder.report.server import make_server
from llm_ladder.store import Store
from llm_ladder.task import load_task
from llm_ladder.testing import write_task

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
HUMANS = [5, 4, 3, 5, 2, 4]


def make_judged_task(root: Path) -> Path:
    """40 questions answered "good-i" by the scripted rung; a scripted judge that agrees
    with the 12 human-scored answers; 3 answers in the labels file still without a score;
    3 served answers in the request logs (one input carries a script); 2 questions written
    by `ladder synth` awaiting review (one source chunk carries a script)."""
    rows = [{"id": f"q{i:02d}", "input": f"question number {i}?", "output": f"reference {i}"}
            for i in range(40)]
    judge = {f"good-{i}": "Score: 5\nReason: matches" for i in range(40)}
    judge |= {f"lab-answer-{k}": f"Score: {HUMANS[k % 6]}\nReason: as a human"
              for k in range(12)}
    judge |= {f"pending-answer-{k}": "Score: 2\nReason: weak" for k in range(3)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "judge.json").write_text(json.dumps(judge), encoding="utf-8")
    labels = [{"id": f"lab{k}", "input": f"labelled question {k}?", "output": f"lab ref {k}",
               "meta": {"answer": f"lab-answer-{k}", "human_score": HUMANS[k % 6]}}
              for k in range(12)]
    labels += [{"id": f"pend{k}", "input": EVIL if k == 2 else f"pending question {k}?",
                "output": f"pend ref {k}",
                "meta": {"answer": f"pending-answer-{k}", "human_score": None}}
               for k in range(3)]
    (root / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels),
                                       encoding="utf-8")
    extra = ('[judge]\nmodel = "judge"\nagreement_floor = 0.5\nlabels = "labels.jsonl"\n'
             '[rungs]\ninclude = ["zero-shot"]\n[models.judge]\nbackend = "scripted"\n'
             f'path = "{(root / "judge.json").as_posix()}"\n')
    write_task(root, rows, metric="judge", answers={r["input"]: f"good-{i}"
                                                    for i, r in enumerate(rows)}, extra=extra)
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    now = time.time()
    store.add_request_logs([
        {"id": f"log{i}", "created": now + i, "task": task.name, "rung": "rag",
         "model": "default", "run_id": None, "status": "ok", "http_status": 200,
         "request": [{"role": "user", "content": (EVIL if i == 0 else f"served question {i}")}],
         "messages": None, "response": f"served answer {i}", "raw_output": f"served answer {i}",
         "citations": [{"n": 1, "source": f"docs/page{i}.md", "doc_id": "d", "id": f"c{i}"}],
         "tokens_in": 3, "tokens_out": 3, "latency_s": 0.1, "error": None, "details": None}
        for i in range(3)])
    store.close()
    synthetic = [{"id": f"syn{k}", "input": f"generated question {k}?",
                  "reference": f"generated answer {k}", "sources": [f"chunk{k}"],
                  "doc_ids": [f"docs/gen{k}.md"], "synthetic": True, "status": "pending",
                  "model": "default", "chunk_text": EVIL if k else "the source passage",
                  "created": "2026-01-01T00:00:00+00:00"} for k in range(2)]
    (task.state_dir / "synthetic.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in synthetic), encoding="utf-8")
    return root


def labels_of(root: Path) -> dict:
    store = Store(load_task(root).state_dir / "runs.db")
    try:
        return store.labels()
    finally:
        store.close()


# ---- a person labels in the browser --------------------------------------------------------

@pytest.fixture
def ui(tmp_path) -> Iterator[tuple[Path, str, str]]:
    """(task folder, base URL, token) of a running `ladder ui --user tester`."""
    root = make_judged_task(tmp_path / "t")
    port = free_port()
    proc = subprocess.Popen([*LADDER, "ui", "--task", str(root), "--port", str(port),
                             "--user", "tester"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"COLUMNS": "400"})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/label\?token=([\w-]+)", line)
        assert m, line
        yield root, m.group(1), m.group(2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_person_labels_served_answers_and_judge_answers(ui, tmp_path):
    from playwright.sync_api import sync_playwright

    root, base, token = ui
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda err: problems.append(str(err)))
        page.goto(f"{base}/label")  # without the token: forbidden
        assert "labelling needs the token" in page.content()
        page.goto(f"{base}/label?token={token}")
        assert page.url == f"{base}/label"  # the token left the address bar
        assert page.locator("#queues").inner_text().count("0 of 3 labelled") == 2
        page.click("#queues a[href='/label/requests/log0']")
        # the served answer, its input (a script, shown as text) and its citations
        assert EVIL in page.locator("#input").inner_text()
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#answer").inner_text() == "served answer 0"
        assert "docs/page0.md" in page.locator("#citations").inner_text()
        page.keyboard.press("a")  # accept
        page.wait_for_url(f"{base}/label/requests/log1")
        assert page.locator("#progress").inner_text() == "1 of 3 labelled"
        page.fill("#output", "the corrected answer")  # a correction typed, Ctrl+Enter saves
        page.press("#output", "Control+Enter")
        page.wait_for_url(f"{base}/label/requests/log2")
        assert page.locator("#progress").inner_text() == "2 of 3 labelled"
        page.keyboard.press("s")  # skip: nothing written
        page.wait_for_url(f"{base}/label/requests/log0")
        assert "accepted by tester" in page.locator("#current").inner_text()
        page.goto(f"{base}/label/judge-labels")
        page.click("text=pend0")
        assert page.locator("#reference").inner_text() == "pend ref 0"
        page.click("#score button.score[value='2']")  # a score clicked
        page.wait_for_url(f"{base}/label/judge-labels/pend1")
        page.keyboard.press("4")  # and one typed
        page.wait_for_url(f"{base}/label/judge-labels/pend2")
        assert page.locator("#progress").inner_text() == "2 of 3 labelled"
        page.goto(f"{base}/label")  # generated questions: one edited and promoted, one rejected
        page.click("#queues a[href='/label/synthetic/syn0']")
        assert "the source passage" in page.locator("#citations").inner_text()
        page.fill("#q-input", "an edited generated question?")
        page.press("#q-input", "Control+Enter")
        page.wait_for_url(f"{base}/label/synthetic/syn1")
        assert EVIL in page.locator("#citations").inner_text()
        page.keyboard.press("r")
        page.wait_for_url(f"{base}/label/synthetic")
        assert page.locator("#progress").inner_text() == "2 of 2 labelled"
        page.screenshot(path=str(ARTIFACTS / "ui-label.png"))
        browser.close()
    assert problems == []
    reviewed = {r["id"]: (r["status"], r["input"], r["reviews"][-1]["who"])
                for r in synth.load_rows(root)}
    assert reviewed == {"syn0": ("promoted", "an edited generated question?", "tester"),
                        "syn1": ("rejected", "generated question 1?", "tester")}
    got = {k: (v["accepted"], v["output"], v["score"], v["who"])
           for k, v in labels_of(root).items()}
    assert got == {"requests/log0": (True, None, None, "tester"),
                   "requests/log1": (False, "the corrected answer", None, "tester"),
                   "judge-labels/pend0": (None, None, 2.0, "tester"),
                   "judge-labels/pend1": (None, None, 4.0, "tester")}
    # `ladder logs export`: the accepted and the corrected answers are human outputs
    out = tmp_path / "served.jsonl"
    doc = json.loads(ladder("logs", "export", "--task", root, "--out", out, "--json").stdout)
    assert doc == {"rows": 3, "human_outputs": 2, "out": str(out)}
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["log0"]["human_output"] == rows["log0"]["output"] == "served answer 0"
    assert rows["log1"]["human_output"] == rows["log1"]["output"] == "the corrected answer"
    assert rows["log1"]["meta"]["served_output"] == "served answer 1"
    assert rows["log1"]["meta"]["labelled_by"] == "tester"
    assert not rows["log1"]["meta"]["provisional"] and rows["log2"]["meta"]["provisional"]
    assert "human_output" not in rows["log2"]
    only = tmp_path / "human.jsonl"
    ladder("logs", "export", "--task", root, "--out", only, "--only-labelled")
    assert [json.loads(x)["id"] for x in only.read_text().splitlines()] == ["log0", "log1"]
    # `ladder judge-check`: the two scores given in the browser are human scores now
    task = load_task(root)
    scored = {e.id: e.meta["human_score"] for e in load_labels(task)}
    assert scored["pend0"] == 2.0 and scored["pend1"] == 4.0 and "pend2" not in scored
    assert len(scored) == 14
    check = judge_check(task)
    assert check["n"] == 14
    assert {i["id"]: i["human"] for i in check["items"]}["pend1"] == 4.0


# ---- the write surface under attack --------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Path, int, str]]:
    """(task folder, port, token) of an in-process web view on an ephemeral port."""
    root = make_judged_task(tmp_path_factory.mktemp("attack") / "t")
    server = make_server(root, "127.0.0.1", 0, user="tester")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, server.server_port, server.token
    finally:
        server.shutdown()
        server.server_close()


def call(port: int, method: str, path: str, body: str | bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body,
                 headers={"Host": f"127.0.0.1:{port}"} | (headers or {}))
    r = conn.getresponse()
    out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    conn.close()
    return out


def session(port: int, token: str) -> tuple[str, str]:
    """(cookie, CSRF token) of a fresh session, as a browser gets them."""
    status, headers, _ = call(port, "GET", f"/label?token={token}")
    assert status == 303 and headers["location"] == "/label"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    cookie = cookie.split(";")[0]
    _, _, page = call(port, "GET", "/label/requests/log1", headers={"Cookie": cookie})
    m = re.search(r'name=csrf value="([^"]+)"', page)
    assert m
    return cookie, m.group(1)


def test_posts_without_token_csrf_or_own_origin_are_refused_and_write_nothing(served):
    root, port, token = served
    cookie, csrf = session(port, token)
    own = f"http://127.0.0.1:{port}"
    form = "application/x-www-form-urlencoded"
    good = {"Cookie": cookie, "Origin": own, "Content-Type": form}
    body = urlencode({"csrf": csrf, "action": "accept"})
    refused = [
        ({"Origin": own, "Content-Type": form}, body, 403),              # no session cookie
        ({"Cookie": "ladder_ui_session=forged", "Origin": own, "Content-Type": form},
         body, 403),                                                      # unknown session
        (good, urlencode({"action": "accept"}), 403),                      # no CSRF token
        (good, urlencode({"csrf": csrf[:-2] + "xx", "action": "accept"}), 403),  # wrong one
        (good | {"Origin": "http://evil.example"}, body, 403),             # foreign Origin
        (good | {"Origin": "null"}, body, 403),
        ({"Cookie": cookie, "Content-Type": form}, body, 403),             # no Origin at all
        (good | {"Host": "evil.example"}, body, 403),                      # DNS rebinding
        (good | {"Host": f"evil.example:{port}",
                 "Origin": f"http://evil.example:{port}"}, body, 403),
        (good | {"Content-Type": "text/plain"}, body, 403),
        (good, urlencode({"csrf": csrf, "action": "correct", "output": "x" * 70_000}), 413),
    ]
    for headers, data, want in refused:
        status, _, page = call(port, "POST", "/label/requests/log1", data, headers)
        assert status == want, (headers, status)
        assert "<script>" not in page
    assert labels_of(root) == {}
    # the same session, with its CSRF token and its own Origin, may write
    status, headers, _ = call(port, "POST", "/label/requests/log1", body, good)
    assert status == 303 and headers["location"] == "/label/requests/log2"
    assert labels_of(root)["requests/log1"]["accepted"] is True
    # a bad value is refused with the reason on the item page, nothing written
    status, headers, _ = call(port, "POST", "/label/judge-labels/pend0",
                              urlencode({"csrf": csrf, "score": "9"}), good)
    assert status == 303 and headers["location"] == "/label/judge-labels/pend0"
    page = call(port, "GET", headers["location"], headers={"Cookie": cookie})[2]
    assert "a score must be a number from 1 to 5" in page.split("<p id=error")[1]
    assert "<p id=error" not in call(port, "GET", headers["location"],
                                     headers={"Cookie": cookie})[2]  # shown once
    assert "judge-labels/pend0" not in labels_of(root)


def test_labelling_pages_need_the_token_and_escape_what_they_show(served):
    root, port, token = served
    assert call(port, "GET", "/label")[0] == 403
    assert call(port, "GET", "/label/requests/log0")[0] == 403
    assert call(port, "GET", "/label?token=wrong")[0] == 403
    assert call(port, "GET", f"/label?token={token}", headers={"Host": "evil.example"})[0] == 403
    cookie, _ = session(port, token)
    status, _, page = call(port, "GET", "/label/requests/log0", headers={"Cookie": cookie})
    assert status == 200
    assert "&lt;script&gt;window.__pwned" in page and "<script>window.__pwned" not in page
    assert "onerror=\"window" not in page
    page = call(port, "GET", "/label/judge-labels/pend2", headers={"Cookie": cookie})[2]
    assert "&lt;script&gt;window.__pwned" in page and "<script>window.__pwned" not in page
    status, _, page = call(port, "GET", "/label/%3Cscript%3E/x", headers={"Cookie": cookie})
    assert status == 404 and "<script>" not in page.split("</style>")[1].split("<script>")[0]
    with pytest.raises(LadderError, match="refusing to bind"):
        make_server(root, "0.0.0.0", 0)
    proc = ladder("ui", "--task", root, "--host", "0.0.0.0", "--port", free_port(), check=False)
    assert proc.returncode != 0 and "--allow-remote" in proc.stderr


def test_a_later_label_of_an_item_replaces_the_fields_it_sets(tmp_path):
    store = Store(tmp_path / "runs.db")
    store.put_label("requests", "r1", "ann", output="fixed answer")
    store.put_label("requests", "r1", "bob", score=4)
    lab = store.labels("requests")["r1"]
    assert (lab["accepted"], lab["output"], lab["score"], lab["who"]) == \
        (False, "fixed answer", 4.0, "bob")
    store.put_label("requests", "r1", "ann", accepted=True)  # accepting drops the correction
    lab = store.labels("requests")["r1"]
    assert (lab["accepted"], lab["output"], lab["score"], lab["who"]) == (True, None, 4.0, "ann")
    assert len(store.labels()) == 1
    with pytest.raises(ValueError):
        store.put_label("requests", "r1", "ann")
    store.close()


# ---- the judge in the HTML report ----------------------------------------------------------

def test_the_report_shows_the_judge_its_agreement_and_the_ppi_interval(tmp_path):
    root = make_judged_task(tmp_path / "t")
    res = climb(root, report=False)
    s = res.rungs[0]
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    try:
        html = render_report(collect(task, store, s["run_id"]))
    finally:
        store.close()
    trust = html.split("<p id=judge-trust>")[1].split("</p>")[0]
    assert "Judge model judge (scripted" in trust
    assert "weighted kappa" in trust and "on 12 human-scored answers" in trust
    row = html.split("<tr class=judge-row>")[1].split("</tr>")[0]
    ppi = s["judge"]["ppi"]
    assert f"{ppi['value']:.3f}" in row and f"[{ppi['low']:.3f}, {ppi['high']:.3f}]" in row
    assert f"{s['quality']['value']:.3f}" in row and "trusted" in row
