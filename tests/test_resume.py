"""Kill a run mid-way, resume it: same results as an uninterrupted run, nothing twice."""

import json
import signal
import sqlite3
import subprocess
import time

from conftest import write_task
from helpers import LADDER

ONE_AT_A_TIME = ('[models.default]\nbackend = "local"\nname = "smollm2-135m"\n'
                 'batch_size = 1\n')


def _count(db):
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_kill_and_resume(tmp_path):
    task = write_task(tmp_path / "t", n_rows=60, max_test=10, model=ONE_AT_A_TIME)
    db = task / ".ladder" / "runs.db"
    args = [*LADDER, "eval", str(task), "--rung", "system-prompt", "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _count(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = _count(db)
    assert 3 <= stored < 10, f"the kill should land mid-run, found {stored} stored"

    resumed = json.loads(subprocess.run([*args, "--resume"], capture_output=True, text=True,
                                        check=True, timeout=600).stdout)["rungs"][0]
    with sqlite3.connect(db) as c:
        runs = c.execute("SELECT id, status FROM runs").fetchall()
        per_example = c.execute("SELECT example_id, COUNT(*) FROM predictions "
                                "GROUP BY run_id, example_id").fetchall()
    assert runs == [(resumed["run_id"], "done")], "resume must continue the killed run"
    assert resumed["n"] == 10 and all(n == 1 for _, n in per_example)

    fresh = json.loads(subprocess.run(args, capture_output=True, text=True, check=True,
                                      timeout=600).stdout)["rungs"][0]
    assert fresh["run_id"] != resumed["run_id"]
    with sqlite3.connect(db) as c:
        outs = {}
        for run_id in (resumed["run_id"], fresh["run_id"]):
            outs[run_id] = dict(c.execute("SELECT example_id, raw_output FROM predictions "
                                          "WHERE run_id=?", (run_id,)).fetchall())
    assert outs[resumed["run_id"]] == outs[fresh["run_id"]]
    assert resumed["quality"] == fresh["quality"]
