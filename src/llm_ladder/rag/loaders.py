"""Load a corpus folder (or glob) into `Document`s, reporting every file it skips and why.

Formats: .txt/.md/.markdown as text; .html/.htm through lexbor (`selectolax`, an HTML5
parser in C, linear in its input; text only, script/style/noscript/template dropped, headings
kept as markdown `#` lines); .pdf through `pypdf` (text layer only); PDF and HTML are parsed
in a child process with a time and memory budget per document (`Extractor`), so one hostile
file is reported and skipped instead of hanging or exhausting the run; .csv and .jsonl as
one document per row, the text taken from `text_field` and the other fields kept in `meta`.
A document's id is its path relative to the corpus root, plus `#row N` for rows (N = the CSV
data row, header excluded, or the JSONL line).

Safety: paths are walked without following symlinked folders; a file or link that resolves
outside the root is skipped and reported, as are binary files (a NUL byte in the first 8 KiB),
unreadable and non-regular files, files over `max_bytes`, non-UTF-8 text (with the byte
offset), empty files and broken PDFs; the rest of the corpus still loads. Invisible characters
(zero-width, soft hyphen, bidi controls, tag characters) are kept but counted per code point
in `meta['hidden_chars']`; HTML text inside `hidden`/`display:none` elements is kept and its
length counted in `meta['hidden_html_chars']`. Dotfiles and dot-folders are not walked.
Skipped here: OCR, .docx and other office formats, SQL and URL sources, language detection.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.workers import stop_worker

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_PARSE_TIMEOUT_S = 60.0
DEFAULT_PARSE_MEMORY_MB = 2048
STARTUP_TIMEOUT_S = 120.0
BINARY_SNIFF = 8192
TEXT_SUFFIXES = {".txt", ".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
ROW_SUFFIXES = {".csv", ".jsonl"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | ROW_SUFFIXES | {".pdf"}

# Characters that render as nothing but can carry text past a human reviewer.
_HIDDEN_RANGES = [(0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x2069),
                  (0xFEFF, 0xFEFF), (0x00AD, 0x00AD), (0x180E, 0x180E), (0xE0000, 0xE007F)]
_HIDDEN_RE = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _HIDDEN_RANGES) + "]")


@dataclass
class Document:
    id: str
    source: str  # path relative to the corpus root, POSIX style
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceProblem:
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class Corpus:
    root: Path
    documents: list[Document]
    problems: list[SourceProblem]


def hidden_chars(text: str) -> dict[str, int]:
    """Counts of invisible characters in `text`, keyed 'U+200B' etc.; empty when there are none."""
    counts = Counter(f"U+{ord(c):04X}" for c in _HIDDEN_RE.findall(text))
    return dict(sorted(counts.items()))


def load_corpus(spec: str | Path, include: str | list[str] | None = None, *,
                text_field: str = "text", max_bytes: int = DEFAULT_MAX_BYTES,
                parse_timeout_s: float = DEFAULT_PARSE_TIMEOUT_S,
                parse_memory_mb: int | None = DEFAULT_PARSE_MEMORY_MB) -> Corpus:
    """Load a folder, a single file, or a glob such as `docs/**/*.md`.

    `include` (glob patterns relative to the root, default `**/*`) is only allowed when `spec`
    is a folder. A root that does not exist is a LadderError; everything else is reported as
    a `SourceProblem` in the result.
    """
    root, patterns = _split_spec(Path(spec), include)
    problems: list[SourceProblem] = []
    documents: list[Document] = []
    real_root = root.resolve()
    regexes = []
    for pattern in patterns:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            problems.append(SourceProblem(pattern, "pattern leaves the corpus root; skipped"))
        else:
            regexes.append(_glob_regex(pattern))
    matched = 0
    with Extractor(parse_timeout_s, parse_memory_mb) as extractor:
        for path, rel in _walk(root, real_root, problems):
            if not any(r.fullmatch(rel) for r in regexes):
                continue
            matched += 1
            docs, probs = _load_file(path, rel, real_root, text_field, max_bytes, extractor)
            documents.extend(docs)
            problems.extend(probs)
    if matched == 0 and regexes:
        problems.append(SourceProblem(str(root), "no files matched " + ", ".join(patterns)))
    return Corpus(root=root, documents=documents, problems=problems)


def _split_spec(spec: Path, include: str | list[str] | None) -> tuple[Path, list[str]]:
    parts = spec.parts
    glob_at = next((i for i, p in enumerate(parts) if any(c in p for c in "*?[")), None)
    if glob_at is not None:
        if include is not None:
            raise LadderError(f"give either a glob ({spec}) or include patterns, not both")
        root = Path(*parts[:glob_at]) if glob_at else Path(".")
        pattern = "/".join(parts[glob_at:])
        patterns = [pattern]
    elif spec.is_dir():
        root = spec
        patterns = [include] if isinstance(include, str) else list(include or ["**/*"])
    elif spec.is_file() or spec.is_symlink():
        if include is not None:
            raise LadderError(f"{spec} is a file; include patterns need a folder")
        root, patterns = spec.parent, [spec.name]
    else:
        raise LadderError(f"corpus path {spec} does not exist")
    if not root.is_dir():
        raise LadderError(f"corpus root {root} is not a folder")
    return root, patterns


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob with `**` (any number of folders), `*`, `?` and `[...]`, matched on POSIX paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _walk(root: Path, real_root: Path, problems: list[SourceProblem]):
    """Yield (path, relative POSIX path) of non-hidden files, sorted; never enter symlinked
    folders (reporting the ones that lead outside the root)."""
    def onerror(err: OSError) -> None:
        problems.append(SourceProblem(_rel(Path(err.filename or root), root),
                                      f"cannot read folder: {err.strerror}"))

    for folder, dirs, files in os.walk(root, followlinks=False, onerror=onerror):
        here = Path(folder)
        keep = []
        for d in sorted(dirs):
            if d.startswith("."):
                continue
            if (here / d).is_symlink():
                target = (here / d).resolve()
                if not target.is_relative_to(real_root):
                    problems.append(SourceProblem(_rel(here / d, root),
                                                  "symlinked folder leads outside the corpus "
                                                  "root; skipped"))
                continue  # a link inside the root is walked at its real place
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name, _rel(here / name, root)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_bytes(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit + 1)


def _load_file(path: Path, rel: str, real_root: Path, text_field: str, max_bytes: int,
               extractor: Extractor) -> tuple[list[Document], list[SourceProblem]]:
    def problem(message: str) -> tuple[list[Document], list[SourceProblem]]:
        return [], [SourceProblem(rel, message)]

    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        return problem(f"cannot read: {getattr(e, 'strerror', None) or e}")
    if not real.is_relative_to(real_root):
        return problem(f"resolves outside the corpus root ({real}); skipped")
    try:
        st = os.stat(real)
    except OSError as e:
        return problem(f"cannot read: {e.strerror}")
    if not stat.S_ISREG(st.st_mode):
        return problem("not a regular file; skipped")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        return problem(f"unsupported file type {suffix or '(none)'!r}; skipped")
    if st.st_size > max_bytes:
        return problem(f"{st.st_size} bytes is over the size cap of {max_bytes} bytes; skipped")
    try:
        data = _read_bytes(real, max_bytes)
    except OSError as e:
        return problem(f"cannot read: {e.strerror or e}")
    if len(data) > max_bytes:
        return problem(f"over the size cap of {max_bytes} bytes; skipped")
    if not data.strip():
        return problem("empty file; skipped")
    meta: dict[str, Any] = {"path": str(real), "bytes": len(data), "type": suffix[1:]}
    if suffix == ".pdf":
        text, err = extractor.pdf(data, meta)
        if err:
            return problem(err)
    else:
        nul = data.find(b"\0", 0, BINARY_SNIFF)
        if nul >= 0:
            return problem(f"binary file (NUL byte at offset {nul}); skipped")
        offset = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        try:
            text = data[offset:].decode("utf-8")
        except UnicodeDecodeError as e:
            bad = data[offset + e.start]
            return problem(f"not UTF-8: byte 0x{bad:02x} at byte offset {offset + e.start}; "
                           "convert the file to UTF-8")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if suffix in ROW_SUFFIXES:
        rows = _csv_rows if suffix == ".csv" else _jsonl_rows
        return rows(text, rel, text_field, meta)
    if suffix in HTML_SUFFIXES:
        text, err = extractor.html(text, meta)
        if err:
            return problem(err)
    if not text.strip():
        return problem("no text after extraction; skipped")
    return [_document(rel, rel, text, meta)], []


def _document(doc_id: str, source: str, text: str, meta: dict[str, Any]) -> Document:
    meta = dict(meta)
    hidden = hidden_chars(text)
    if hidden:
        meta["hidden_chars"] = hidden
    return Document(id=doc_id, source=source, text=text, meta=meta)


def _pdf_text(data: bytes, meta: dict[str, Any]) -> tuple[str, str | None]:
    pypdf = require("pypdf", "rag")
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            return "", "encrypted PDF; skipped"
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as e:  # pypdf raises many kinds on malformed input
        return "", f"broken PDF ({type(e).__name__}: {e}); skipped"
    starts, text = [], ""
    for page in pages:
        if text:
            text += "\n\n"
        starts.append(len(text))
        text += page.strip()
    meta["pages"] = len(pages)
    meta["page_starts"] = starts
    if not text.strip():
        return "", f"no text layer in {len(pages)} page(s) (scanned? OCR is not supported)"
    return text, None


class Extractor:
    """PDF and HTML to text in a child process with a time and a memory budget per document.

    A PDF can loop or decompress into gigabytes, and a parser bug can make any page slow; so
    the parsing runs in one long-lived `spawn`ed child (address space capped with
    RLIMIT_AS at `memory_mb`), and a document not done within `timeout_s` has the child
    killed and is reported and skipped; the next document gets a fresh child. Plain text,
    CSV and JSONL are parsed in-process: their parsers are linear. The child starts on the
    first PDF or HTML document, so a corpus without any costs nothing."""

    def __init__(self, timeout_s: float = DEFAULT_PARSE_TIMEOUT_S,
                 memory_mb: int | None = DEFAULT_PARSE_MEMORY_MB):
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._proc: Any = None
        self._conn: Any = None

    def pdf(self, data: bytes, meta: dict[str, Any]) -> tuple[str, str | None]:
        return self._run("pdf", data, meta)

    def html(self, text: str, meta: dict[str, Any]) -> tuple[str, str | None]:
        return self._run("html", text, meta)

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_extract_worker, args=(child, self.memory_mb),
                                 name="ladder-extract", daemon=True)
        self._proc.start()
        child.close()
        # the parsers are imported before the first budget starts ticking
        if not self._conn.poll(STARTUP_TIMEOUT_S):
            self.close()
            raise LadderError(f"the document parser process did not start within "
                              f"{STARTUP_TIMEOUT_S:g} s")
        try:
            ready = self._conn.recv()
        except EOFError:
            ready = f"it exited with code {self._proc.join(5) or self._proc.exitcode}"
        if ready is not True:
            self.close()
            raise LadderError(f"the document parser process failed to start: {ready}")

    def _run(self, kind: str, payload: bytes | str, meta: dict[str, Any]
             ) -> tuple[str, str | None]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send((kind, payload))
            ready = self._conn.poll(self.timeout_s)
            result = self._conn.recv() if ready else None
        except (EOFError, OSError):  # the child died (out of memory, a crash in C)
            code = self._proc.exitcode if self._proc is not None else None
            self.close()
            return "", f"the {kind.upper()} parser crashed (exit code {code}); skipped"
        if result is None:
            self.close()
            return "", (f"{kind.upper()} parsing took over {self.timeout_s:g} s "
                        "(corpus.parse_timeout_s); skipped")
        text, delta, err = result
        meta.update(delta)
        return text, err

    def close(self) -> None:
        stop_worker(self._proc, self._conn)
        self._proc = self._conn = None

    def __enter__(self) -> Extractor:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _extract(kind: str, payload: Any) -> tuple[str, dict[str, Any], str | None]:
    meta: dict[str, Any] = {}
    try:
        if kind == "pdf":
            text, err = _pdf_text(payload, meta)
        else:
            text, err = html_to_text(payload, meta), None
    except MemoryError:
        return "", {}, "over the parser's memory cap (corpus.parse_memory_mb); skipped"
    except LadderError as e:
        return "", {}, str(e)
    except Exception as e:  # a parser bug: report this document, keep the rest
        return "", {}, f"{kind.upper()} parsing failed ({type(e).__name__}: {e}); skipped"
    return text, meta, err


def _extract_worker(conn: Any, memory_mb: int | None) -> None:
    """The child's loop: (kind, payload) in, (text, meta, error) out, until the pipe closes."""
    if memory_mb:
        try:
            import resource

            cap = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        except (ImportError, ValueError, OSError):  # not POSIX, or a lower hard limit
            pass
    try:
        require("pypdf", "rag")
        require("selectolax.lexbor", "rag")
    except LadderError as e:
        conn.send(str(e))
        return
    conn.send(True)
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_extract(kind, payload))


def _csv_rows(text: str, rel: str, text_field: str,
              meta: dict[str, Any]) -> tuple[list[Document], list[SourceProblem]]:
    reader = csv.DictReader(io.StringIO(text))
    if text_field not in (reader.fieldnames or []):
        return [], [SourceProblem(rel, f"no column {text_field!r} "
                                       f"(columns: {', '.join(reader.fieldnames or [])})")]
    docs, problems = [], []
    try:
        for n, row in enumerate(reader, start=1):
            src = f"{rel}#row {n}"
            value = (row.get(text_field) or "").strip()
            if not value:
                problems.append(SourceProblem(src, f"empty {text_field!r}; skipped"))
                continue
            extra = {k: v for k, v in row.items() if k != text_field and k is not None}
            docs.append(_document(src, rel, value, {**meta, "row": n, "fields": extra}))
    except csv.Error as e:
        problems.append(SourceProblem(rel, f"CSV error at line {reader.line_num}: {e}; "
                                           "the rest of the file is skipped"))
    return docs, problems


def _jsonl_rows(text: str, rel: str, text_field: str,
                meta: dict[str, Any]) -> tuple[list[Document], list[SourceProblem]]:
    docs, problems = [], []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        src = f"{rel}#row {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(SourceProblem(src, f"invalid JSON ({e.msg}); skipped"))
            continue
        value = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(value, str) or not value.strip():
            problems.append(SourceProblem(src, f"no non-empty string field {text_field!r}; "
                                               "skipped"))
            continue
        extra = {k: v for k, v in row.items() if k != text_field}
        docs.append(_document(src, rel, value.strip(), {**meta, "row": n, "fields": extra}))
    return docs, problems


_SKIP_TAGS = {"script", "style", "noscript", "template", "head", "_comment"}
_BLOCK_TAGS = {"p", "div", "section", "article", "header", "footer", "main", "nav", "aside",
               "ul", "ol", "table", "blockquote", "pre", "figure", "form", "title", "dl"}
_LINE_TAGS = {"br", "li", "tr", "dt", "dd", "hr"}
_SPACES = re.compile(r"\s+")
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def html_to_text(html: str, meta: dict[str, Any]) -> str:
    """Visible text of an HTML page; hidden-element text length goes into `meta`.

    Parsed by lexbor (selectolax), an HTML5 parser in C that is linear in the input, then
    walked with an explicit stack (no recursion, so any depth of nesting is fine)."""
    lexbor = require("selectolax.lexbor", "rag")
    tree = lexbor.LexborHTMLParser(html)
    parts: list[str] = []
    title = tree.css_first("head > title")
    if title is not None and title.text(deep=True).strip():
        parts.append("\n\n" + re.sub(r"\s+", " ", title.text(deep=True)).strip() + "\n\n")
    hidden_chars = 0
    root = tree.body if tree.body is not None else tree.root
    # (node, leaving, hidden, pre): entering a node emits its opening break and pushes its
    # children; leaving it emits the closing break
    stack: list[tuple[Any, bool, bool, bool]] = [(root, False, False, False)] if root else []
    while stack:
        node, leaving, hidden, pre = stack.pop()
        tag = node.tag
        if leaving:
            if tag in _BLOCK_TAGS or tag in _HEADINGS:
                parts.append("\n\n")
            continue
        if tag == "-text":
            data = node.text_content or ""
            if not pre:
                data = _SPACES.sub(" ", data)
            if hidden:
                hidden_chars += len(data.strip())
            parts.append(data)
            continue
        if tag in _SKIP_TAGS:
            continue
        if tag in _BLOCK_TAGS:
            parts.append("\n\n")
        elif tag in _LINE_TAGS:
            parts.append("\n")
        elif tag in _HEADINGS:
            parts.append("\n\n" + "#" * _HEADINGS[tag] + " ")
        attrs = node.attributes
        hidden = hidden or "hidden" in attrs or bool(_HIDDEN_STYLE.search(attrs.get("style")
                                                                          or ""))
        pre = pre or tag == "pre"
        stack.append((node, True, hidden, pre))
        children = list(node.iter(include_text=True))
        stack.extend((c, False, hidden, pre) for c in reversed(children))
    if hidden_chars:
        meta["hidden_html_chars"] = hidden_chars
    lines = [line.strip() for line in "".join(parts).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
