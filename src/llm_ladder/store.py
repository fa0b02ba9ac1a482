"""The run store: SQLite in the task's `.ladder/` folder. Runs, predictions, configs, served
requests, and human labels from `ladder ui` (one row per queue item, latest wins).

Schema changes are a list of small migration functions (`m001_initial`, ...) applied in
order and recorded in `migrations`; never edit one that has shipped, add the next.
Predictions are keyed by (run_id, example_id), so a resumed run can never store or bill an
example twice. WAL mode lets `ladder runs` read while a run writes.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ladder.errors import redact_urls_in


def m001_initial(db: sqlite3.Connection) -> None:
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


def _script(db: sqlite3.Connection, sql: str) -> None:
    """Run several statements inside the caller's transaction (executescript would commit)."""
    for stmt in sql.split(";"):
        lines = [ln.split("--")[0] for ln in stmt.splitlines()]
        if "".join(lines).strip():
            db.execute("\n".join(lines))


def m002_ladder_id(db: sqlite3.Connection) -> None:
    """Group the runs of one `ladder run` so the comparison can be shown again."""
    db.execute("ALTER TABLE runs ADD COLUMN ladder_id TEXT")


def m003_request_logs(db: sqlite3.Connection) -> None:
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


def m004_labels(db: sqlite3.Connection) -> None:
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


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_ladder_id,
                                                          m003_request_logs, m004_labels]


def _config_json(config: dict) -> str:
    """A run's config as stored and matched: URLs (an OpenAI `base_url`, a database URL) lose
    their passwords and credential query values first, so no secret reaches the database."""
    return json.dumps(redact_urls_in(config), sort_keys=True)


class Store:
    """The SQLite run store: runs, predictions (exact messages, outputs, scores), request logs."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self._retry_locked(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
        self.db.execute("PRAGMA foreign_keys=ON")
        self._migrate()

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

    def _migrate(self) -> None:
        """Apply the missing migrations. The decision is taken inside `BEGIN IMMEDIATE` (the
        write lock) and re-read there, so of several processes opening a fresh store at once
        exactly one applies each migration and the others see it done."""
        names = [fn.__name__ for fn in MIGRATIONS]
        try:  # the common case, without the write lock: everything is applied already
            if {r[0] for r in self.db.execute("SELECT name FROM migrations")} >= set(names):
                return
        except sqlite3.OperationalError:
            pass  # no migrations table yet
        self._retry_locked(lambda: self.db.execute("BEGIN IMMEDIATE"))
        try:
            self.db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                            "applied REAL)")
            done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
            for fn in MIGRATIONS:
                if fn.__name__ not in done:
                    fn(self.db)
                    self.db.execute("INSERT INTO migrations VALUES (?, ?)",
                                    (fn.__name__, time.time()))
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

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
        """Insert a batch in one transaction; a row already stored is kept, never doubled."""
        now = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, r["example_id"], json.dumps(r["input"]), json.dumps(r["messages"]),
                  r["raw_output"], r["output"], r["reference"], r["score"], r["score_reason"],
                  json.dumps(r.get("details") or {}), r["tokens_in"], r["tokens_out"],
                  r["latency_s"], r.get("error"), now) for r in rows])
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise

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
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                f"INSERT INTO request_logs ({', '.join(cols)}) VALUES "
                f"({', '.join('?' * len(cols))})",
                [tuple(json.dumps(r.get(c)) if c in self.LOG_JSON and r.get(c) is not None
                       else r.get(c) for c in cols) for r in rows])
            self.db.execute("COMMIT")
        except Exception:
            self.db.execute("ROLLBACK")
            raise

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


def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
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

