"""bench/benchlib.py: the shared parts that keep benchmark tables honest — a section is
rewritten only between its own markers, repeats interleave the variants, and a summary is
median with min and max."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import benchlib  # noqa: E402
import run_all  # noqa: E402


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
    published = {n for p in bench.glob("*.py")
                 for n in re.findall(r'publish\(\s*"(\w+)"', p.read_text())}
    for name in names:  # bench/bench_NAME.py, or another script, publishes it
        assert name in published, f"no bench script calls publish({name!r}, ...)"


def test_every_benchmark_publishes_into_its_markers_and_make_bench_runs_it():
    """A benchmark that prints instead of publishing, a section without its markers, or a
    script no tier of bench/run_all.py runs (`make bench`, `make bench-scale`, `make
    bench-quick` all go through it), would leave hand-copied figures."""
    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "benchmarks.md").read_text()
    make = (root / "Makefile").read_text()
    for target, tier in (("bench", "--tier core"), ("bench-scale", "--tier scale"),
                         ("bench-quick", "--quick")):
        body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", make, re.M)
        assert body and f"bench/run_all.py {tier}" in body.group(1), target
    in_tiers = {step[0] for steps in run_all.TIERS.values() for step in steps}
    scripts = sorted(p for p in (root / "bench").glob("*.py")
                     if p.stem not in ("benchlib", "faq_prompts"))
    assert len(scripts) >= 9
    for script in scripts:
        names = re.findall(r'publish\(\s*"(\w+)"', script.read_text())
        assert names, f"{script.name} does not call publish(...)"
        for name in names:
            i, j = doc.find(f"<!-- bench:{name} -->"), doc.find(f"<!-- /bench:{name} -->")
            assert 0 <= i < j, f"docs/benchmarks.md lacks the bench:{name} markers"
        if script.stem in ("bench_vllm", "run_all"):  # vllm: its own venv and target
            continue
        assert script.name in in_tiers, f"no tier of bench/run_all.py runs {script.name}"


def test_a_tier_probes_the_machine_once_and_each_step_reads_it_back(monkeypatch):
    """run_all.py hands its probe to each step: a step must not spend ~10-20 s re-measuring
    bandwidth and matmul speed, and its section must say when they were measured."""
    probed = {"cpu": "Test CPU", "cores": 2, "flags": ["avx2"], "memory_gib": 8.0, "os": "x",
              "bandwidth_gb_s": 30.0, "matmul_gflop_s": {"float32": 150.0},
              "load_avg": [9.0, 9.0, 9.0], "versions": {"python": "3"}}

    def no_probe(*_a, **_k):
        raise AssertionError("probed again")

    monkeypatch.setattr(benchlib, "bandwidth_gb_s", no_probe)
    monkeypatch.setattr(benchlib, "matmul_gflop_s", no_probe)
    monkeypatch.setenv(benchlib.MACHINE_ENV, __import__("json").dumps(probed))
    m = benchlib.machine()
    assert m["bandwidth_gb_s"] == 30.0 and m["load_avg"] != [9.0, 9.0, 9.0]  # load read now
    assert "measured at the start of the tier 30 GB/s" in benchlib.machine_line(m)


def test_a_slow_matmul_probe_stops_at_its_budget():
    """Emulated bf16 (~1 GFLOP/s on a CPU without it) took 14 s of every benchmark's probe:
    the tries stop once the budget is spent."""
    import time

    t0 = time.perf_counter()
    assert benchlib.matmul_gflop_s("float32", n=256, tries=10**6, budget_s=0.2) > 0
    assert time.perf_counter() - t0 < 5


def test_the_memory_benchmarks_trainer_variants_name_their_setting():
    """`trainer[-ckpt][-mN]` in bench_train_memory.py: rows per forward (dividing the batch)
    and gradient checkpointing; any other name is one of ours."""
    import bench_train_memory as btm

    assert btm.trainer_setting("trainer", 8) == (8, False)
    assert btm.trainer_setting("trainer-ckpt", 8) == (8, True)
    assert btm.trainer_setting("trainer-ckpt-m2", 8) == (2, True)
    assert btm.trainer_setting("trainer-m4", 8) == (4, False)
    assert btm.trainer_setting("mem2", 8) is None
    assert btm.trainer_setting("trainer-ckpt-m", 8) is None
    with pytest.raises(SystemExit, match="divide the batch"):
        btm.trainer_setting("trainer-m3", 8)
    assert btm.label("trainer-ckpt-m2", 8) == ("transformers `Trainer` + PEFT, gradient "
                                               "checkpointing, 2 row(s) per forward with "
                                               "gradient accumulation")
