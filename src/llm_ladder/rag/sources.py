"""Two more corpus sources with the folder loader's (documents, problems) shape: SQL and URLs.

`load_sql` runs one read-only SELECT/WITH query through SQLAlchemy (any URL it knows:
`sqlite:///corpus.db`, `postgresql+psycopg://user:pw@host/db`, ...) and makes one `Document` per
row: id `sql:<id_column value>` (or `sql:row<N>`, N counting result rows from 1), source the URL
with its password shown as `***`. The query is refused before it reaches the database unless it
is a single SELECT or WITH statement without data-changing keywords; it then runs in a
transaction that is rolled back, read-only where the dialect offers it (SQLite `query_only`,
PostgreSQL `SET TRANSACTION READ ONLY`), with a time budget; functions known to act outside that
transaction or on the server's files (dblink, pg_read_file, lo_export, ...) are refused. A
SQLite file that does not exist is reported rather than created. A bad URL, an unknown or
missing driver, an unreachable database or a failing query is one `SourceProblem`, never a
traceback, and no message carries the password. Rows with an empty or NULL text, or a NULL or
repeated id, are reported and skipped; rows past `max_rows` are counted and reported, not
loaded.

`load_urls` fetches http(s) URLs with httpx (GET only): other schemes are refused, redirects are
followed by hand (at most 5, each target checked to be http(s)), the body is streamed and given
up past `max_bytes` (decoded size, so a compressed bomb stops too), and `timeout_s` bounds the
whole fetch of one URL including redirects. text/html goes through the folder loader's HTML
parser, text/plain and text/markdown are kept as they are, application/pdf goes through the
folder loader's pypdf helper; any other content type, a non-2xx status, a timeout or a
connection error is a problem naming the URL. A document's id and source are the URL as given
(any password in it shown as `***`); `meta` has the status, content type, fetch time (UTC, ISO
8601), byte count and, after redirects, the final URL.

Every hop (the URL and each redirect target) has its host resolved once and every address
checked: loopback, link-local (cloud metadata), private, shared, unique-local, multicast and
reserved addresses are refused, IPv4-mapped/6to4/NAT64 forms included, unless the task lists
the host, address or network in `corpus.url_allow`; the request then goes to the checked
address (Host header and TLS server name kept), so a second DNS answer cannot redirect it.
Environment proxies are not used (they would resolve names past the check). Parsing runs in
the folder loader's budgeted child process (`Extractor`).

Skipped here: authentication helpers, robots.txt, crawling links, charset sniffing from HTML
`<meta>` tags (the header's charset or UTF-8 is used).
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from llm_ladder.errors import LadderError, redact_url, require
from llm_ladder.rag.loaders import Document, Extractor, SourceProblem, hidden_chars

Result = tuple[list[Document], list[SourceProblem]]

DEFAULT_MAX_ROWS = 100_000
MAX_REDIRECTS = 5
HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
PDF_TYPES = {"application/pdf"}

# --------------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------------

# Words by which a statement that starts with SELECT or WITH can still change data: a
# data-modifying CTE (PostgreSQL), SELECT ... INTO a new table, SELECT ... FOR UPDATE.
_WRITE_WORDS = {"insert", "update", "delete", "merge", "into"}
# Functions that act outside the read-only transaction or outside the database: dblink opens
# its own connection (not covered by SET TRANSACTION READ ONLY), the file and large-object
# functions read or write the server's files, and the others signal, reconfigure or stall
# the server. A read-only database role is still the real boundary; this list catches the
# well-known escapes before the query reaches a server where the role is too strong.
_ESCAPE_FUNCTIONS = {
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
    "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "lo_import", "lo_export",
    "lo_from_bytea", "lo_put", "lo_unlink", "pg_file_write", "pg_terminate_backend",
    "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "set_config", "pg_sleep",
    "pg_sleep_for", "pg_sleep_until", "pg_advisory_lock", "pg_advisory_xact_lock",
    "load_extension", "writefile", "readfile", "edit", "fts3_tokenizer",
}
_ESCAPE_PREFIXES = ("dblink",)
_SQL_TOKEN = re.compile(
    r"""--[^\n]*            # line comment
      | /\*.*?(?:\*/|\Z)    # block comment
      | '(?:[^']|'')*'?     # string literal
      | "(?:[^"]|"")*"?     # quoted identifier
      | `[^`]*`?            # MySQL quoted identifier
      | \[[^\]]*\]?         # SQL Server quoted identifier
      | \$(\w*)\$.*?(?:\$\1\$|\Z)  # PostgreSQL dollar quoting
      | (?P<word>[A-Za-z_][A-Za-z_0-9$]*)
      | (?P<semi>;)
      | (?P<other>\S)
    """, re.S | re.X)


def scrub_url(url: str) -> str:
    """`url` with its password and credential query values shown as `***` (errors.redact_url,
    the one redaction used everywhere)."""
    return redact_url(url)


def check_read_only(query: str) -> str | None:
    """Why `query` is not a single read-only SELECT/WITH statement, or None when it is."""
    words: list[str] = []
    statements, after_semi = 0, False
    for m in _SQL_TOKEN.finditer(query):
        if m.group("semi"):
            after_semi = True
            continue
        if m.group("word") is None and m.group("other") is None:
            continue  # comment or quoted text
        if after_semi or statements == 0:
            statements += 1
            after_semi = False
            if statements > 1:
                return "more than one statement; give a single SELECT or WITH query"
        if m.group("word"):
            words.append(m.group("word").lower())
        elif not words and m.group("other") == "(":
            continue  # `(SELECT ...) UNION (SELECT ...)`
        elif not words:
            return "not a SELECT or WITH query; only read-only queries are run"
    if not words:
        return "empty query"
    if words[0] not in ("select", "with"):
        return (f"{words[0].upper()} is not allowed; only a single SELECT or WITH query is run "
                "(read-only)")
    bad = sorted({w for w in words if w in _WRITE_WORDS})
    if bad:
        return (f"the query contains {', '.join(w.upper() for w in bad)}; only read-only "
                "SELECT/WITH queries are run")
    escapes = sorted({w for w in words
                      if w in _ESCAPE_FUNCTIONS or w.startswith(_ESCAPE_PREFIXES)})
    if escapes:
        return (f"the query calls {', '.join(escapes)}, which can act outside a read-only "
                "transaction or the database; use a read-only role and plain SELECTs")
    return None


def load_sql(url: str, query: str, text_column: str, id_column: str | None = None,
             meta_columns: list[str] | None = None, max_rows: int = DEFAULT_MAX_ROWS, *,
             connect_timeout_s: float = 10, query_timeout_s: float = 300) -> Result:
    """One document per row of `query` run against the database at `url` (a SQLAlchemy URL).

    The text comes from `text_column`, the id from `id_column` (else the row number), and
    `meta_columns` are kept in `meta['fields']`. Never raises for a bad URL, driver, database
    or query: those come back as a single problem naming the source with its password hidden.
    `query_timeout_s` bounds the query and the counting of rows past `max_rows` (PostgreSQL
    `statement_timeout`, SQLite's progress handler, and a clock around the fetches), so a
    query that never ends is one problem, not a hang.
    """
    if max_rows < 1:
        raise LadderError(f"max_rows must be at least 1, got {max_rows}")
    meta_columns = list(meta_columns or [])
    source = scrub_url(url)
    secrets: list[str] = []

    def fail(message: str) -> Result:
        return [], [SourceProblem(source, _hide(message, secrets))]

    try:
        sa = require("sqlalchemy", "rag")
    except LadderError as e:
        return fail(str(e))
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.pool import NullPool

    try:
        parsed = sa.engine.make_url(url)
    except Exception as e:  # ArgumentError, ValueError on a malformed port, ...
        return fail(f"not a database URL ({_first_line(e)}); expected e.g. sqlite:///corpus.db "
                    "or postgresql+psycopg://user@host/db")
    if parsed.password:
        secrets.append(str(parsed.password))
    source = parsed.render_as_string(hide_password=True)

    refused = check_read_only(query)
    if refused:
        return fail(f"query refused: {refused}")

    try:
        dialect = parsed.get_dialect()  # loads the dialect plugin: unknown names fail here
        backend, driver = dialect.name, dialect.driver
        connect_args: dict[str, Any] = {}
        if driver in {"psycopg", "psycopg2", "pymysql", "mysqldb", "pg8000"}:
            connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
        engine = sa.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)
    except sa_exc.NoSuchModuleError:
        return fail(f"unknown database driver {parsed.drivername!r}; SQLAlchemy has no dialect "
                    "for it (is its package installed?)")
    except ImportError as e:
        return fail(f"the driver for {parsed.drivername!r} is not installed "
                    f"({_first_line(e)}); pip install it")
    except Exception as e:
        return fail(f"cannot use this database URL: {_first_line(e)}")
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            if not Path(database).is_file():
                engine.dispose()
                return fail(f"SQLite database file {database} does not exist")

    try:
        try:
            conn = engine.connect()
        except Exception as e:
            return fail(f"cannot connect to the database: {_db_message(e)}")
        with conn:
            try:
                tx = conn.begin()
                deadline = time.monotonic() + query_timeout_s
                if backend == "sqlite":
                    conn.exec_driver_sql("PRAGMA query_only = ON")
                    raw = conn.connection.driver_connection
                    # a non-zero return aborts the statement ("interrupted")
                    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                elif backend == "postgresql":
                    conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                    conn.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {max(1, round(query_timeout_s * 1000))}")
                result = conn.execution_options(stream_results=True).exec_driver_sql(query)
                if not result.returns_rows:
                    tx.rollback()
                    return fail("the query returns no rows")
                columns = list(result.keys())
                missing = [c for c in [text_column, id_column, *meta_columns]
                           if c is not None and c not in columns]
                if missing:
                    tx.rollback()
                    return fail(f"no column {', '.join(repr(c) for c in missing)} in the "
                                f"query result (columns: {', '.join(columns)})")
                rows = result.fetchmany(max_rows)
                left_out = 0
                while True:
                    if time.monotonic() > deadline:
                        tx.rollback()
                        return fail(f"the query ran past {query_timeout_s:g} s (counting the "
                                    f"rows past max_rows = {max_rows})")
                    more = result.fetchmany(10_000)
                    if not more:
                        break
                    left_out += len(more)
                tx.rollback()
            except Exception as e:
                return fail(f"query failed: {_db_message(e)}")
    finally:
        engine.dispose()

    docs, problems = _sql_rows(rows, columns, source, text_column, id_column, meta_columns)
    if left_out:
        problems.append(SourceProblem(source, f"{left_out} more row(s) were left out: the query "
                                              f"returned {max_rows + left_out} rows and max_rows "
                                              f"is {max_rows}"))
    for p in problems:
        p.message = _hide(p.message, secrets)
    return docs, problems


def _sql_rows(rows: list[Any], columns: list[str], source: str, text_column: str,
              id_column: str | None, meta_columns: list[str]) -> Result:
    docs: list[Document] = []
    problems: list[SourceProblem] = []
    seen: set[str] = set()
    t_at = columns.index(text_column)
    id_at = columns.index(id_column) if id_column is not None else None
    meta_at = [(c, columns.index(c)) for c in meta_columns]
    for n, row in enumerate(rows, start=1):
        where = f"{source}#row {n}"
        if id_at is None:
            doc_id = f"sql:row{n}"
        else:
            value = row[id_at]
            if value is None:
                problems.append(SourceProblem(where, f"NULL id in {id_column!r}; skipped"))
                continue
            doc_id = f"sql:{_plain(value)}"
            where = f"{source}#{doc_id}"
            if doc_id in seen:
                problems.append(SourceProblem(where, f"id {_plain(value)!r} repeats an earlier "
                                                     f"row's {id_column!r}; skipped"))
                continue
        raw = row[t_at]
        if isinstance(raw, bytes | bytearray | memoryview):
            try:
                raw = bytes(raw).decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(SourceProblem(where, f"{text_column!r} is binary, not UTF-8 "
                                                     f"(byte offset {e.start}); skipped"))
                continue
        text = "" if raw is None else str(raw)
        text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
        if not text:
            what = "NULL" if raw is None else "empty"
            problems.append(SourceProblem(where, f"{what} {text_column!r}; skipped"))
            continue
        seen.add(doc_id)
        meta: dict[str, Any] = {"type": "sql", "url": source, "row": n}
        if meta_at:
            meta["fields"] = {c: _jsonable(row[i]) for c, i in meta_at}
        hidden = hidden_chars(text)
        if hidden:
            meta["hidden_chars"] = hidden
        docs.append(Document(id=doc_id, source=source, text=text, meta=meta))
    return docs, problems


def _db_message(e: BaseException) -> str:
    """The driver's own message (SQLAlchemy's wrapper adds the SQL and a help link)."""
    orig = getattr(e, "orig", None)
    inner = orig if isinstance(orig, BaseException) else e
    text = " ".join(str(inner).split())
    return f"{type(inner).__name__}: {text[:500]}" if text else type(inner).__name__


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def _hide(message: str, secrets: list[str]) -> str:
    message = scrub_url(message)
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), unquote(secret)}:
            if len(form) >= 4:  # the URL forms are scrubbed above; don't mangle short words
                message = message.replace(form, "***")
    return message


def _plain(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, _dt.date | _dt.time | _dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def load_urls(urls: list[str], timeout_s: float = 10, max_bytes: int = 5_000_000,
              allow: list[str] | None = None, parse_timeout_s: float = 60.0,
              parse_memory_mb: int | None = 2048) -> Result:
    """One document per URL that answers 2xx with a supported content type; every other URL
    is reported with the reason. `timeout_s` bounds each URL's fetch, redirects included.
    Hosts that resolve to a non-public address are refused unless `allow` names them (a host
    name, an address or a CIDR network: `["intranet.example", "10.0.0.0/8"]`)."""
    if isinstance(urls, str):
        raise LadderError("load_urls takes a list of URLs, not one string")
    allowed = AllowList(allow or [])
    if timeout_s <= 0 or max_bytes < 1:
        raise LadderError("timeout_s and max_bytes must be positive")
    httpx = require("httpx", "rag")
    docs: list[Document] = []
    problems: list[SourceProblem] = []
    seen: set[str] = set()
    headers = {"User-Agent": "llm-ladder (corpus loader)",
               "Accept": "text/html, text/plain, text/markdown, application/pdf;q=0.9, */*;q=0.1"}
    # trust_env=False: a proxy from the environment would resolve names itself, past the
    # address check
    with httpx.Client(follow_redirects=False, headers=headers, trust_env=False) as client, \
            Extractor(parse_timeout_s, parse_memory_mb) as extractor:
        for url in urls:
            shown = scrub_url(str(url).strip())
            if shown in seen:
                problems.append(SourceProblem(shown, "listed more than once; loaded once"))
                continue
            seen.add(shown)
            doc, problem = _fetch(client, httpx, str(url).strip(), timeout_s, max_bytes,
                                  allowed, extractor)
            if doc is not None:
                docs.append(doc)
            if problem is not None:
                problems.append(SourceProblem(shown, problem))
    return docs, problems


def _http_url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError as e:
        return f"not a valid URL ({e})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return (f"only http and https URLs are loaded; {scheme + '://' if scheme else 'no scheme'}"
                " refused")
    if not parts.hostname:
        return "no host in the URL"
    return None


def _fetch(client: Any, httpx: Any, url: str, timeout_s: float, max_bytes: int,
           allowed: AllowList, extractor: Extractor) -> tuple[Document | None, str | None]:
    bad = _http_url_problem(url)
    if bad:
        return None, bad
    deadline = time.monotonic() + timeout_s
    current, chain = url, []
    try:
        for _ in range(MAX_REDIRECTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, f"timed out after {timeout_s:g} s"
            pinned, extra, refused = _pin(current, allowed)
            if refused:
                return None, (f"{scrub_url(current)} refused: {refused}" if chain else
                              f"refused: {refused}")
            with client.stream("GET", pinned, timeout=remaining, **extra) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    target = urljoin(current, location)
                    bad = _http_url_problem(target)
                    if bad:
                        return None, (f"redirect (HTTP {response.status_code}) to "
                                      f"{scrub_url(target)} refused: {bad}")
                    chain.append(scrub_url(target))
                    current = target
                    continue
                return _read_response(response, url, current, chain, deadline, timeout_s,
                                      max_bytes, extractor)
        return None, f"more than {MAX_REDIRECTS} redirects; gave up at {scrub_url(current)}"
    except httpx.TimeoutException:
        return None, f"timed out after {timeout_s:g} s"
    except httpx.ConnectError as e:
        return None, f"cannot connect: {_first_line(e) or 'connection failed'}"
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError, ValueError) as e:
        return None, f"request failed ({type(e).__name__}: {_first_line(e)})"


IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def public(ip: IP) -> bool:
    """Whether an address is globally routable: not loopback, link-local (cloud metadata at
    169.254.169.254), private, shared (100.64/10), unique-local, multicast, reserved or
    unspecified. IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, NAT64) are judged
    by that address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and not public(inner):
            return False
    return ip.is_global and not ip.is_multicast


class AllowList:
    """Hosts a corpus may fetch from although they are not public: names, addresses, CIDRs."""

    def __init__(self, entries: list[str]):
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = str(entry).strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            except ValueError:
                if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", text):
                    raise LadderError(f"corpus.url_allow: {entry!r} is neither a host name, an "
                                      "address nor a CIDR network") from None
                self.names.add(text.rstrip("."))

    def permits(self, host: str, ip: IP) -> bool:
        if host.lower().rstrip(".") in self.names:
            return True
        inner = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(a in n for n in self.networks for a in (ip, inner) if a is not None
                   and a.version == n.version)


def _pin(url: str, allowed: AllowList) -> tuple[str, dict[str, Any], str | None]:
    """Resolve `url`'s host once and check every address it has; return the URL rewritten to
    the checked address (so the connection cannot be re-resolved elsewhere, DNS rebinding),
    the request's Host header and TLS server name, or why the URL is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return url, {}, f"cannot resolve {host!r} ({e})"
    addresses = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not public(ip) and not allowed.permits(host, ip):
            return url, {}, (f"{host} resolves to {ip}, a non-public (loopback, link-local, "
                             "private, unique-local or multicast) address; list it in "
                             "corpus.url_allow to fetch it")
        addresses.append(ip)
    if not addresses:
        return url, {}, f"cannot resolve {host!r}"
    ip = addresses[0]
    shown = f"[{ip}]" if ip.version == 6 else str(ip)
    netloc = shown + (f":{parts.port}" if parts.port else "")
    pinned = parts._replace(netloc=netloc).geturl()
    host_header = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port
                                                              else "")
    extra: dict[str, Any] = {"headers": {"Host": host_header}}
    if parts.scheme.lower() == "https":
        extra["extensions"] = {"sni_hostname": host}
    return pinned, extra, None


def _read_response(response: Any, url: str, final: str, chain: list[str], deadline: float,
                   timeout_s: float, max_bytes: int,
                   extractor: Extractor) -> tuple[Document | None, str | None]:
    status = response.status_code
    if not 200 <= status < 300:
        reason = f" {response.reason_phrase}" if response.reason_phrase else ""
        return None, f"HTTP {status}{reason}; skipped"
    header = response.headers.get("content-type", "")
    media = header.split(";")[0].strip().lower()
    if not media:
        return None, "no Content-Type header; skipped"
    if media not in HTML_TYPES | TEXT_TYPES | PDF_TYPES:
        return None, (f"unsupported content type {media!r}; only HTML, plain text, markdown "
                      "and PDF are loaded")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return None, (f"body of {int(declared)} bytes is over the size cap of {max_bytes} "
                      "bytes; skipped")
    body = bytearray()
    for piece in response.iter_bytes():
        body += piece
        if len(body) > max_bytes:
            return None, (f"body is over the size cap of {max_bytes} bytes (stopped reading "
                          "there); skipped")
        if time.monotonic() > deadline:
            return None, f"timed out after {timeout_s:g} s while reading the body"
    data = bytes(body)
    meta: dict[str, Any] = {
        "type": "url", "status": status, "content_type": media,
        "fetched_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "bytes": len(data),
    }
    if chain:
        meta["final_url"] = chain[-1]
        meta["redirects"] = chain
    if not data.strip():
        return None, "empty body; skipped"
    if media in PDF_TYPES:
        text, err = extractor.pdf(data, meta)
        if err:
            return None, err
    else:
        charset = (response.charset_encoding or "utf-8").lower()
        try:
            text = data.decode(charset)
        except LookupError:
            return None, f"unknown charset {charset!r}; skipped"
        except UnicodeDecodeError as e:
            return None, f"not valid {charset}: bad byte at offset {e.start}; skipped"
        text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
        if media in HTML_TYPES:
            text, err = extractor.html(text, meta)
            if err:
                return None, err
        text = text.strip()
    if not text.strip():
        return None, "no text after extraction; skipped"
    hidden = hidden_chars(text)
    if hidden:
        meta["hidden_chars"] = hidden
    shown = scrub_url(url)
    return Document(id=shown, source=shown, text=text, meta=meta), None
