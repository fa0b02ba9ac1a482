"""SQL and URL corpus sources, against a real SQLite file and a real HTTP server on loopback."""

from __future__ import annotations

import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import free_port
from pdfs import make_pdf

from llm_ladder.rag.sources import check_read_only, load_sql, load_urls, scrub_url

# ------------------------------------------------------------------------------------------
# SQL
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE docs (doc_key TEXT, body TEXT, topic TEXT, year INTEGER)")
    con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", [
        ("a1", "Fire doors need a self-closing device.", "fire", 2021),
        ("a2", None, "fire", 2022),
        ("a3", "   ", "stairs", 2022),
        ("a4", "Stair risers\r\nmax 19 cm\u200b.", "stairs", 2023),
        ("a5", "Guard rails at 1.1 m.", "rails", 2024),
    ])
    con.commit()
    con.close()
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def count_rows(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM docs").fetchone()[0]
    finally:
        con.close()


def test_sql_rows_become_documents_and_empty_texts_are_reported(db: Path) -> None:
    url = sqlite_url(db)
    docs, problems = load_sql(url, "SELECT * FROM docs ORDER BY doc_key", "body", "doc_key",
                              ["topic", "year"], 100)
    assert [d.id for d in docs] == ["sql:a1", "sql:a4", "sql:a5"]
    assert all(d.source == url for d in docs)
    assert docs[0].text == "Fire doors need a self-closing device."
    assert docs[0].meta["fields"] == {"topic": "fire", "year": 2021}
    assert docs[1].text == "Stair risers\nmax 19 cm\u200b."
    assert docs[1].meta["hidden_chars"] == {"U+200B": 1}
    by_source = {p.source: p.message for p in problems}
    assert by_source == {f"{url}#sql:a2": "NULL 'body'; skipped",
                         f"{url}#sql:a3": "empty 'body'; skipped"}


def test_sql_row_numbers_as_ids_and_missing_columns(db: Path) -> None:
    url = sqlite_url(db)
    docs, problems = load_sql(url, "SELECT body FROM docs WHERE body IS NOT NULL "
                                   "ORDER BY doc_key", "body", None, None, 10)
    assert [d.id for d in docs] == ["sql:row1", "sql:row3", "sql:row4"]  # row2 is blank
    assert [p.source for p in problems] == [f"{url}#row 2"]

    docs, problems = load_sql(url, "SELECT doc_key, topic FROM docs", "body", "nope", None, 10)
    assert docs == []
    assert len(problems) == 1
    assert "'body', 'nope'" in problems[0].message
    assert "columns: doc_key, topic" in problems[0].message


def test_sql_null_and_repeated_ids_are_skipped(db: Path) -> None:
    docs, problems = load_sql(sqlite_url(db), "SELECT topic, body FROM docs UNION ALL "
                                              "SELECT NULL, 'orphan'", "body", "topic", None,
                              100)
    assert [d.id for d in docs] == ["sql:fire", "sql:stairs", "sql:rails"]
    messages = " | ".join(p.message for p in problems)
    assert "NULL id in 'topic'" in messages
    assert "repeats an earlier row's 'topic'" in messages  # a4 repeats 'stairs'


def test_sql_rows_over_max_rows_are_counted_not_dropped_silently(db: Path) -> None:
    url = sqlite_url(db)
    docs, problems = load_sql(url, "SELECT * FROM docs ORDER BY doc_key", "body", "doc_key",
                              None, 2)
    assert [d.id for d in docs] == ["sql:a1"]  # a2 (NULL text) was inside the first 2 rows
    overflow = [p for p in problems if "left out" in p.message]
    assert len(overflow) == 1
    assert overflow[0].source == url
    assert "3 more row(s)" in overflow[0].message and "max_rows is 2" in overflow[0].message


@pytest.mark.parametrize("query", [
    "DELETE FROM docs",
    "UPDATE docs SET body = 'x'",
    "DROP TABLE docs",
    "SELECT 1; DELETE FROM docs",
    "WITH gone AS (DELETE FROM docs RETURNING *) SELECT * FROM gone",
    "SELECT * INTO copy FROM docs",
    "PRAGMA writable_schema = 1",
    "/* just a comment */",
])
def test_sql_non_select_queries_are_refused_before_running(db: Path, query: str) -> None:
    docs, problems = load_sql(sqlite_url(db), query, "body", None, None, 10)
    assert docs == []
    assert len(problems) == 1
    assert problems[0].message.startswith("query refused:")
    assert count_rows(db) == 5


@pytest.mark.parametrize(("query", "ok"), [
    ("SELECT body FROM docs;", True),
    ("  with t AS (SELECT 1 AS body) SELECT * FROM t", True),
    ("(SELECT 1 AS body) UNION (SELECT 2)", True),
    ("SELECT 'a; DELETE' AS body -- ; DROP TABLE docs\n", True),
    ("SELECT \"update\" FROM docs", True),
    ("SELECT $$;$$ AS body", True),
    ("SELECT 1;;", True),
    ("SELECT 1; SELECT 2", False),
    ("INSERT INTO docs VALUES (1)", False),
    ("SELECT * FROM docs FOR UPDATE", False),
    ("", False),
    # escapes from the read-only transaction or the database itself
    ("SELECT dblink_exec('dbname=x', 'DROP TABLE docs') AS body", False),
    ("SELECT * FROM DBLINK('dbname=x', 'SELECT 1') AS t(body text)", False),
    ("SELECT pg_read_file('/etc/passwd') AS body", False),
    ("SELECT lo_export(1, '/tmp/x') AS body", False),
    ("SELECT pg_sleep(1e9) AS body", False),
    ("SELECT 'pg_read_file' AS body", True),  # inside a string literal: harmless
])
def test_read_only_check(query: str, ok: bool) -> None:
    assert (check_read_only(query) is None) is ok


def test_sql_query_that_never_ends_is_one_problem_not_a_hang(db: Path) -> None:
    endless = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
               "SELECT 'row ' || x AS body FROM n")
    t0 = time.monotonic()
    docs, problems = load_sql(sqlite_url(db), endless, "body", None, None, 10,
                              query_timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert docs == [] and len(problems) == 1
    # the clock between fetches or SQLite's progress handler inside one, whichever sees the
    # deadline first
    assert ("ran past 1 s" in problems[0].message
            or problems[0].message == "query failed: OperationalError: interrupted")
    # a slow statement (no rows yet) is interrupted by SQLite's progress handler
    slow = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) "
            "SELECT count(*) AS body FROM n")
    t0 = time.monotonic()
    docs, problems = load_sql(sqlite_url(db), slow, "body", None, None, 10,
                              query_timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert docs == [] and len(problems) == 1 and "interrupted" in problems[0].message


def test_sql_bad_query_is_one_problem(db: Path) -> None:
    docs, problems = load_sql(sqlite_url(db), "SELECT body FROM no_such_table", "body", None,
                              None, 10)
    assert docs == []
    assert len(problems) == 1
    assert problems[0].source == sqlite_url(db)
    assert problems[0].message.startswith("query failed:")
    assert "no_such_table" in problems[0].message
    assert "Traceback" not in problems[0].message and "sqlalche.me" not in problems[0].message


@pytest.mark.parametrize(("url", "expected"), [
    ("nosuchdriver://x", "unknown database driver 'nosuchdriver'"),
    ("not a url at all", "not a database URL"),
    ("postgresql+nosuchdbapi://u@127.0.0.1/db", "unknown database driver"),
])
def test_sql_bad_urls_are_one_problem(url: str, expected: str) -> None:
    docs, problems = load_sql(url, "SELECT 1 AS body", "body", None, None, 10)
    assert docs == []
    assert len(problems) == 1
    assert problems[0].source == url
    assert expected in problems[0].message


def test_sql_missing_sqlite_file_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    docs, problems = load_sql(sqlite_url(path), "SELECT 1 AS body", "body", None, None, 10)
    assert docs == [] and len(problems) == 1
    assert "does not exist" in problems[0].message
    assert not path.exists()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://user:secretpw@127.0.0.1:1/db",
    "postgresql+psycopg://user:secretpw@127.0.0.1:notaport/db",
    "mysql+nosuchdbapi://user:secretpw@127.0.0.1:1/db",
])
def test_sql_password_never_appears(url: str) -> None:
    started = time.monotonic()
    docs, problems = load_sql(url, "SELECT 1 AS body", "body", None, None, 10,
                              connect_timeout_s=2)
    assert time.monotonic() - started < 5
    assert docs == []
    assert len(problems) == 1
    assert "secretpw" not in str(problems[0])
    assert "user:***@127.0.0.1" in problems[0].source


def test_sql_unreachable_database_names_the_source() -> None:
    url = "postgresql+psycopg://user:secretpw@127.0.0.1:1/db"
    docs, problems = load_sql(url, "SELECT 1 AS body", "body", None, None, 10)
    assert docs == [] and len(problems) == 1
    assert problems[0].source == "postgresql+psycopg://user:***@127.0.0.1:1/db"
    assert problems[0].message.startswith("cannot connect to the database:")
    assert "secretpw" not in str(problems[0])


def test_scrub_url() -> None:
    assert scrub_url("postgresql://u:p@ss@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert scrub_url("see https://me:tok@example.org/x and more") == \
        "see https://me:***@example.org/x and more"
    assert scrub_url("sqlite:///a:b@c.db") == "sqlite:///a:b@c.db"  # a path, not userinfo
    assert scrub_url("https://user@h/") == "https://user@h/"


# ------------------------------------------------------------------------------------------
# URLs
# ------------------------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head><title>Rules</title>
<style>body { color: red }</style><script>var secret = "drop me";</script></head>
<body><h1>Fire doors</h1><p>Doors must close by themselves.</p>
<div style="display:none">hidden note</div><p>Width\xe2\x80\x8b 90 cm.</p></body></html>"""


class Handler(BaseHTTPRequestHandler):
    stop: threading.Event

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def send(self, status: int, body: bytes, ctype: str | None, length: int | None = None,
             headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send(302, b"", "text/plain", headers={"Location": location})

    def do_GET(self) -> None:
        path = self.path
        try:
            if path == "/page.html":
                self.send(200, PAGE, "text/html; charset=utf-8")
            elif path == "/plain.txt":
                self.send(200, b"Line one.\r\nLine two.\n", "text/plain")
            elif path == "/notes.md":
                self.send(200, b"# Notes\n\n*Kept* as markdown.", "text/markdown")
            elif path == "/latin1.txt":
                self.send(200, "caf\u00e9".encode("latin-1"), "text/plain; charset=iso-8859-1")
            elif path == "/bad-utf8.txt":
                self.send(200, b"ok \xff bad", "text/plain; charset=utf-8")
            elif path == "/empty.txt":
                self.send(200, b"", "text/plain")
            elif path == "/data.json":
                self.send(200, b'{"a": 1}', "application/json")
            elif path == "/no-type":
                self.send(200, b"what am I", None)
            elif path == "/doc.pdf":
                self.send(200, make_pdf("Guard rails are 1.1 m high"), "application/pdf")
            elif path == "/redirect":
                self.redirect("/plain.txt")
            elif path == "/redirect-file":
                self.redirect("file:///etc/passwd")
            elif path.startswith("/hop/"):
                n = int(path.rsplit("/", 1)[1])
                if n == 0:
                    self.send(200, b"arrived", "text/plain")
                else:
                    self.redirect(f"/hop/{n - 1}")
            elif path == "/slow":
                self.stop.wait(2.5)  # the client gives up first
                self.send(200, b"too late", "text/plain")
            elif path == "/drip":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for _ in range(25):  # 0.1 s between bytes: no single read times out
                    if self.stop.wait(0.1):
                        break
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif path == "/huge":  # no Content-Length: the cap must stop the stream
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"y" * 65536)
            elif path == "/huge-declared":
                self.send(200, b"z" * 100_000, "text/plain")
            else:
                self.send(404, b"not here", "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should


@pytest.fixture(scope="module")
def server():
    stop = threading.Event()
    handler = type("BoundHandler", (Handler,), {"stop": stop})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


LOCAL = ["127.0.0.1"]  # the test servers are on loopback, which needs corpus.url_allow


def one(urls: list[str], **kwargs):
    docs, problems = load_urls(urls, allow=LOCAL, **kwargs)
    return docs, {p.source: p.message for p in problems}


def test_url_html_plain_and_markdown(server: str) -> None:
    urls = [f"{server}/page.html", f"{server}/plain.txt", f"{server}/notes.md"]
    docs, problems = one(urls)
    assert problems == {}
    assert [d.id for d in docs] == urls
    assert [d.source for d in docs] == urls
    html, plain, md = docs
    assert "# Fire doors" in html.text and "Doors must close by themselves." in html.text
    assert "drop me" not in html.text and "color: red" not in html.text
    assert html.meta["hidden_html_chars"] == len("hidden note")
    assert html.meta["hidden_chars"] == {"U+200B": 1}
    assert html.meta["status"] == 200 and html.meta["content_type"] == "text/html"
    assert html.meta["fetched_at"].endswith("+00:00")
    assert plain.text == "Line one.\nLine two."
    assert plain.meta["content_type"] == "text/plain"
    assert md.text == "# Notes\n\n*Kept* as markdown."


def test_url_charset_and_decode_errors(server: str) -> None:
    docs, problems = one([f"{server}/latin1.txt", f"{server}/bad-utf8.txt"])
    assert [d.text for d in docs] == ["caf\u00e9"]
    assert "not valid utf-8" in problems[f"{server}/bad-utf8.txt"]


def test_url_pdf_goes_through_the_pdf_helper(server: str) -> None:
    docs, problems = one([f"{server}/doc.pdf"])
    assert problems == {}
    assert "Guard rails are 1.1 m high" in docs[0].text
    assert docs[0].meta["pages"] == 1 and docs[0].meta["content_type"] == "application/pdf"


def test_url_bad_statuses_and_types_are_reported(server: str) -> None:
    urls = [f"{server}/missing", f"{server}/data.json", f"{server}/no-type",
            f"{server}/empty.txt", f"{server}/plain.txt"]
    docs, problems = one(urls)
    assert [d.id for d in docs] == [f"{server}/plain.txt"]
    assert problems[f"{server}/missing"].startswith("HTTP 404")
    assert "unsupported content type 'application/json'" in problems[f"{server}/data.json"]
    assert "no Content-Type" in problems[f"{server}/no-type"]
    assert "empty body" in problems[f"{server}/empty.txt"]


def test_url_redirects_are_followed_and_checked(server: str) -> None:
    docs, problems = one([f"{server}/redirect", f"{server}/redirect-file", f"{server}/hop/5",
                          f"{server}/hop/6"])
    assert [d.id for d in docs] == [f"{server}/redirect", f"{server}/hop/5"]
    assert docs[0].text == "Line one.\nLine two."
    assert docs[0].meta["final_url"] == f"{server}/plain.txt"
    assert docs[1].meta["redirects"][-1] == f"{server}/hop/0"
    refused = problems[f"{server}/redirect-file"]
    assert "file:///etc/passwd" in refused and "refused" in refused
    assert "more than 5 redirects" in problems[f"{server}/hop/6"]
    assert len(problems) == 2


def test_url_schemes_other_than_http_are_refused() -> None:
    urls = ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1/page", "http:///nohost"]
    docs, problems = one(urls)
    assert docs == []
    assert set(problems) == set(urls)
    assert "file:// refused" in problems["file:///etc/passwd"]
    assert "ftp:// refused" in problems["ftp://127.0.0.1/x"]
    assert "no scheme refused" in problems["127.0.0.1/page"]
    assert "no host" in problems["http:///nohost"]


def test_url_slow_server_times_out(server: str) -> None:
    started = time.monotonic()
    docs, problems = one([f"{server}/slow"], timeout_s=0.5)
    assert time.monotonic() - started < 2
    assert docs == []
    assert problems == {f"{server}/slow": "timed out after 0.5 s"}


def test_url_timeout_bounds_the_whole_body_not_each_read(server: str) -> None:
    started = time.monotonic()
    docs, problems = one([f"{server}/drip"], timeout_s=0.6)
    assert time.monotonic() - started < 2
    assert docs == []
    assert "timed out after 0.6 s" in problems[f"{server}/drip"]


def test_url_bodies_over_the_cap_are_refused(server: str) -> None:
    docs, problems = one([f"{server}/huge", f"{server}/huge-declared", f"{server}/plain.txt"],
                         max_bytes=10_000)
    assert [d.id for d in docs] == [f"{server}/plain.txt"]
    assert "over the size cap of 10000 bytes" in problems[f"{server}/huge"]
    assert "stopped reading" in problems[f"{server}/huge"]
    assert "body of 100000 bytes is over the size cap" in problems[f"{server}/huge-declared"]


def test_url_unreachable_port_and_duplicates(server: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/x"
    docs, problems = load_urls([dead, f"{server}/plain.txt", f"{server}/plain.txt"],
                               timeout_s=2, allow=LOCAL)
    assert [d.id for d in docs] == [f"{server}/plain.txt"]
    assert problems[0].source == dead
    assert problems[0].message.startswith("cannot connect")
    assert problems[1].message == "listed more than once; loaded once"


def test_url_password_is_not_shown(server: str) -> None:
    url = server.replace("http://", "http://me:hunter22@") + "/plain.txt"
    docs, problems = load_urls([url, url.replace("/plain.txt", "/missing")], allow=LOCAL)
    assert docs[0].id == server.replace("http://", "http://me:***@") + "/plain.txt"
    assert all("hunter22" not in str(p) for p in problems)
    assert len(problems) == 1
