"""A tool's `timeout_s` is a hard deadline: a tool that sleeps forever (or long) is stopped,
the call returns at the deadline with a timeout error, and the next call works."""

from __future__ import annotations

import time
from pathlib import Path

from llm_ladder.tools.executor import Executor


def call(name: str, **args):
    return {"name": name, "arguments": args}


def test_a_tool_that_never_returns_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import time\n"
        "def forever():\n    while True:\n        time.sleep(1)\n"
        "def four():\n    time.sleep(4)\n    return 'late'\n"
        "def quick(x):\n    return {'x': x}\n", encoding="utf-8")
    ex = Executor({"forever": "slow:forever", "four": "slow:four", "quick": "slow:quick"},
                  tmp_path, timeout_s=0.5)
    try:
        for name in ("four", "forever"):
            assert ex.run(call("quick", x=1)) == ('{"x": 1}', None)  # a worker is up
            start = time.perf_counter()
            text, error = ex.run(call(name))
            took = time.perf_counter() - start
            assert (text, error) == (f"error: {name} timed out", "timed out after 0.5 s")
            assert took < 2.0, f"{name} returned after {took:.1f} s"
        assert ex.run(call("quick", x=2)) == ('{"x": 2}', None)  # a fresh worker
    finally:
        ex.close()
