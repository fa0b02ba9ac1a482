"""The HTML report, `ladder report`, `ladder compare` and `ladder ui`, checked the way a person
sees them: rendered by a real headless Chromium (Debian's `chromium`, driven by Playwright),
on runs stored in a real SQLite store. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import LADDER, free_port, ladder
from test_decide import answers, make_task, store_run

from llm_ladder.audit import Audit, Suspect, save_audit
from llm_ladder.decide import baselines
from llm_ladder.errors import LadderError
from llm_ladder.report import collect, compare_runs, write_report
from llm_ladder.report.markdown import render_markdown
from llm_ladder.store import Store
from llm_ladder.task import load_task

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">|x'


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (make install-dev does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: problems.append(f"request: {r.url}")
            if not r.url.startswith(("file:", "data:", url.split("/report")[0])) else None)
    page.goto(url)
    return page, problems


@pytest.fixture
def ladder_dir(tmp_path):
    """A stored ladder: zero-shot fails, few-shot-nearest meets the bar, lora is not
    significantly better; one output carries a script, one example is unscored."""
    root = make_task(tmp_path / "t", budget="requests_per_day = 500")
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    zero_out = answers(30, set(range(20)), bad="I cannot say")
    zero_out[3] = EVIL
    store_run(store, task, "zero-shot", zero_out, latency=0.05)
    store_run(store, task, "few-shot-nearest", answers(30, set()), latency=0.2)
    store_run(store, task, "lora", answers(30, {7}), latency=0.1,
              one_time={"seconds": 300.0, "usd": 0.25, "what": "LoRA training"})
    store.close()
    return root


def test_report_renders_offline_in_chromium(ladder_dir, browser):
    task = load_task(ladder_dir)
    html_path, md_path = write_report(task, Store(task.state_dir / "runs.db"), "L1",
                                      ARTIFACTS / "report")
    html = html_path.read_text()
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned" in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    page, problems = open_page(browser, html_path.as_uri())
    rows = page.locator("#ladder-table tr.rung-row")
    assert rows.count() == 3
    assert rows.nth(1).inner_text().startswith("few-shot-nearest ✔")
    assert page.locator("svg circle.point").count() == 6  # 3 rungs × 2 scatter charts
    assert page.locator("svg polyline.pareto").count() >= 1
    assert page.locator("#break-even svg line.cost-line").count() == 3
    # $0.25 of training; requests 0.1 s cheaper on a $0.10/hour machine
    assert ("lora repays its extra one-time cost against few-shot-nearest through cheaper "
            "requests after 90,000 requests, 180.0 days"
            ) in page.locator("#break-even").inner_text()
    rec = page.locator("#recommendation").inner_text()
    assert "Ship few-shot-nearest on model default." in rec
    assert "lora reaches 0.967" in rec and "not shown better (McNemar one-sided p=" in rec
    assert "5 min of LoRA training" in rec
    assert "not run in this ladder: system-prompt, few-shot-random, chain-of-thought" in rec
    # the untrusted output is shown as text and never runs
    assert page.evaluate("window.__pwned") is None
    assert EVIL in page.locator("pre.output").all_inner_texts()
    # filters: one rung, then its incorrect examples only
    assert page.locator(".ex:visible").count() == 30
    page.select_option("#f-rung", "zero-shot")
    assert page.locator(".cell:visible").count() == 30
    assert page.locator('.cell:visible[data-rung="zero-shot"]').count() == 30
    page.select_option("#f-status", "incorrect")
    assert page.locator(".ex:visible").count() == 20
    assert page.locator("#f-count").inner_text() == "20 example(s) shown"
    page.select_option("#f-rung", "few-shot-nearest")
    assert page.locator(".ex:visible").count() == 0
    page.select_option("#f-rung", "all")
    page.select_option("#f-status", "all")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=False)
    assert problems == []
    md = md_path.read_text()
    assert "| few-shot-nearest | default | 1.000 [0.884, 1.000] | 30 |" in md  # exact interval
    assert "**Recommendation:** Ship few-shot-nearest" in md


def test_report_draws_the_baseline_rows_passed_from_the_climb(ladder_dir, browser):
    """Label metric: the majority-class and uniform rows the climb computed are drawn under the
    rungs, styled as baselines, with their exact interval and the paired test the recommended
    rung passed against the majority row (here the train split's majority is "no")."""
    task = load_task(ladder_dir)
    refs = {f"e{i:03d}": "yes" for i in range(30)}
    rows = baselines(["no"] * 7 + ["yes"] * 3, refs, "accuracy", ["yes", "no"])
    html_path, md_path = write_report(task, Store(task.state_dir / "runs.db"), "L1",
                                      ARTIFACTS / "report-baselines", baselines=rows)
    page, problems = open_page(browser, html_path.as_uri())
    assert page.locator("#ladder-table tr.rung-row").count() == 3
    base = page.locator("#ladder-table tr.baseline-row")
    assert base.count() == 2
    majority = page.locator('tr.baseline-row[data-baseline="majority"]').inner_text()
    assert majority.startswith("baseline: majority class (no)")
    assert "0.000 [0.000, 0.116]" in majority  # 0 of 30: exact Clopper–Pearson
    # few-shot-nearest (30/30) against the majority row (0/30): McNemar on 30 discordant pairs
    assert "-1.000 [" in majority and f"McNemar p={0.5 ** 30:.3g}" in majority
    assert "few-shot-nearest better, one-sided" in majority
    assert "baseline: uniform random label" in base.nth(1).inner_text()
    assert page.locator("tr.baseline-row td").first.evaluate(
        "c => getComputedStyle(c).fontStyle") == "italic"
    assert problems == []
    assert "| *baseline: majority class (no)* | — | 0.000 [0.000, 0.116] | 30 |" in \
        md_path.read_text()


def test_markdown_neutralises_pipes_and_newlines(ladder_dir):
    task = load_task(ladder_dir)
    data = collect(task, Store(task.state_dir / "runs.db"), "L1")
    data["summaries"][0]["model"] = "a|b\nc"
    md = render_markdown(data)
    assert "| a\\|b c |" in md


def test_report_compare_cli_and_errors(ladder_dir, tmp_path):
    ids = {r["rung"]: r["id"] for r in Store(ladder_dir / ".ladder" / "runs.db").list_runs()}
    out = tmp_path / "rep"
    human = ladder("report", ids["lora"], "--task", ladder_dir, "--out", out).stdout
    assert "Recommendation:** Ship few-shot-nearest" in human  # a run id finds its ladder
    assert f"report: {out / 'report.html'}" in human and (out / "report.md").is_file()

    c = json.loads(ladder("compare", ids["zero-shot"], ids["few-shot-nearest"], "--task",
                          ladder_dir, "--json").stdout)
    assert c["counts"] == {"fixed": 20, "broken": 0, "changed": 0, "same": 10}
    assert {"key": "rung", "a": "zero-shot", "b": "few-shot-nearest"} in c["changes"]
    assert c["test"]["test"] == "mcnemar" and c["test"]["b_only"] == 20
    assert c["test"]["p_value"] == pytest.approx(2 / 2**20)
    human = ladder("compare", ids["few-shot-nearest"], ids["lora"], "--task",
                   ladder_dir).stdout
    assert "broken 1" in human and "not significant" in human and "[broken] e007" in human

    bad = ladder("compare", "nope", ids["lora"], "--task", ladder_dir, check=False)
    assert bad.returncode == 2 and "no run 'nope'" in bad.stderr
    assert "Traceback" not in bad.stderr
    with pytest.raises(LadderError, match="no ladder or run 'nope'"):
        write_report(load_task(ladder_dir), Store(ladder_dir / ".ladder" / "runs.db"), "nope")


def test_compare_new_base_model(tmp_path):
    """Same rung, another model: the model is what changed, example by example."""
    root = make_task(tmp_path / "m")
    task = load_task(root)
    store = Store(task.state_dir / "runs.db")
    old = store_run(store, task, "system-prompt", answers(12, {0, 1, 2}), ladder_id="A")
    new = store_run(store, task, "system-prompt", answers(12, {2, 5}), ladder_id="B",
                    model="bigger")
    c = compare_runs(store, old["run_id"], new["run_id"])
    assert c["changes"] == [{"key": "model_key", "a": "default", "b": "bigger"}]
    assert c["counts"] == {"fixed": 2, "broken": 1, "changed": 0, "same": 9}


def test_ui_serves_reports_and_comparisons(ladder_dir, browser):
    port = free_port()
    server = subprocess.Popen([*LADDER, "ui", "--task", str(ladder_dir), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "ui did not start"
                time.sleep(0.2)
        page, problems = open_page(browser, base + "/")
        assert page.locator("#ladders tr").count() == 2  # header + ladder L1
        page.click("text=L1")
        page.wait_for_selector("#ladder-table")
        assert page.locator("#ladder-table tr.rung-row").count() == 3
        assert page.locator("svg circle.point").count() == 6
        page.select_option("#f-status", "incorrect")
        assert page.locator(".ex:visible").count() == 20
        page.screenshot(path=str(ARTIFACTS / "ui-report.png"))
        page.goto(base + "/")
        options = page.locator("select[name=a] option").all_inner_texts()
        page.select_option("select[name=a]", options[0])
        page.select_option("select[name=b]", options[1])
        page.click("button[type=submit]")
        page.wait_for_selector("#test")
        assert "McNemar" in page.locator("#test").inner_text()
        page.select_option("#f-kind", "fixed")
        assert page.locator(".ex:visible").count() == 20
        assert problems == []
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/report/%3Cscript%3E", timeout=5)
        body = missing.value.read().decode()
        assert missing.value.code == 404 and "&lt;script&gt;" in body and "<script>" not in body
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_report_shows_the_stored_data_audit(ladder_dir):
    """`ladder check` stores its audit; the report (and so the web view) shows it, says when
    the data changed since, and says how to get one when there is none."""
    task = load_task(ladder_dir)
    store = Store(task.state_dir / "runs.db")
    html_path, _ = write_report(task, store, "L1")
    assert "No data audit stored for this task" in html_path.read_text()
    rep = Audit(30, conflicts=[{"kind": "near", "ids": ["e1", "e9"], "outputs": ["yes", "no"],
                                "detail": "Jaccard 0.91"}],
                rare_labels={"maybe": 1}, one_split_labels={"maybe": "train only (never "
                                                                     "tested)"},
                suspects=[Suspect("e4", "no", "yes", 0.87, 0.05, "is <b>this</b> ok?",
                                  "x.jsonl:5")])
    save_audit(task, rep)
    page = write_report(task, store, "L1")[0].read_text()
    section = page[page.index("<h2>Data audit</h2>"):page.index("<h2>Examples</h2>")]
    assert "Likely mislabelled: 1" in section and "<td class=l>e4</td>" in section
    assert "<td class=l>yes</td><td class=l>0.87</td><td class=l>0.05</td>" in section
    assert "is &lt;b&gt;this&lt;/b&gt; ok?" in section  # escaped
    assert "e1 → yes<br>e9 → no" in section and "Rare labels" in section
    assert "changed since this audit" not in section
    data = ladder_dir / "data" / "x.jsonl"
    data.write_text(data.read_text() + '{"id": "b", "input": "r", "output": "no"}\n')
    assert "changed since this audit" in write_report(task, store, "L1")[0].read_text()
