"""Executing tool calls: a Python callable "module:function" (a module file in the task
folder first) or an http(s) URL receiving the arguments as a JSON POST.

A failing tool never stops the run: its error goes back to the model. Python tools run in one
long-lived worker process per `Executor` (started with `spawn` on the first call), so
`timeout_s` is a hard deadline: a tool still running then has its worker killed, the model
gets a timeout error at once, and the next call starts a fresh worker (module-level state of
the tool does not survive a timeout). A tool's result crosses the process boundary as text
(a string, or JSON with `default=str`). Skipped: sandboxing of Python tools (the worker has
this process's rights: only declare code you trust), memory caps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.tools.schemas import Call
from llm_ladder.workers import stop_worker

WORKER_START_S = 120.0
RESULT_CHARS = 4000  # a tool result is cut to this many characters before the model sees it


class Executor:
    """Runs tool calls: "module:function" (in a worker process) or an http(s) URL."""

    def __init__(self, targets: dict[str, str], root: Path, timeout_s: float = 30.0):
        self.targets = targets
        self.root = root
        self.timeout_s = timeout_s
        self._proc: Any = None
        self._conn: Any = None

    def kinds(self) -> dict[str, str]:
        return {n: ("http" if t.startswith(("http://", "https://")) else "python")
                for n, t in sorted(self.targets.items())}

    def run(self, call: Call) -> tuple[str, str | None]:
        """(result text for the model, error or None); a failing tool never stops the run."""
        name, args = call["name"], call["arguments"]
        if name not in self.targets:
            return f"error: no tool named {name!r} can be run", f"no implementation for {name!r}"
        if not isinstance(args, dict):
            return "error: arguments must be a JSON object", "arguments are not an object"
        target = self.targets[name]
        try:
            if target.startswith(("http://", "https://")):
                text = self._post(target, args)
            else:
                text = self._call(name, target, args)
        except LadderError:
            raise
        except ToolTimeout:
            return (f"error: {name} timed out", f"timed out after {self.timeout_s:g} s")
        except ToolError as e:
            return f"error: {e}", str(e)
        except Exception as e:  # the tool's own failure goes back to the model
            msg = f"{type(e).__name__}: {e}"[:300]
            return f"error: {msg}", msg
        return text[:RESULT_CHARS], None

    # -- the worker ------------------------------------------------------------------------
    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, str(self.root)),
                                 name="ladder-tools", daemon=True)
        self._proc.start()
        child.close()
        if not self._conn.poll(WORKER_START_S):  # the deadline is for the tool, not Python
            self.close()
            raise RuntimeError(f"the tool worker did not start within {WORKER_START_S:g} s")
        try:
            self._conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError("the tool worker exited while starting") from None

    def _call(self, name: str, target: str, args: dict[str, Any]) -> str:
        if self._proc is None or not self._proc.is_alive():
            self.close()
            self._start()
        try:
            self._conn.send((name, target, args))
        except (OSError, ValueError) as e:  # arguments that cannot be sent
            raise RuntimeError(f"cannot pass the arguments to the tool: {e}") from None
        # the deadline covers the tool's import and its call
        if not self._conn.poll(self.timeout_s):
            self.close()  # kill it: the only way to stop a Python function that never returns
            raise ToolTimeout
        try:
            kind, value = self._conn.recv()
        except EOFError:
            code = self._proc.join(5) or self._proc.exitcode
            self.close()
            raise RuntimeError(f"the tool's worker process died (exit code {code})") from None
        if kind == "load_error":
            raise LadderError(f"[tools] implementations.{name}: {value}")
        if kind == "error":
            raise ToolError(value)
        return value

    def close(self) -> None:
        """Stop the worker process (a later call starts a new one)."""
        stop_worker(self._proc, self._conn)
        self._proc = self._conn = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _post(self, url: str, args: dict[str, Any]) -> str:
        req = urllib.request.Request(url, data=json.dumps(args).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.read(RESULT_CHARS * 4).decode("utf-8", "replace")
        except urllib.error.HTTPError as e:  # the URL may hold a token: never echo it
            raise RuntimeError(f"HTTP {e.code}: "
                               f"{e.read(200).decode('utf-8', 'replace')}") from None
        except urllib.error.URLError as e:
            raise RuntimeError(f"cannot reach the tool's endpoint: {e.reason}") from None


class ToolTimeout(Exception):
    """A tool ran past its deadline (its worker was killed)."""


class ToolError(Exception):
    """A tool raised; the message is "Type: text" as the worker formatted it."""

    def __str__(self) -> str:
        return str(self.args[0])


def _load(target: str, root: Path) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    local = root / (module.replace(".", "/") + ".py")
    try:
        if local.is_file():
            spec = importlib.util.spec_from_file_location(f"_ladder_tools_{module}", local)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {local}")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(module)
        fn = getattr(mod, attr)
    except (ImportError, AttributeError, SyntaxError) as e:
        raise LadderError(f"cannot load {target!r}: {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise LadderError(f"{target!r} is not callable")
    return fn


def _worker(conn: Any, root: str) -> None:
    """The worker's loop: (name, target, args) in; ("ok", text), ("error", message) or
    ("load_error", message) out; until the pipe closes."""
    funcs: dict[str, Callable[..., Any]] = {}
    conn.send("ready")
    while True:
        try:
            name, target, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if target not in funcs:
                funcs[target] = _load(target, Path(root))
        except LadderError as e:
            conn.send(("load_error", str(e)))
            continue
        try:
            out = funcs[target](**args)
            text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False,
                                                               default=str)
            conn.send(("ok", text))
        except Exception as e:  # the tool's own failure goes back to the model
            conn.send(("error", f"{type(e).__name__}: {e}"[:300]))
