"""How many deliberately flipped labels the data audit finds (docs/data.md, "Data audit").

Copies examples/construction-faq to a temporary folder, flips 5% of the labels (seeded) to
another label drawn uniformly, runs the audit of `ladder check` (llm_ladder.audit with the
embedded all-MiniLM-L6-v2) and reports precision and recall of the flips among the suspects,
plus precision among the top-k suspects (k = the number of flips), for several seeds. The
unflipped dataset's suspect count is the baseline. Writes the table into docs/data.md between
the bench-audit markers. Run: .venv/bin/python bench/bench_audit.py
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from llm_ladder.audit import audit
from llm_ladder.embedding import Embedder
from llm_ladder.session import prepare
from llm_ladder.task import load_task

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "examples" / "construction-faq"
DOC = ROOT / "docs" / "data.md"
START, END = "<!-- bench-audit:start -->", "<!-- bench-audit:end -->"


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
    seeds = [int(s) for s in sys.argv[1:]] or [0, 1, 2]
    embedder = Embedder()
    lines = ["| data | flipped | suspects | found | precision | recall | precision@k | "
             "seconds |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [None, *seeds]:
            folder = Path(tmp) / f"faq-{seed}"
            flips = flipped_copy(folder, 0.05 if seed is not None else 0.0, seed or 0)
            t0 = time.perf_counter()
            rep = audit(prepare(load_task(folder), skip_bad_rows=True), embedder.embed)
            secs = time.perf_counter() - t0
            ids = [s.id for s in rep.suspects]
            found = len(flips & set(ids))
            k = len(flips)
            name = "original" if seed is None else f"5% flipped, seed {seed}"
            prec = f"{found / len(ids):.2f}" if ids and k else "—"
            rec = f"{found / k:.2f}" if k else "—"
            at_k = f"{len(flips & set(ids[:k])) / k:.2f}" if k else "—"
            lines.append(f"| {name} | {k} | {len(ids)} | {found} | {prec} | {rec} | {at_k} | "
                         f"{secs:.0f} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    text = DOC.read_text(encoding="utf-8")
    if START in text:
        head, rest = text.split(START, 1)
        text = head + START + "\n" + table + "\n" + END + rest.split(END, 1)[1]
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote the table into {DOC}")
    else:
        print(f"no {START} marker in {DOC}; table not written")


if __name__ == "__main__":
    main()
