"""Several processes opening one fresh run store at once (e.g. `ladder index` and `ladder
serve` started together on a new task): every open succeeds and every migration is applied
exactly once. Real (forked) processes, lined up on a barrier, on real SQLite files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import traceback
from pathlib import Path

from llm_ladder.store import MIGRATIONS, Store


def _open(path: str, barrier, errors) -> None:
    try:
        barrier.wait(30)
        Store(path).close()
    except Exception:
        errors.put(traceback.format_exc().strip().splitlines()[-1])


def test_concurrent_opens_of_a_fresh_store(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(6):
        db = tmp_path / f"runs{round_}.db"
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_open, args=(str(db), barrier, errors)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        with sqlite3.connect(db) as con:
            names = [r[0] for r in con.execute("SELECT name FROM migrations ORDER BY name")]
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        assert names == [fn.__name__ for fn in MIGRATIONS]
        assert mode == "wal"
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
