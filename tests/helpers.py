"""Helpers shared by the tests: run the `ladder` command, find a free loopback port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

LADDER = [sys.executable, "-m", "llm_ladder"]


def ladder(*args: Any, check: bool = True, cwd: Any = None, env: dict[str, str] | None = None,
           timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `ladder ARGS` in a subprocess; with `check`, fail the test on a non-zero exit."""
    proc = subprocess.run([*LADDER, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"ladder {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def ladder_json(*args: Any, timeout: float = 900) -> Any:
    """Run `ladder ARGS --json`; the parsed document on stdout."""
    return json.loads(ladder(*args, "--json", timeout=timeout).stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
