"""bench/benchlib.py: the shared parts that keep benchmark tables honest — a section is
rewritten only between its own markers, repeats interleave the variants, and a summary is
median with min and max."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402


def test_a_section_is_rewritten_between_its_markers_only():
    doc = ("# B\nintro 1.0x\n<!-- bench:train -->\nold 1.82x\n<!-- /bench:train -->\n"
           "after\n<!-- bench:serve -->\nkeep\n<!-- /bench:serve -->\n")
    out = benchlib.replace_section(doc, "train", "| new | 1.50x |")
    assert out == ("# B\nintro 1.0x\n<!-- bench:train -->\n| new | 1.50x |\n"
                   "<!-- /bench:train -->\nafter\n<!-- bench:serve -->\nkeep\n"
                   "<!-- /bench:serve -->\n")
    with pytest.raises(SystemExit, match="no <!-- bench:local -->"):
        benchlib.replace_section(doc, "local", "x")


def test_repeats_interleave_the_variants_and_summaries_keep_the_spread():
    order: list[str] = []

    def variant(name: str, value: float):
        def run() -> dict:
            order.append(name)
            return {"v": value + len(order)}
        return run

    runs = benchlib.interleave({"a": variant("a", 0.0), "b": variant("b", 10.0)}, 3,
                               log=lambda _: None)
    assert order == ["a", "b", "a", "b", "a", "b"]
    assert [r["v"] for r in runs["b"]] == [12.0, 14.0, 16.0]
    s = benchlib.spread([3.0, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert benchlib.fmt(s) == "2.0 (1.0–3.0)"


def test_every_marked_section_in_the_docs_has_its_benchmark():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    names = [line.split("bench:")[1].split(" ")[0] for line in doc.splitlines()
             if line.startswith("<!-- bench:")]
    assert names
    bench = Path(__file__).resolve().parents[1] / "bench"
    for name in names:
        assert (bench / f"bench_{name}.py").is_file(), name
        assert f'publish("{name}"' in (bench / f"bench_{name}.py").read_text()
