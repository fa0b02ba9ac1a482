"""Build data/faq.jsonl from the PyPI package `zaragoza-construction-faq` (CC BY 4.0).

Task: given an English question about Swedish construction rules, name its category
(one of 39 labels). Run: pip install --no-deps zaragoza-construction-faq; python prepare.py
"""

import importlib.util
import json
from pathlib import Path

spec = importlib.util.find_spec("zaragoza_construction_faq")
src = Path(list(spec.submodule_search_locations)[0]) / "data" / "faq-en.jsonl"
out = Path(__file__).parent / "data" / "faq.jsonl"
with src.open(encoding="utf-8") as f, out.open("w", encoding="utf-8") as g:
    for line in f:
        row = json.loads(line)
        g.write(json.dumps({"id": row["id"], "input": row["q"], "output": row["category"],
                            "meta": {"answer": row["a"], "sources": row["sources"]}},
                           ensure_ascii=False) + "\n")
print(f"wrote {out}")
