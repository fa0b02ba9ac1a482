"""`ladder ui`: a local web view of the task's runs (the ladder index, each report, compare
pages) and a labelling queue (llm_ladder.labels), served from the run store with the
standard library's HTTP server.

Every request must carry a `Host` (and, from a browser, an `Origin`) naming the bound
address, so a web page cannot read the runs through DNS rebinding (evil.example resolving to
127.0.0.1) or embed them cross-site; others get 403. Responses forbid framing.

The labelling pages write to the run store, so they need more, as Jupyter does:
- a per-server random token (`secrets.token_urlsafe`) in the URL `ladder ui` prints; the
  first visit with `?token=` starts a session: an HttpOnly, SameSite=Strict cookie holding a
  random session id, then a redirect to the same page without the token. `/label` pages
  without a live session are 403;
- every POST carries the session's CSRF token (a hidden form field, compared in constant
  time with the one bound to the cookie's session), an `Origin` naming this server (a POST
  without one is 403) and the Host check; bodies are form-encoded, at most 64 KiB (413
  otherwise, read no further), a correction at most 20,000 characters;
- everything shown is escaped (report.html `e`), and the page's CSP allows no fetches.
A bind beyond loopback is refused unless `allow_remote` is set (`ladder ui --allow-remote`).
Skipped: authentication of the read-only report pages beyond the Host/Origin checks (they
were and stay readable on loopback without the token), several users' sessions surviving a
restart, HTTPS.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

from llm_ladder.errors import LadderError
from llm_ladder.labels import LabelItem, LabelSource, default_user, next_item, progress, sources
from llm_ladder.report import collect, compare_runs, list_ladders
from llm_ladder.report.html import (
    e,
    input_text,
    messages_html,
    page,
    render_compare,
    render_index,
    render_report,
)
from llm_ladder.serving.guard import host_allowed, is_loopback, origin_allowed
from llm_ladder.store import Store, open_run_store
from llm_ladder.task import Task, load_task

MAX_BODY = 64 * 1024
MAX_SESSIONS = 256
COOKIE = "ladder_ui_session"

LABEL_JS = """
(function(){
  document.addEventListener('keydown', function(ev){
    var t = ev.target, typing = t && (t.tagName === 'TEXTAREA' || t.tagName === 'INPUT');
    if (typing) {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        var c = document.getElementById('correct') || document.getElementById('promote');
        if (c) { ev.preventDefault(); c.click(); }
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.key.length !== 1) { return; }
    if (ev.key === 'e') {
      var o = document.getElementById('output');
      if (o) { ev.preventDefault(); o.focus(); }
      return;
    }
    var b = document.querySelector('[data-shortcut="' + ev.key + '"]');
    if (b) { ev.preventDefault(); b.click(); }
  });
})();
"""


class UiServer(ThreadingHTTPServer):
    """The web view's server: its token, live sessions (id -> CSRF token), the labeller."""

    token: str
    user: str
    sessions: OrderedDict[str, str]
    flash: dict[str, str]  # session id -> the error of its last refused label
    lock: threading.Lock


def _forbidden(why: str) -> str:
    return page("forbidden", f"<h1>forbidden</h1><p>{e(why)}</p>")


def make_server(task_dir: Path, host: str, port: int,
                log: Callable[[str], None] | None = None, *, token: str | None = None,
                user: str | None = None, allow_remote: bool = False) -> UiServer:
    """The web view: /, /report/ID, /compare?a=ID&b=ID (read-only) and /label... (the
    labelling queue, behind the token and CSRF checks). `server.token` is the token to put
    in the URL (`?token=`); `user` is who the labels are from (default: the OS user)."""
    if not is_loopback(host) and not allow_remote:
        raise LadderError(f"refusing to bind the web view to {host}: it can write labels and "
                          "shows every stored prompt and output; keep 127.0.0.1, or pass "
                          "--allow-remote if you trust the network")

    class Handler(BaseHTTPRequestHandler):
        server: UiServer

        # ---- plumbing ------------------------------------------------------------------
        def _guard(self, post: bool) -> bool:
            origin = self.headers.get("Origin")
            ok = host_allowed(self.headers.get("Host"), host) and origin_allowed(origin, host)
            if ok and post and origin is None:
                ok = False  # a browser always sends Origin on a POST; a forged one may not
            if not ok:
                self._send(_forbidden("the Host or Origin header does not name this server"),
                           403)
            return ok

        def _session(self) -> str | None:
            """The live session id of the request's cookie, or None."""
            raw = self.headers.get("Cookie")
            if not raw:
                return None
            try:
                jar = SimpleCookie(raw)
            except CookieError:
                return None
            sid = jar[COOKIE].value if COOKIE in jar else None
            with self.server.lock:
                return sid if sid is not None and sid in self.server.sessions else None

        def _start_session(self, url: Any) -> None:
            """`?token=` matches: a new session cookie, then the page without the token."""
            sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            with self.server.lock:
                self.server.sessions[sid] = csrf
                while len(self.server.sessions) > MAX_SESSIONS:
                    old, _ = self.server.sessions.popitem(last=False)
                    self.server.flash.pop(old, None)
            rest = {k: v for k, v in parse_qs(url.query).items() if k != "token"}
            path = url.path if url.path.startswith("/") and not url.path.startswith("//") \
                else "/"  # never a redirect off this server
            where = path + ("?" + urlencode(rest, doseq=True) if rest else "")
            self._send("", 303, {"Location": where,
                                 "Set-Cookie": f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; "
                                               "Path=/"})

        def _send(self, body: str, code: int, headers: dict[str, str] | None = None) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "same-origin")  # no-referrer makes Origin null
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _open(self) -> tuple[Task, Store]:
            task = load_task(task_dir)
            return task, open_run_store(task)

        # ---- GET -----------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if not self._guard(post=False):
                return
            given = parse_qs(url.query).get("token")
            if given is not None:
                if hmac.compare_digest(given[0].encode(), self.server.token.encode()):
                    return self._start_session(url)
                return self._send(_forbidden("wrong token: use the URL `ladder ui` printed"),
                                  403)
            labelling = url.path == "/label" or url.path.startswith("/label/")
            if labelling and self._session() is None:
                return self._send(_forbidden("labelling needs the token: open the URL "
                                             "`ladder ui` printed (it ends in ?token=...)"), 403)
            try:
                task, store = self._open()
                try:
                    body, code = self._get(url, task, store)
                finally:
                    store.close()
            except LadderError as ex:
                body, code = page("not found", f"<h1>not found</h1><p>{e(ex)}</p>"), 404
            self._send(body, code)

        def _get(self, url: Any, task: Task, store: Store) -> tuple[str, int]:
            if url.path == "/":
                links = "<p><a id=label-link href=\"/label\">labelling queue</a></p>"
                return render_index(task.name, list_ladders(store)).replace(
                    "</h1>", "</h1>" + links, 1), 200
            if url.path.startswith("/report/"):
                ident = unquote(url.path[len("/report/"):])
                return render_report(collect(task, store, ident)), 200
            if url.path == "/compare":
                q = parse_qs(url.query)
                return render_compare(compare_runs(store, q.get("a", [""])[0],
                                                   q.get("b", [""])[0])), 200
            if url.path == "/label":
                return _queue_index(task, sources(task, store)), 200
            parts = url.path.split("/")
            if url.path.startswith("/label/") and len(parts) in (3, 4):
                src = _source(sources(task, store), unquote(parts[2]))
                if len(parts) == 3:
                    return _queue_list(src), 200
                item = src.item(unquote(parts[3]))
                if item is None:
                    raise LadderError(f"{src.kind}: no item {unquote(parts[3])!r}")
                sid = self._session() or ""
                with self.server.lock:
                    csrf = self.server.sessions.get(sid, "")
                    error = self.server.flash.pop(sid, "")
                return _item_page(src, item, csrf, self.server.user, error), 200
            return page("not found", "<h1>not found</h1>"), 404

        # ---- POST ----------------------------------------------------------------------
        def do_POST(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if not self._guard(post=True):
                return
            sid = self._session()
            if sid is None:
                return self._send(_forbidden("no session: open the URL `ladder ui` printed"),
                                  403)
            try:
                length = int(self.headers.get("Content-Length") or "-1")
            except ValueError:
                length = -1
            if length < 0:
                return self._send(page("length required", "<h1>length required</h1>"), 411)
            if length > MAX_BODY:
                self.close_connection = True
                if length <= 16 * MAX_BODY:  # drain a moderate body so the client reads the 413
                    self.rfile.read(length)
                return self._send(page("too large", f"<h1>request too large</h1><p>at most "
                                                    f"{MAX_BODY} bytes</p>"), 413)
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            raw = self.rfile.read(length)
            if ctype != "application/x-www-form-urlencoded":
                return self._send(_forbidden("form posts only"), 403)
            try:
                form = parse_qs(raw.decode("utf-8"), keep_blank_values=True,
                                max_num_fields=20, strict_parsing=False)
            except (UnicodeDecodeError, ValueError):
                return self._send(page("bad request", "<h1>bad request</h1>"), 400)
            with self.server.lock:
                want = self.server.sessions.get(sid, "")
            got = form.get("csrf", [""])[0]
            if not want or not hmac.compare_digest(got.encode(), want.encode()):
                return self._send(_forbidden("the form's CSRF token does not match this "
                                             "session; reload the page"), 403)
            parts = url.path.split("/")
            if len(parts) != 4 or parts[1] != "label":
                return self._send(page("not found", "<h1>not found</h1>"), 404)
            kind, item_id = unquote(parts[2]), unquote(parts[3])
            try:
                task, store = self._open()
                try:
                    src = _source(sources(task, store), kind)
                    action, output, score, question = _action(form)
                    try:
                        src.save(item_id, self.server.user, action, output, score, question)
                    except LadderError as ex:  # shown once on the item page, not via the URL
                        with self.server.lock:
                            self.server.flash[sid] = str(ex)
                        return self._send("", 303, {"Location": _item_url(kind, item_id)})
                    nxt = next_item(src, item_id)
                finally:
                    store.close()
            except LadderError as ex:
                return self._send(page("bad request", f"<h1>bad request</h1><p>{e(ex)}</p>"),
                                  400)
            self._send("", 303, {"Location": _item_url(kind, nxt) if nxt else
                                 f"/label/{quote(kind, safe='')}"})

        def log_message(self, fmt: str, *args: object) -> None:
            if log is not None:
                line = f"{self.address_string()} {fmt % args}"
                log(line.replace(self.server.token, "<token>"))

    server = UiServer((host, port), Handler)
    server.token = token or secrets.token_urlsafe(24)
    server.user = user or default_user()
    server.sessions = OrderedDict()
    server.flash = {}
    server.lock = threading.Lock()
    return server


def _action(form: dict[str, list[str]]) -> tuple[str, str | None, float | None, str | None]:
    """(action, corrected or edited answer, score, edited question) from the posted form;
    LadderError when malformed."""
    def text(name: str) -> str | None:
        return form[name][0].replace("\r\n", "\n") if name in form else None

    if "score" in form:
        try:
            return "score", None, float(form["score"][0]), None
        except ValueError:
            raise LadderError("a score must be a number") from None
    action = form.get("action", [""])[0]
    if action == "correct":
        return action, text("output") or "", None, None
    if action == "accept":
        return action, None, None, None
    if action in ("promote", "reject"):
        return action, text("output"), None, text("input")
    raise LadderError(f"unknown action {action[:40]!r}")


def _source(srcs: list[LabelSource], kind: str) -> LabelSource:
    for s in srcs:
        if s.kind == kind:
            return s
    raise LadderError(f"no labelling queue {kind!r} (queues: "
                      f"{', '.join(s.kind for s in srcs)})")


def _item_url(kind: str, item_id: str) -> str:
    return f"/label/{quote(kind, safe='')}/{quote(item_id, safe='')}"


def _progress(src: LabelSource) -> str:
    done, total = progress(src)
    return f"{done} of {total} labelled"


def _queue_index(task: Task, srcs: list[LabelSource]) -> str:
    rows = []
    for s in srcs:
        nxt = next_item(s)
        start = (f"<a href=\"{e(_item_url(s.kind, nxt))}\">next unlabelled</a>" if nxt
                 else "all labelled")
        rows.append(f"<tr><td class=l><a href=\"/label/{e(quote(s.kind, safe=''))}\">"
                    f"{e(s.kind)}</a></td><td class=l>{e(s.title)}</td><td class=l>"
                    f"{e(', '.join(s.actions))}</td><td>{e(_progress(s))}</td>"
                    f"<td class=l>{start}</td></tr>")
    body = (f"<h1>{e(task.name)} — labelling queue</h1><p><a href=\"/\">runs</a></p>"
            "<table id=queues><tr><th class=l>queue</th><th class=l>what</th><th class=l>"
            "actions</th><th>progress</th><th></th></tr>" + "".join(rows) + "</table>"
            "<p class=muted>Keys on an item: a = accept, s = skip, e = edit the answer, "
            "Ctrl+Enter = save the correction, digits = score, p = promote, r = reject.</p>")
    return page(f"{task.name} — labelling", body)


def _queue_list(src: LabelSource) -> str:
    done = src.labelled()
    rows = []
    for x in src.items():
        lab = done.get(x.id)
        rows.append(f"<tr><td class=l><a href=\"{e(_item_url(src.kind, x.id))}\">{e(x.id)}"
                    f"</a></td><td class=l>{e(_short(input_text(x.input)))}</td><td class=l>"
                    f"{e(_label_text(lab)) if lab else '—'}</td></tr>")
    body = (f"<h1>{e(src.title)}</h1><p><a href=\"/label\">all queues</a></p>"
            f"<p id=progress>{e(_progress(src))}</p><table id=items><tr><th class=l>item</th>"
            "<th class=l>input</th><th class=l>label</th></tr>" + "".join(rows) + "</table>")
    return page(f"labelling {src.kind}", body)


def _short(s: str, n: int = 90) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _label_text(lab: dict[str, Any]) -> str:
    parts = []
    if lab.get("status"):
        parts.append(str(lab["status"]))
    elif lab["accepted"]:
        parts.append("accepted")
    elif lab["output"] is not None:
        parts.append("corrected")
    if lab["score"] is not None:
        parts.append(f"score {lab['score']:g}")
    return ", ".join(parts) + f" by {lab['who']}"


def _item_page(src: LabelSource, x: LabelItem, csrf: str, user: str, error: str) -> str:
    lab = src.labelled().get(x.id)
    nxt = next_item(src, x.id, skip_labelled=False)
    skip = _item_url(src.kind, nxt) if nxt else f"/label/{quote(src.kind, safe='')}"
    inp = (f"<pre id=input>{e(x.input)}</pre>" if isinstance(x.input, str)
           else f"<div id=input>{messages_html(x.input)}</div>")
    cites = "".join(f"<li>{e(c.get('source') or c.get('doc_id') or '')}"
                    + (f" <span class=muted>#{e(c.get('n'))}</span>" if c.get("n") else "")
                    + (f"<pre>{e(c['text'])}</pre>" if c.get("text") else "") + "</li>"
                    for c in x.citations)
    controls = [f"<input type=hidden name=csrf value=\"{e(csrf)}\">"]
    if "accept" in src.actions:
        controls.append("<p><button id=accept type=submit name=action value=accept "
                        "data-shortcut=a>Accept: the answer is right (a)</button></p>")
    if "promote" in src.actions:
        controls.append(
            f"<p><label for=q-input>Question (edit before promoting if needed):</label><br>"
            f"<textarea id=q-input name=input rows=3 cols=100 maxlength=20000>"
            f"{e(input_text(x.input))}</textarea><br><label for=output>Answer (e to edit):"
            f"</label><br><textarea id=output name=output rows=4 cols=100 maxlength=20000>"
            f"{e(x.answer)}</textarea></p><p><button id=promote type=submit name=action "
            "value=promote data-shortcut=p>Promote to the synthetic test set (p, "
            "Ctrl+Enter)</button> <button id=reject type=submit name=action value=reject "
            "data-shortcut=r>Reject (r)</button></p>")
    if "correct" in src.actions:
        controls.append(f"<p><label for=output>Correct it (e to edit):</label><br><textarea "
                        f"id=output name=output rows=6 cols=100 maxlength=20000>{e(x.answer)}"
                        "</textarea><br><button id=correct type=submit name=action "
                        "value=correct>Save correction (Ctrl+Enter)</button></p>")
    if "score" in src.actions and src.scale:
        lo, hi = src.scale
        buttons = "".join(f"<button class=score type=submit name=score value=\"{k}\" "
                          f"data-shortcut=\"{k % 10}\">{k}</button> "
                          for k in range(lo, hi + 1))
        controls.append(f"<p id=score>Score ({lo}–{hi}, keys): {buttons}</p>")
    body = (f"<h1>{e(src.title)}</h1><p><a href=\"/label\">all queues</a> · <a href=\""
            f"/label/{e(quote(src.kind, safe=''))}\">this queue</a></p>"
            f"<p id=progress>{e(_progress(src))}</p>"
            + (f"<p id=error class=rec style=\"border-color:#c22\">{e(error)}</p>" if error
               else "")
            + f"<p class=muted>item {e(x.id)}; {e(x.note)}; labelling as {e(user)}</p>"
            + (f"<p id=current>current label: {e(_label_text(lab))}</p>" if lab else "")
            + "<h2>Input</h2>" + inp + "<h2>Answer</h2>" + f"<pre id=answer>{e(x.answer)}</pre>"
            + (f"<h2>Reference</h2><pre id=reference>{e(x.reference)}</pre>"
               if x.reference is not None else "")
            + (f"<h2>Citations</h2><ol id=citations>{cites}</ol>" if cites else "")
            + f"<form id=label-form method=post action=\"{e(_item_url(src.kind, x.id))}\">"
            + "".join(controls) + "</form>"
            + f"<p><a id=skip href=\"{e(skip)}\" data-shortcut=s>Skip (s)</a></p>")
    return page(f"label {x.id}", body, LABEL_JS)
