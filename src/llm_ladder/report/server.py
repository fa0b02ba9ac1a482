"""`ladder ui`: a read-only local web view of the task's runs (the ladder index, each report,
compare pages), served from the run store with the standard library's HTTP server.

Every request must carry a `Host` (and, from a browser, an `Origin`) naming the bound
address, so a web page cannot read the runs through DNS rebinding (evil.example resolving to
127.0.0.1) or embed them cross-site; others get 403. Responses forbid framing.
Skipped: writing anything (labelling), authentication; bind it to loopback only.
"""

from __future__ import annotations

from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from llm_ladder.errors import LadderError
from llm_ladder.report import collect, compare_runs, list_ladders
from llm_ladder.report.html import e, page, render_compare, render_index, render_report
from llm_ladder.serving.guard import host_allowed, origin_allowed
from llm_ladder.store import Store
from llm_ladder.task import load_task


def make_server(task_dir: Path, host: str, port: int,
                log: Callable[[str], None] | None = None) -> ThreadingHTTPServer:
    """A read-only HTTP server of the task's runs: /, /report/ID, /compare?a=ID&b=ID."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if not (host_allowed(self.headers.get("Host"), host)
                    and origin_allowed(self.headers.get("Origin"), host)):
                return self._send(page("forbidden", "<h1>forbidden</h1><p>the Host or Origin "
                                                    "header does not name this server</p>"), 403)
            try:
                task = load_task(task_dir)
                store = Store(task.state_dir / "runs.db")
                try:
                    if url.path == "/":
                        body, code = render_index(task.name, list_ladders(store)), 200
                    elif url.path.startswith("/report/"):
                        ident = unquote(url.path[len("/report/"):])
                        body, code = render_report(collect(task, store, ident)), 200
                    elif url.path == "/compare":
                        q = parse_qs(url.query)
                        body = render_compare(compare_runs(store, q.get("a", [""])[0],
                                                           q.get("b", [""])[0]))
                        code = 200
                    else:
                        body, code = page("not found", "<h1>not found</h1>"), 404
                finally:
                    store.close()
            except LadderError as ex:
                body, code = page("not found", f"<h1>not found</h1><p>{e(ex)}</p>"), 404
            self._send(body, code)

        def _send(self, body: str, code: int) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: object) -> None:
            if log is not None:
                log(f"{self.address_string()} {fmt % args}")

    return ThreadingHTTPServer((host, port), Handler)
