"""Secrets planted in a task file, URL sources, a model's base_url and a SQL URL never come
back: not in errors, document ids or sources, the run store (database and WAL file)."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llm_ladder.errors import redact_url
from llm_ladder.testing import write_task

SECRETS = ["PGPASS-d41d8c", "URLPASS-98f00b", "URLTOKEN-2c7a1e", "BASEPASS-77e1aa",
           "BASEKEY-0b9f3c", "SIGNATURE-5a5a5a"]


def no_secret(text: str | bytes, where: str) -> None:
    data = text if isinstance(text, bytes) else text.encode()
    found = [s for s in SECRETS if s.encode() in data]
    assert not found, f"{where} carries {found}"


@pytest.mark.parametrize("url,shown", [
    ("postgresql+psycopg://u:PGPASS-d41d8c@db/x", "postgresql+psycopg://u:***@db/x"),
    ("https://h/doc?token=URLTOKEN-2c7a1e&page=2", "https://h/doc?token=***&page=2"),
    ("https://h/f?X-Amz-Signature=SIGNATURE-5a5a5a&X-Amz-Date=1",
     "https://h/f?X-Amz-Signature=***&X-Amz-Date=1"),
    ("http://me:BASEPASS-77e1aa@h/v1?api_key=BASEKEY-0b9f3c",
     "http://me:***@h/v1?api_key=***"),
    ("host=db password=PGPASS-d41d8c user=u", "host=db password=*** user=u"),
    ("https://example.com/search?q=keyword&monkey=1", "https://example.com/search?q=keyword"
     "&monkey=1"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(f"error: cannot reach {url} (refused)") == \
        f"error: cannot reach {shown} (refused)"


def test_a_validation_error_does_not_echo_the_corpus_table(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "input": f"q{i}", "output": "yes"} for i in range(6)]
    task = write_task(tmp_path / "t", rows, answers=["yes"])
    with open(task / "task.toml", "a", encoding="utf-8") as f:  # a model-level error
        f.write('[corpus]\nchunk_tokens = 64\nchunk_overlap = 64\n[[corpus.sql]]\n'
                'url = "postgresql://u:PGPASS-d41d8c@db.example/x"\nquery = "SELECT 1"\n'
                'text_column = "t"\n')
    proc = subprocess.run([sys.executable, "-m", "llm_ladder", "check", str(task)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "chunk_overlap must be smaller" in proc.stderr
    no_secret(proc.stdout + proc.stderr, "the error")


def test_url_source_ids_and_sources_carry_no_credentials() -> None:
    from llm_ladder.rag.sources import load_urls

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"a page"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        port = httpd.server_address[1]
        url = (f"http://me:URLPASS-98f00b@127.0.0.1:{port}/doc?token=URLTOKEN-2c7a1e"
               f"&X-Amz-Signature=SIGNATURE-5a5a5a")
        docs, problems = load_urls([url, url.replace("/doc", "/doc2") + "&x=1"],
                                   allow=["127.0.0.1"])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(docs) == 2 and problems == []
    for d in docs:
        no_secret(repr(d), "a URL document")


def test_the_run_store_never_holds_a_base_url_secret(tmp_path: Path) -> None:
    from llm_ladder.store import Store

    store = Store(tmp_path / "runs.db")
    config = {"model": {"backend": "openai", "name": "m",
                        "base_url": "http://me:BASEPASS-77e1aa@h/v1?api_key=BASEKEY-0b9f3c"},
              "corpus": {"sql": [{"url": "postgresql://u:PGPASS-d41d8c@db/x"}]}}
    run = store.create_run("t", "zero-shot", "default", "test", config, {})
    assert store.find_resumable("t", "zero-shot", "default", "test", config) == run
    store.finish_run(run, {"error": "cannot reach http://me:BASEPASS-77e1aa@h/v1"}, "failed")
    stored = store.get_run(run)
    assert stored["config"]["model"]["base_url"] == "http://me:***@h/v1?api_key=***"
    files = [p for p in tmp_path.iterdir() if p.name.startswith("runs.db")]
    assert any(p.name.endswith("-wal") for p in files)  # WAL mode: the log is checked too
    for p in files:
        no_secret(p.read_bytes(), p.name)
    store.close()
