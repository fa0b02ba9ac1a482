"""How many deliberately flipped labels the data audit finds (docs/data.md, "Data audit").

Copies examples/construction-faq to a temporary folder, flips 5% of the labels (seeded) to
another label drawn uniformly, runs the audit of `ladder check` (llm_ladder.audit with the
embedded all-MiniLM-L6-v2) and reports precision and recall of the flips among the suspects,
plus precision among the top-k suspects (k = the number of flips). The repeats are seeds
(different flips), alternated with audits of the unflipped data (the baseline: its suspects
are label ambiguity, not noise); every figure is the median (min-max) over the repeats, and
each row of the per-run table is kept. Peak RSS is the process's.
Skipped: other tasks and noise rates (one FAQ, 5%), and the audit checks that need no
embedder (tests/test_audit*.py cover them).

    python bench/bench_audit.py [--seeds 0,1,2] [--quick]

Results: bench/results/audit.json and its section of docs/benchmarks.md (benchlib).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "examples" / "construction-faq"

from benchlib import fmt, interleave, machine, peak_rss_mib, publish, spread  # noqa: E402


def flipped_copy(folder: Path, share: float, seed: int) -> set[str]:
    """Copy the FAQ task into `folder` with `share` of its labels flipped; the flipped ids."""
    shutil.copytree(SRC, folder, ignore=shutil.ignore_patterns(".ladder"))
    path = folder / "data" / "faq.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    labels = sorted({r["output"] for r in rows})
    rng = random.Random(seed)
    chosen = rng.sample(range(len(rows)), round(share * len(rows)))
    for i in chosen:
        rows[i]["output"] = rng.choice([lab for lab in labels if lab != rows[i]["output"]])
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return {rows[i]["id"] for i in chosen}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2", help="one repeat per seed")
    ap.add_argument("--share", type=float, default=0.05, help="share of labels flipped")
    ap.add_argument("--quick", action="store_true", help="one seed, no baseline, no docs")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        seeds = seeds[:1]
    m = machine()

    from llm_ladder.audit import audit
    from llm_ladder.embedding import Embedder
    from llm_ladder.session import prepare
    from llm_ladder.task import load_task

    embedder = Embedder()
    embedder.embed(["warm up"])
    tmp = Path(tempfile.mkdtemp(prefix="ladder-bench-audit-"))
    seed_iter, base_iter = iter(seeds), iter(range(len(seeds)))

    def run(share: float, seed: int, folder: Path) -> dict:
        flips = flipped_copy(folder, share, seed)
        t0 = time.perf_counter()
        rep = audit(prepare(load_task(folder), skip_bad_rows=True), embedder.embed)
        secs = time.perf_counter() - t0
        ids = [s.id for s in rep.suspects]
        k, found = len(flips), len(flips & set(ids))
        return {"seed": seed, "flipped": k, "suspects": len(ids), "found": found,
                "precision": found / len(ids) if ids and k else None,
                "recall": found / k if k else None,
                "precision_at_k": len(flips & set(ids[:k])) / k if k else None,
                "seconds": secs}

    def flipped() -> dict:
        seed = next(seed_iter)
        return run(args.share, seed, tmp / f"flipped-{seed}")

    def original() -> dict:
        return run(0.0, 0, tmp / f"original-{next(base_iter)}")

    variants = {"original": original, "flipped": flipped}
    if args.quick:
        variants.pop("original")
    try:
        runs = interleave(variants, len(seeds))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fl = runs["flipped"]
    summary = {k: spread([r[k] for r in fl]) for k in ("suspects", "found", "precision",
                                                         "recall", "precision_at_k", "seconds")}
    if "original" in runs:
        summary["original_suspects"] = spread([r["suspects"] for r in runs["original"]])
        summary["original_seconds"] = spread([r["seconds"] for r in runs["original"]])
    summary["peak_rss_mib"] = peak_rss_mib()

    def cell(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    k = fl[0]["flipped"]
    lines = [
        f"A copy of `examples/construction-faq` with {args.share:.0%} of its labels ({k}) "
        "flipped to another label drawn uniformly (seeded), audited as `ladder check` does; "
        "the unflipped copy is the baseline, audited between the seeds. *found* = flipped "
        "examples among the suspects; precision = found / suspects, recall = found / "
        f"flipped; precision@k looks only at the first k = {k} suspects of the ranked queue.",
        "",
        "| data | flipped | suspects | found | precision | recall | precision@k | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    if "original" in runs:
        lines.append(f"| original (baseline, {len(runs['original'])} runs) | 0 | "
                     f"{fmt(summary['original_suspects'], 0)} | 0 | — | — | — | "
                     f"{fmt(summary['original_seconds'], 0)} |")
    for r in fl:
        lines.append(f"| {args.share:.0%} flipped, seed {r['seed']} | {r['flipped']} | "
                     f"{r['suspects']} | {r['found']} | {cell(r['precision'])} | "
                     f"{cell(r['recall'])} | {cell(r['precision_at_k'])} | "
                     f"{r['seconds']:.0f} |")
    lines.append(f"| **median (min–max) of {len(fl)} seeds** | {k} | "
                 f"{fmt(summary['suspects'], 0)} | {fmt(summary['found'], 0)} | "
                 f"**{fmt(summary['precision'], 2)}** | **{fmt(summary['recall'], 2)}** | "
                 f"**{fmt(summary['precision_at_k'], 2)}** | {fmt(summary['seconds'], 0)} |")
    lines += ["", f"Peak RSS {summary['peak_rss_mib']:.0f} MiB."]
    publish("audit", {"args": vars(args), "runs": runs, "summary": summary}, "\n".join(lines),
            m, write_docs=not args.quick)


if __name__ == "__main__":
    main()
