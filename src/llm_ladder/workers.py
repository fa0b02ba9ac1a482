"""Child-process workers that can be stopped: what the document parsers (rag/loaders.py) and
Python tools (tools/executor.py) run in, so a hung or runaway call is killed at its deadline
instead of hanging the process that called it."""

from __future__ import annotations

from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess


def stop_worker(proc: BaseProcess | None, conn: Connection | None) -> None:
    """Kill the worker if it still runs, reap it, and close its pipe (each may be None)."""
    if proc is not None:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
    if conn is not None:
        conn.close()
