"""Guardrails of `ladder serve`: what protects the server and what checks each answer.

In front of the app (a pure ASGI middleware, so nothing is parsed first): the `Host` and
`Origin` headers must name the bound address (no DNS rebinding, no cross-site calls from a web
page into a loopback server), bodies must be `application/json` (a browser cannot send that
cross-site without a preflight), bearer-token auth on every route but `/health` (constant-time
comparison; a 401 that does not say why) and a body-size limit that answers 413 before parsing,
whether the client sent Content-Length or a chunked body. On each answer: markdown/HTML images
are stripped (an image URL can carry data out of the conversation when a client renders it),
`[n]` citations are checked against the retrieved chunks, the answer is validated against a
JSON schema, and configured PII patterns are redacted from what is logged. Deliberately
skipped: rate limits per client, TLS (put a reverse proxy in front), content moderation.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from llm_ladder.errors import LadderError
from llm_ladder.metrics import parse_json
from llm_ladder.rag.rag_metrics import citations

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(authority: str) -> str:
    """The host of a `Host` header or URL authority, without port or IPv6 brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") == 1:
        return authority.partition(":")[0]
    return authority


def host_allowed(header: str | None, bind: str) -> bool:
    """Whether a `Host` header names the address the server is bound to. A server on loopback
    answers only to loopback names (localhost, 127.x, ::1), so a DNS-rebound name
    (evil.example resolving to 127.0.0.1) is refused; one bound to every address
    (0.0.0.0, ::) has a bearer token (check_bind) and answers to any name."""
    if not header:
        return False
    if bind in ("", "0.0.0.0", "::"):
        return True
    name = _host_name(header)
    if is_loopback(bind):
        return is_loopback(name)
    return name == _host_name(bind)


def origin_allowed(origin: str | None, bind: str) -> bool:
    """Whether a browser's `Origin` header is the server's own (see host_allowed); requests
    without one (curl, SDKs) pass. `null` (sandboxed frames, file: pages) is refused."""
    if origin is None:
        return True
    scheme, _, authority = origin.strip().partition("://")
    return scheme.lower() in ("http", "https") and host_allowed(authority.partition("/")[0],
                                                                bind)


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type header is application/json (parameters such as charset aside).
    Browsers can send text/plain, form and multipart bodies cross-site without a preflight;
    application/json needs one, which this server never grants."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json"


def check_bind(host: str, token: str | None, token_env: str) -> None:
    """Refuse to listen beyond loopback without a bearer token."""
    if not token and not is_loopback(host):
        raise LadderError(f"refusing to serve on {host} without auth: set the bearer token in "
                          f"the environment variable {token_env} (serve.token_env), or bind "
                          "to 127.0.0.1")


async def send_json(send: Send, status: int, body: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which the official client turns into its exceptions."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Guard:
    """ASGI middleware: Host and Origin, auth, Content-Type, then the body limit, then the app
    with the buffered body."""

    def __init__(self, app: Callable, token: str | None, max_body_bytes: int,
                 host: str = "127.0.0.1"):
        self.app = app
        self.token = token.encode() if token else None
        self.limit = max_body_bytes
        self.host = host

    def authorized(self, scope: Scope) -> bool:
        if self.token is None or scope.get("path") in OPEN_PATHS:
            return True
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                # compare_digest's time does not depend on where the strings differ
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(),
                                                                            self.token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers") or []:
            headers.setdefault(name, value.decode("latin-1"))
        if not (host_allowed(headers.get(b"host"), self.host)
                and origin_allowed(headers.get(b"origin"), self.host)):
            return await send_json(send, 403, error_body(
                "forbidden: the Host or Origin header does not name this server",
                "permission_error", "bad_host"))
        if not self.authorized(scope):
            return await send_json(send, 401, error_body("unauthorized", "authentication_error",
                                                         "invalid_api_key"),
                                   [(b"www-authenticate", b"Bearer")])
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        if not is_json(headers.get(b"content-type")):
            return await send_json(send, 415, error_body(
                "the request body must be sent as Content-Type: application/json",
                "invalid_request_error", "unsupported_media_type"))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._too_large(send)
        body = bytearray()
        while True:  # chunked bodies have no length: count while reading, stop past the limit
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return None
            body += msg.get("body", b"")
            if len(body) > self.limit:
                return await self._too_large(send)
            if not msg.get("more_body"):
                break
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, error_body(f"request body over {self.limit} bytes",
                                              "invalid_request_error", "body_too_large"))


# ---- answers ---------------------------------------------------------------------------
_TAG_LIKE = re.compile(r"<[A-Za-z/!?][^<>]*>")  # [^<>]: each `<` is scanned once, linear
_REF_DEF = re.compile(r"\s*\[[^\]\n]+\]:\s*\S.*")


def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # CommonMark with raw HTML on, as chat UIs and GitHub render it
    return MarkdownIt("commonmark", {"html": True})


def strip_images(text: str) -> tuple[str, int]:
    """Remove everything a markdown renderer or a browser would fetch on its own: images
    (inline, with nested brackets, reference and shortcut-reference style) and raw HTML
    (`<img>`, `<svg><image href>`, `<video poster>`, `<link>`, `style` with `url()`...).
    Returns the text and how many were removed.

    The answer is parsed with markdown-it (CommonMark, HTML on), never with regexes: an
    answer with none of these is returned unchanged; one with any is rendered to plain text
    (alt text and link text kept, code kept verbatim, HTML tags dropped), which is lossy for
    formatting but leaves a renderer nothing to load."""
    tokens = _markdown().parse(text)
    found = 0
    for tok in tokens:
        if tok.type == "html_block":
            found += 1
        for child in tok.children or []:
            if child.type in ("image", "html_inline"):
                found += 1
            elif child.type == "text":
                # image syntax CommonMark leaves as text (a reference whose definition sits
                # inside the paragraph) that a laxer renderer might still resolve
                found += child.content.count("![")
                # HTML that CommonMark declines (`<IMG SRC=a?b=c>`) but a lax one passes
                found += len(_TAG_LIKE.findall(child.content))
    if not found:
        return text, 0
    return _plain_text(tokens).strip(), found


def _plain_text(tokens: list[Any]) -> str:
    out: list[str] = []
    for tok in tokens:
        kind = tok.type
        if kind == "inline":
            out.append(_inline_text(tok.children or []))
        elif kind in ("fence", "code_block"):
            out.append(f"```{tok.info.strip()}\n{tok.content}```\n\n")
        elif kind == "heading_open":
            out.append("#" * int(tok.tag[1]) + " ")
        elif kind == "list_item_open":
            out.append(f"{tok.info}. " if tok.info else "- ")
        elif kind in ("paragraph_close", "heading_close", "hr") and not tok.hidden:
            out.append("\n\n")
        elif kind == "paragraph_close":  # a paragraph inside a tight list item
            out.append("\n")
    return "".join(out)


def _inline_text(children: list[Any]) -> str:
    out: list[str] = []
    for c in children:
        if c.type == "text":
            if not _REF_DEF.fullmatch(c.content):  # a definition a lax renderer could use
                out.append(_TAG_LIKE.sub("", c.content).replace("![", "["))
        elif c.type == "code_inline":
            out.append(f"`{c.content}`")
        elif c.type in ("softbreak", "hardbreak"):
            out.append("\n")
        elif c.type == "image":
            out.append(_inline_text(c.children or []))
        elif c.type in ("em_open", "em_close"):
            out.append(c.markup)
        elif c.type in ("strong_open", "strong_close"):
            out.append(c.markup)
        # links keep their text; html_inline and the link targets are dropped
    return "".join(out)


def valid_citations(answer: str, context: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The [n] numbers an answer cites that name a retrieved chunk, and those that do not."""
    known = {c["n"] for c in context}
    cited = citations(answer)
    return [n for n in cited if n in known], [n for n in cited if n not in known]


def load_schema(path: Any) -> dict[str, Any]:
    import jsonschema

    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
    except (OSError, json.JSONDecodeError, jsonschema.SchemaError) as e:
        msg = getattr(e, "message", None) or str(e)
        raise LadderError(f"{path}: serve.output_schema is not a readable JSON schema: "
                          f"{msg}") from None
    return schema


def check_schema(answer: str, schema: dict[str, Any]) -> tuple[str, str | None]:
    """(the answer as compact JSON, None) when it holds a JSON value matching `schema`
    (bare, fenced or embedded in text), else (the answer, why not)."""
    import jsonschema

    value, why = parse_json(answer)
    if why:
        return answer, f"not JSON: {why}"
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=str)
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return answer, f"at {where}: {e.message}"
    return json.dumps(value, ensure_ascii=False), None


# ---- redaction -------------------------------------------------------------------------
# Every built-in pattern runs in linear time on any input (tests/test_hardening_serve.py feeds
# each one 1 MB adversarial strings): a match can only start where its first character class
# begins (a lookbehind), and runs are matched possessively (`++`), so no position is scanned
# more than a bounded number of times. A user's own pattern is the user's responsibility.
NAMED_PATTERNS = {
    "email": r"(?<![\w.+-])[\w.+-]++@[\w-]++(?:\.[\w-]++)+",
    "phone": r"(?<!\w)\+?\d[\d ()-]{7,}\d(?!\w)",
    "ipv4": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
    "credit_card": r"\b(?:\d[ -]?){13,19}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
    "swedish_personnummer": r"\b(?:\d{2})?\d{6}[-+]?\d{4}\b",
}


class Redactor:
    """Replaces configured patterns with `[REDACTED:name]` in everything that is logged."""

    def __init__(self, entries: list[str]):
        self.patterns: list[tuple[str, re.Pattern]] = []
        for i, entry in enumerate(entries):
            name = entry if entry in NAMED_PATTERNS else f"pattern{i + 1}"
            try:
                self.patterns.append((name, re.compile(NAMED_PATTERNS.get(entry, entry))))
            except re.error as e:
                raise LadderError(f"task.toml: serve.redact[{i}] {entry!r} is neither a named "
                                  f"pattern ({', '.join(NAMED_PATTERNS)}) nor a valid regex: "
                                  f"{e}") from None

    def text(self, value: str) -> str:
        for name, pattern in self.patterns:
            value = pattern.sub(f"[REDACTED:{name}]", value)
        return value

    def __call__(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if not self.patterns:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value
