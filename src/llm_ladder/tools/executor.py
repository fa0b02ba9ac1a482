"""Executing tool calls: a Python callable "module:function" (a module file in the task
folder first) or an http(s) URL receiving the arguments as a JSON POST.

A failing tool never stops the run: its error goes back to the model. Skipped: sandboxing of
Python tools (they run in this process: only declare code you trust).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.tools.schemas import Call

RESULT_CHARS = 4000  # a tool result is cut to this many characters before the model sees it


class Executor:
    """Runs tool calls: "module:function" (looked up on first use) or an http(s) URL."""

    def __init__(self, targets: dict[str, str], root: Path, timeout_s: float = 30.0):
        self.targets = targets
        self.root = root
        self.timeout_s = timeout_s
        self._funcs: dict[str, Callable[..., Any]] = {}

    def kinds(self) -> dict[str, str]:
        return {n: ("http" if t.startswith(("http://", "https://")) else "python")
                for n, t in sorted(self.targets.items())}

    def _func(self, name: str) -> Callable[..., Any]:
        if name in self._funcs:
            return self._funcs[name]
        target = self.targets[name]
        module, _, attr = target.partition(":")
        local = self.root / (module.replace(".", "/") + ".py")
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
            raise LadderError(f"[tools] implementations.{name}: cannot load {target!r}: "
                              f"{type(e).__name__}: {e}") from None
        if not callable(fn):
            raise LadderError(f"[tools] implementations.{name}: {target!r} is not callable")
        self._funcs[name] = fn
        return fn

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
                out: Any = self._post(target, args)
            else:
                fn = self._func(name)
                with ThreadPoolExecutor(max_workers=1) as pool:
                    out = pool.submit(fn, **args).result(timeout=self.timeout_s)
        except LadderError:
            raise
        except FutureTimeout:
            return (f"error: {name} timed out", f"timed out after {self.timeout_s:g} s")
        except Exception as e:  # the tool's own failure goes back to the model
            msg = f"{type(e).__name__}: {e}"[:300]
            return f"error: {msg}", msg
        text = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False,
                                                           default=str)
        return text[:RESULT_CHARS], None

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
