"""The run store: runs, predictions, configs, served requests, and human labels from `ladder
ui` (one row per queue item, latest wins). SQLite in the task's `.ladder/runs.db` by default;
PostgreSQL when the task's `[store] url_env` names an environment variable holding a
`postgresql://` URL, so that several people and CI jobs write one history (`open_run_store`).

One `Store` class and one list of migrations for both databases. Everything that differs
between them sits in two small connection classes (`_SQLite`, `_Postgres`): `?` placeholders
(PostgreSQL's `%s`), the column type `REAL` in DDL (PostgreSQL's `DOUBLE PRECISION`: its own
REAL is 4 bytes, too coarse for a Unix time), the write transaction (SQLite's `BEGIN
IMMEDIATE`; a PostgreSQL transaction, plus a transaction-scoped advisory lock while migrating)
and which error means "no such table". The SQL itself, upserts included (`ON CONFLICT ... DO
NOTHING / DO UPDATE`), is written once and runs on both.

Schema changes are a list of small migration functions (`m001_initial`, ...) applied in
order and recorded in `migrations`; never edit one that has shipped, add the next.
Predictions are keyed by (run_id, example_id), so a resumed run can never store or bill an
example twice. WAL mode lets `ladder runs` read while a run writes. A PostgreSQL URL's
password never reaches a message, a repr or the display name (`Store.path`).

A NUL character, which PostgreSQL text cannot hold, is stored there as U+FFFD.

Skipped: connection pools, moving runs between SQLite and PostgreSQL, several tasks in one
PostgreSQL database (use one database, or one schema, per task); adapters stay files in
`.ladder/adapters` (docs/store.md).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError, redact_url, redact_urls_in, require
from llm_ladder.task import Task


def m001_initial(db: _Conn) -> None:
    _script(db, """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        rung TEXT NOT NULL,
        model TEXT NOT NULL,
        split TEXT NOT NULL,
        status TEXT NOT NULL,            -- running | done | failed
        config TEXT NOT NULL,            -- JSON: task settings, pipeline settings, model
        versions TEXT NOT NULL,          -- JSON: package and Python versions
        summary TEXT,                    -- JSON: scores, intervals, tokens, latency, cost
        created REAL NOT NULL,
        finished REAL
    );
    CREATE TABLE predictions (
        run_id TEXT NOT NULL REFERENCES runs(id),
        example_id TEXT NOT NULL,
        input TEXT NOT NULL,             -- JSON
        messages TEXT NOT NULL,          -- JSON: the exact messages sent
        raw_output TEXT NOT NULL,
        output TEXT NOT NULL,            -- parsed answer
        reference TEXT NOT NULL,
        score REAL,                      -- NULL = unscored
        score_reason TEXT,
        details TEXT,                    -- JSON
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        error TEXT,
        created REAL NOT NULL,
        PRIMARY KEY (run_id, example_id)
    );
    """)


def _script(db: _Conn, sql: str) -> None:
    """Run several DDL statements inside the caller's transaction (executescript would
    commit), each in the connection's dialect (`_Conn.ddl`)."""
    for stmt in sql.split(";"):
        lines = [ln.split("--")[0] for ln in stmt.splitlines()]
        if "".join(lines).strip():
            db.execute(db.ddl("\n".join(lines)))


def m002_ladder_id(db: _Conn) -> None:
    """Group the runs of one `ladder run` so the comparison can be shown again."""
    _script(db, "ALTER TABLE runs ADD COLUMN ladder_id TEXT")


def m003_request_logs(db: _Conn) -> None:
    """Traffic served by `ladder serve` (redacted before writing; never auth headers)."""
    _script(db, """
    CREATE TABLE request_logs (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        task TEXT NOT NULL,
        rung TEXT NOT NULL,
        model TEXT NOT NULL,
        run_id TEXT,                     -- the run being served, when served from a run id
        status TEXT NOT NULL,            -- ok | refused | invalid_output | error | timeout
        http_status INTEGER NOT NULL,
        request TEXT NOT NULL,           -- JSON: the client's messages
        messages TEXT,                   -- JSON: the exact messages sent to the model
        response TEXT,                   -- the answer sent back
        raw_output TEXT,
        citations TEXT,                  -- JSON: retrieved chunks (n, source, doc_id, id)
        tokens_in INTEGER NOT NULL,
        tokens_out INTEGER NOT NULL,
        latency_s REAL NOT NULL,
        error TEXT,
        details TEXT                     -- JSON: guards applied, finish reason, retries
    );
    CREATE INDEX request_logs_created ON request_logs(created)
    """)


def m004_labels(db: _Conn) -> None:
    """Human labels from the web view's queue (`ladder ui`, llm_ladder.labels): one row per
    (source, item); a later label of the same item replaces the fields it sets."""
    _script(db, """
    CREATE TABLE labels (
        source TEXT NOT NULL,            -- the queue: requests | judge-labels | ...
        item_id TEXT NOT NULL,           -- request log id, or the example id in that source
        accepted INTEGER,                -- 1 = the answer is right, 0 = corrected, NULL = not said
        output TEXT,                     -- the person's corrected answer
        score REAL,                      -- on the judge's scale, NULL = not scored
        who TEXT NOT NULL,
        created REAL NOT NULL,           -- when the latest action on this item was saved
        PRIMARY KEY (source, item_id)
    )
    """)


def m005_upgrades(db: _Conn) -> None:
    """`ladder upgrade` records (llm_ladder.upgrade): which ladder was re-run on which new
    model, and the verdict, for the report's upgrade history."""
    _script(db, """
    CREATE TABLE upgrades (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        created REAL NOT NULL,
        from_model TEXT NOT NULL,
        to_model TEXT NOT NULL,
        old_ladder TEXT NOT NULL,
        new_ladder TEXT NOT NULL,
        record TEXT NOT NULL             -- JSON: recommendations, verdict, per-rung counts
    )
    """)


MIGRATIONS: list[Callable[[_Conn], None]] = [m001_initial, m002_ladder_id, m003_request_logs,
                                             m004_labels, m005_upgrades]

URL_SCHEMES = ("postgresql://", "postgres://")
_PG_MIGRATION_LOCK = 0x6C61_6464_6572  # pg_advisory_xact_lock key: "ladder" in ASCII
_PG_REAL = re.compile(r"\bREAL\b")


class _Row(dict):
    """A PostgreSQL result row read by column name or by position, as `sqlite3.Row` is."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class _Conn(ABC):
    """The connection under a `Store`, and the only place the two databases differ: the
    placeholder style (`sql`), DDL types (`ddl`), the write transaction (`write`), the
    migration lock (`migrating`) and the error raised for a missing table (`no_table`).
    Statements are serialized by a lock so that threads sharing a store (`ladder serve` logs
    from a worker thread) never run inside each other's transaction."""

    dialect = ""
    no_table: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def sql(self, text: str) -> str:
        return text

    def ddl(self, text: str) -> str:
        return text

    @abstractmethod
    def _execute(self, text: str, params: Sequence[Any]) -> Any:
        """Run one statement already in this dialect's placeholder style."""

    @abstractmethod
    def _executemany(self, text: str, rows: list[Sequence[Any]]) -> None:
        """Run one statement for each row."""

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement (`?` placeholders); a cursor whose rows read as mappings."""
        with self.lock:
            return self._execute(self.sql(text), params)

    def executemany(self, text: str, rows: list[Sequence[Any]]) -> None:
        with self.lock:
            self._executemany(self.sql(text), rows)

    @abstractmethod
    def write(self) -> AbstractContextManager[None]:
        """A write transaction: committed when the block ends, rolled back if it raises."""

    @contextmanager
    def migrating(self) -> Iterator[None]:
        """A write transaction that no other process migrating the same store runs beside."""
        with self.write():
            yield

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


class _SQLite(_Conn):
    dialect = "sqlite"
    no_table = (sqlite3.OperationalError,)

    def __init__(self, path: Path):
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self._retry_locked(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))
        self.conn.execute("PRAGMA foreign_keys=ON")

    def _retry_locked(self, step: Callable[[], Any], wait_s: float = 30) -> Any:
        """Run `step`, retrying while another process holds the lock SQLite needs for it
        (switching a fresh file to WAL takes an exclusive lock that the busy timeout does not
        always wait for)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return step()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or \
                        time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _execute(self, text: str, params: Sequence[Any]) -> Any:
        return self.conn.execute(text, params)

    def _executemany(self, text: str, rows: list[Sequence[Any]]) -> None:
        self.conn.executemany(text, rows)

    @contextmanager
    def write(self) -> Iterator[None]:
        with self.lock:
            self._retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.conn.close()


class _Postgres(_Conn):
    dialect = "postgresql"

    def __init__(self, url: str, connect_timeout: int = 10):
        super().__init__()
        self.psycopg = require("psycopg", "rag")
        self.no_table = (self.psycopg.errors.UndefinedTable,)
        self.url = url
        self.where = redact_url(url)
        self.connect_timeout = int(connect_timeout)
        self._secrets = _secrets(url)
        self.conn: Any = None
        self._connect()

    def scrub(self, text: str) -> str:
        """`text` without the password (in any spelling an error message might use)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_url(text)

    def _connect(self) -> None:
        def row(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
            names = [c.name for c in cursor.description or ()]
            return lambda values: _Row(zip(names, values, strict=True))

        try:
            self.conn = self.psycopg.connect(self.url, autocommit=True, row_factory=row,
                                             connect_timeout=self.connect_timeout)
        except self.psycopg.Error as e:  # not chained: its text may hold the URL
            message = self.scrub(str(e).strip()) or type(e).__name__
            raise LadderError(f"cannot open the run store at {self.where}: {message}") from None

    def _live(self) -> Any:
        """The connection, reconnecting (outside a transaction) if the server dropped it."""
        if self.conn.broken or self.conn.closed:
            self._connect()
        return self.conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A lost or refused connection -> LadderError without the password; other database
        errors (a constraint, a type) keep their psycopg class."""
        try:
            yield
        except self.psycopg.OperationalError as e:
            message = self.scrub(str(e).strip()) or type(e).__name__
            raise LadderError(f"the run store at {self.where}: {message}") from None

    def sql(self, text: str) -> str:
        return text.replace("%", "%%").replace("?", "%s")

    def ddl(self, text: str) -> str:
        return _PG_REAL.sub("DOUBLE PRECISION", text)

    def _execute(self, text: str, params: Sequence[Any]) -> Any:
        with self._errors():
            return self._live().execute(text, _no_nul(params))

    def _executemany(self, text: str, rows: list[Sequence[Any]]) -> None:
        with self._errors():
            self._live().cursor().executemany(text, [_no_nul(r) for r in rows])

    @contextmanager
    def write(self) -> Iterator[None]:
        with self.lock, self._errors(), self._live().transaction():
            yield

    @contextmanager
    def migrating(self) -> Iterator[None]:
        with self.write():
            self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_MIGRATION_LOCK,))
            yield

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _no_nul(params: Sequence[Any]) -> list[Any]:
    """PostgreSQL text cannot hold NUL: in a string value (a model's raw output, say) it
    becomes U+FFFD, where SQLite would keep it, rather than failing the whole batch."""
    return [p.replace("\x00", "\ufffd") if isinstance(p, str) and "\x00" in p else p
            for p in params]


def _secrets(url: str) -> list[str]:
    """The password in `url`, as written, percent-decoded and percent-encoded."""
    found = {m.group(1) for m in re.finditer(r"://[^:/?#@]*:([^/?#]*)@", url)}
    found |= {m.group(1) for m in re.finditer(r"password=([^&\s]*)", url)}
    found |= {urllib.parse.unquote(s) for s in found}
    found |= {urllib.parse.quote(s, safe="") for s in found}
    return sorted((s for s in found if s), key=len, reverse=True)


def open_run_store(task: Task, connect_timeout: int = 10) -> Store:
    """The task's run store: PostgreSQL at the URL in the environment variable named by
    `[store] url_env` when the task sets it, else SQLite in `.ladder/runs.db`."""
    variable = task.store.url_env
    if not variable:
        return Store(task.state_dir / "runs.db")
    url = os.environ.get(variable, "").strip()
    if not url:
        raise LadderError(f"task.toml's [store] url_env names the environment variable "
                          f"{variable}, which is not set: set it to the PostgreSQL URL of the "
                          "run store (postgresql://user:password@host/db), or remove [store] "
                          "to keep runs in .ladder/runs.db")
    return Store(url=url, connect_timeout=connect_timeout)


def _config_json(config: dict) -> str:
    """A run's config as stored and matched: URLs (an OpenAI `base_url`, a database URL) lose
    their passwords and credential query values first, so no secret reaches the database."""
    return json.dumps(redact_urls_in(config), sort_keys=True)


class Store:
    """The run store: runs, predictions (exact messages, outputs, scores), request logs and
    labels, in SQLite (`Store(path)`) or PostgreSQL (`Store(url=...)`; `open_run_store`
    picks from the task). `path` names it in messages: the file, or the URL without its
    password."""

    def __init__(self, path: str | Path | None = None, *, url: str | None = None,
                 connect_timeout: int = 10):
        if (path is None) == (url is None):
            raise ValueError("a store needs a path or a url, not both")
        self.db: _Conn
        self.path: Path | str
        if url is not None:
            if not url.startswith(URL_SCHEMES):
                raise LadderError("the run store URL must start with postgresql:// or "
                                  "postgres:// (postgresql://user:password@host/db)")
            self.db = _Postgres(url, connect_timeout)
            self.path = self.db.where
        else:
            self.path = Path(path)  # type: ignore[arg-type]
            self.db = _SQLite(self.path)
        try:
            self._migrate()
        except BaseException:
            self.db.close()
            raise

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def dialect(self) -> str:
        """"sqlite" or "postgresql"."""
        return self.db.dialect

    def _migrate(self) -> None:
        """Apply the missing migrations. The decision is taken under the migration lock
        (SQLite's write lock, a PostgreSQL advisory lock) and re-read there, so of several
        processes opening a fresh store at once exactly one applies each migration and the
        others see it done."""
        names = [fn.__name__ for fn in MIGRATIONS]
        try:  # the common case, without the lock: everything is applied already
            if {r[0] for r in self.db.execute("SELECT name FROM migrations")} >= set(names):
                return
        except self.db.no_table:
            pass  # no migrations table yet
        with self.db.migrating():
            _script(self.db, "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                             "applied REAL)")
            done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
            for fn in MIGRATIONS:
                if fn.__name__ not in done:
                    fn(self.db)
                    self.db.execute("INSERT INTO migrations VALUES (?, ?)",
                                    (fn.__name__, time.time()))

    def close(self) -> None:
        self.db.close()

    # ---- runs ------------------------------------------------------------------------
    def create_run(self, task: str, rung: str, model: str, split: str, config: dict,
                   versions: dict, ladder_id: str | None = None) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.db.execute(
            "INSERT INTO runs (id, task, rung, model, split, status, config, versions, created,"
            " ladder_id) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
            (run_id, task, rung, model, split, _config_json(config),
             json.dumps(versions),
             time.time(), ladder_id))
        return run_id

    def find_resumable(self, task: str, rung: str, model: str, split: str,
                       config: dict) -> str | None:
        """The newest unfinished run with the same settings, if any."""
        row = self.db.execute(
            "SELECT id FROM runs WHERE task=? AND rung=? AND model=? AND split=? AND config=? "
            "AND status!='done' ORDER BY created DESC LIMIT 1",
            (task, rung, model, split, _config_json(config))).fetchone()
        return row["id"] if row else None

    def finish_run(self, run_id: str, summary: dict, status: str = "done") -> None:
        self.db.execute("UPDATE runs SET status=?, summary=?, finished=? WHERE id=?",
                        (status, json.dumps(redact_urls_in(summary)), time.time(), run_id))

    def set_ladder(self, run_id: str, ladder_id: str) -> None:
        self.db.execute("UPDATE runs SET ladder_id=? WHERE id=?", (ladder_id, run_id))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:  # allow a unique prefix, as git does
            rows = self.db.execute("SELECT * FROM runs WHERE substr(id, 1, ?) = ?",
                                   (len(run_id), run_id)).fetchall() if run_id else []
            row = rows[0] if len(rows) == 1 else None
        return _run_dict(row) if row else None

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created DESC LIMIT ?", (limit,))
        return [_run_dict(r) for r in rows]

    # ---- predictions -----------------------------------------------------------------
    def done_ids(self, run_id: str) -> set[str]:
        return {r[0] for r in self.db.execute(
            "SELECT example_id FROM predictions WHERE run_id=?", (run_id,))}

    def add_predictions(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        """Insert a batch in one transaction; a row already stored is kept, never doubled.
        Rows go in example-id order (stable: of two with one id the first wins), so two
        PostgreSQL writers of one run take their row locks in one order and never deadlock."""
        now = time.time()
        values = [(run_id, r["example_id"], json.dumps(r["input"]), json.dumps(r["messages"]),
                   r["raw_output"], r["output"], r["reference"], r["score"], r["score_reason"],
                   json.dumps(r.get("details") or {}), r["tokens_in"], r["tokens_out"],
                   r["latency_s"], r.get("error"), now)
                  for r in sorted(rows, key=lambda r: str(r["example_id"]))]
        with self.db.write():
            self.db.executemany(
                "INSERT INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (run_id, example_id) DO NOTHING", values)

    def predictions(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM predictions WHERE run_id=? ORDER BY example_id",
                               (run_id,))
        out = []
        for r in rows:
            d = dict(r)
            for k in ("input", "messages", "details"):
                d[k] = json.loads(d[k]) if d[k] else None
            out.append(d)
        return out

    # ---- served requests -------------------------------------------------------------
    LOG_COLUMNS = ("id", "created", "task", "rung", "model", "run_id", "status", "http_status",
                   "request", "messages", "response", "raw_output", "citations", "tokens_in",
                   "tokens_out", "latency_s", "error", "details")
    LOG_JSON = ("request", "messages", "citations", "details")

    def add_request_logs(self, rows: list[dict[str, Any]]) -> None:
        """Insert served requests in one transaction (committed when this returns)."""
        cols = self.LOG_COLUMNS
        with self.db.write():
            self.db.executemany(
                f"INSERT INTO request_logs ({', '.join(cols)}) VALUES "
                f"({', '.join('?' * len(cols))})",
                [tuple(json.dumps(r.get(c)) if c in self.LOG_JSON and r.get(c) is not None
                       else r.get(c) for c in cols) for r in rows])

    def request_logs(self, limit: int | None = None, status: str | None = None
                     ) -> list[dict[str, Any]]:
        """Served requests, oldest first; `status` filters (e.g. "ok")."""
        sql, args = "SELECT * FROM request_logs", []
        if status:
            sql += " WHERE status=?"
            args.append(status)
        sql += " ORDER BY created, id"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        out = []
        for r in self.db.execute(sql, args):
            d = dict(r)
            for k in self.LOG_JSON:
                d[k] = json.loads(d[k]) if d[k] else None
            out.append(d)
        return out

    # ---- upgrades (`ladder upgrade`) ---------------------------------------------------
    def add_upgrade(self, record: dict[str, Any]) -> None:
        """Store one upgrade record (its `id`, `task`, `created`, `from_model`, `to_model`,
        `old_ladder`, `new_ladder`; the whole record as JSON)."""
        self.db.execute(
            "INSERT INTO upgrades (id, task, created, from_model, to_model, old_ladder, "
            "new_ladder, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (record["id"], record["task"], record["created"], record["from_model"],
             record["to_model"], record["old_ladder"], record["new_ladder"],
             json.dumps(redact_urls_in(record))))

    def upgrades(self, task: str | None = None) -> list[dict[str, Any]]:
        """The stored upgrade records, oldest first (of one task when `task` is given)."""
        sql, args = "SELECT record FROM upgrades", ()
        if task is not None:
            sql, args = sql + " WHERE task=?", (task,)
        return [json.loads(r["record"]) for r in self.db.execute(sql + " ORDER BY created, id",
                                                                 args)]

    # ---- human labels (the web view's queue) ------------------------------------------
    def put_label(self, source: str, item_id: str, who: str, *, accepted: bool | None = None,
                  output: str | None = None, score: float | None = None) -> None:
        """Save one person's action on an item. Idempotent per (source, item): the fields this
        action sets replace the stored ones (latest wins), the others are kept; accepting
        clears a stored correction and correcting clears `accepted`."""
        if accepted is None and output is None and score is None:
            raise ValueError("a label needs accepted, output or score")
        now = time.time()
        if output is not None:
            accepted = False
        sets = ["who=excluded.who", "created=excluded.created"]
        if accepted is not None:
            sets += ["accepted=excluded.accepted", "output=excluded.output"]
        if score is not None:
            sets.append("score=excluded.score")
        self.db.execute(
            "INSERT INTO labels (source, item_id, accepted, output, score, who, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, item_id) DO UPDATE SET "
            + ", ".join(sets),
            (source, item_id, None if accepted is None else int(accepted), output, score, who,
             now))

    def labels(self, source: str | None = None) -> dict[str, dict[str, Any]]:
        """item id -> label (accepted as bool or None, output, score, who, created) of one
        source, or "source/item id" -> label of all sources."""
        sql, args = "SELECT * FROM labels", ()
        if source is not None:
            sql, args = sql + " WHERE source=?", (source,)
        out = {}
        for r in self.db.execute(sql + " ORDER BY created", args):
            d = dict(r)
            d["accepted"] = None if d["accepted"] is None else bool(d["accepted"])
            out[d["item_id"] if source is not None else f"{d['source']}/{d['item_id']}"] = d
        return out


def _run_dict(row: Any) -> dict[str, Any]:
    d = dict(row)
    for k in ("config", "versions", "summary"):
        d[k] = json.loads(d[k]) if d[k] else None
    return d


def export_rows(logs: list[dict[str, Any]],
                labels: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Logged requests as examples: messages input, the served answer as provisional output.
    `labels` (log id -> label of the `requests` queue, `Store.labels("requests")`): where a
    person accepted or corrected the answer, the row gains `human_output`, its `output` is
    the human one (the served answer kept in `meta.served_output`) and it is no longer
    provisional; a human score goes to `meta.human_score`."""
    rows = []
    for log in logs:
        if not log["response"]:
            continue
        row = {"id": log["id"], "input": log["request"], "output": log["response"],
               "meta": {"log_id": log["id"],
                        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime(log["created"])),
                        "served_rung": log["rung"], "served_model": log["model"],
                        "run_id": log["run_id"], "provisional": True,
                        "citations": log["citations"]}}
        lab = (labels or {}).get(log["id"])
        if lab is not None:
            human = lab["output"] if lab["output"] is not None else \
                log["response"] if lab["accepted"] else None
            if human is not None:
                row["human_output"] = row["output"] = human
                row["meta"] |= {"provisional": False, "served_output": log["response"]}
            if lab["score"] is not None:
                row["meta"]["human_score"] = lab["score"]
            row["meta"] |= {"labelled_by": lab["who"],
                            "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                         time.gmtime(lab["created"]))}
        rows.append(row)
    return rows

