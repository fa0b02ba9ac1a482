"""Property-based tests (Hypothesis) of the four parsers that read untrusted text: the
example-file parser, the chunker, the tool-call parser and the citation parser. Arbitrary
bytes and strings never crash them, never lose a good row or a planted call/citation, and
never produce an empty chunk. `EXAMPLES` cases per property; docs/reliability.md reports the
total (the sum over the properties below)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_ladder.data import load_examples
from llm_ladder.rag.chunking import fixed_chunks, structured_chunks, tokens_from_callable
from llm_ladder.rag.loaders import Document
from llm_ladder.rag.rag_metrics import citations
from llm_ladder.tools.calls import parse_calls

EXAMPLES = 150
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# text with the characters that matter to these parsers well represented
TRICKY = st.text(alphabet=st.sampled_from(list("{}[]\",:;#\n\r\t *-_`<>!()\\")
                                          + ["\u200b", "\u00e9", "\x00", "a", "1", " "]),
                 max_size=200)
TEXT = st.one_of(st.text(max_size=300), TRICKY)


def _garbage_line(raw: bytes) -> bytes:
    """A line that is not a JSON object (so it cannot set the file's row format)."""
    raw = raw.replace(b"\n", b" ").replace(b"\r", b" ")
    try:
        if isinstance(json.loads(raw), dict):
            return b"not a row"
    except (ValueError, UnicodeDecodeError):
        pass
    return raw


@FAST
@given(garbage=st.lists(st.one_of(st.binary(max_size=80), TEXT.map(str.encode)),
                        max_size=8),
       good=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=6))
def test_example_parser_keeps_every_good_row(garbage: list[bytes],
                                             good: list[tuple[str, str]]) -> None:
    # good = the validator's rules: non-empty after stripping (empty content is a problem)
    rows = [{"id": f"good{i}", "input": i_ if i_.strip() else "x",
             "output": o if o.strip() else "y"} for i, (i_, o) in enumerate(good)]
    lines = [json.dumps(r).encode() for r in rows]
    mixed: list[bytes] = []
    for i, line in enumerate(lines):  # garbage before, between and after the good rows
        mixed += [_garbage_line(g) for g in garbage[i::len(lines)]] + [line]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_bytes(b"\n".join(mixed) + b"\n")
        result = load_examples(path)
    assert [e.id for e in result.examples] == [r["id"] for r in rows]
    assert [(e.input, e.output) for e in result.examples] == \
        [(r["input"], r["output"]) for r in rows]
    bad = [g for g in mixed if not _blank(g) and g not in lines]
    assert len(result.problems) == len(bad)  # every bad line is reported, with its line
    assert all(p.line >= 1 for p in result.problems)


def _blank(line: bytes) -> bool:
    """Skipped by the parser: blank once decoded (str.strip knows Unicode whitespace)."""
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


WORDS = tokens_from_callable(lambda s: len(s.split()))


@FAST
@given(text=TEXT, max_tokens=st.integers(4, 40), overlap=st.integers(0, 3),
       structured=st.booleans())
def test_chunker_never_crashes_or_makes_an_empty_chunk(text: str, max_tokens: int,
                                                        overlap: int, structured: bool) -> None:
    doc = Document(id="d", source="d", text=text)
    chunk = structured_chunks if structured else fixed_chunks
    chunks = chunk([doc], WORDS, max_tokens, overlap)
    for c in chunks:
        assert c.text.strip(), "an empty chunk"
        assert c.text in text
        assert WORDS.count(c.text) <= max_tokens
    # every word of the document is in some chunk: nothing is lost
    covered = " ".join(c.text for c in chunks).split()
    assert set(text.split()) <= set(covered)


CALL = st.fixed_dictionaries({
    "name": st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12),
    "arguments": st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), TEXT),
                                 max_size=3)})
NO_BRACES = st.text(max_size=120).map(lambda s: s.replace("{", "").replace("[", ""))


@FAST
@given(text=TEXT)
def test_call_parser_never_crashes(text: str) -> None:
    for c in parse_calls(text):
        assert isinstance(c["name"], str) and c["name"]


@FAST
@given(before=NO_BRACES, call=CALL, after=st.text(max_size=120))
def test_call_parser_finds_a_planted_call(before: str, call: dict, after: str) -> None:
    found = parse_calls(before + json.dumps(call) + after)
    assert found and found[0] == call


@FAST
@given(text=TEXT, n=st.integers(1, 999))
def test_citation_parser(text: str, n: int) -> None:
    got = citations(text)
    assert all(isinstance(x, int) for x in got) and len(got) == len(set(got))
    assert n in citations(text + f" [{n}]")
