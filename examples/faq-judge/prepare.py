"""Build data/qa.jsonl from ../construction-faq-rag/data/qa.jsonl (zaragoza-construction-faq,
CC BY 4.0), and data/to_label.jsonl: the zero-shot answers of the embedded model to 30
train-split questions, for a person to score 1-5 into data/human_labels.jsonl (docs/judge.md).
Run: python prepare.py            (data/qa.jsonl only)
     python prepare.py --answers  (also data/to_label.jsonl; loads SmolLM2, a few minutes)
"""

import json
import sys
from pathlib import Path

here = Path(__file__).parent
src = here.parent / "construction-faq-rag" / "data" / "qa.jsonl"
(here / "data").mkdir(exist_ok=True)
with src.open(encoding="utf-8") as f, (here / "data" / "qa.jsonl").open("w", encoding="utf-8") as g:
    for line in f:
        row = json.loads(line)
        g.write(json.dumps({"id": row["id"], "input": row["input"], "output": row["output"],
                            "meta": {"category": row["meta"]["category"]}},
                           ensure_ascii=False) + "\n")

if "--answers" in sys.argv:
    from llm_ladder import open_session
    from llm_ladder.rungs.base import get_rung

    s = open_session(here, rungs=["zero-shot"])
    pipe = get_rung("zero-shot").build(s.prep.context())
    train = sorted(s.prep.splits.train, key=lambda e: e.id)[::12][:30]  # spread over categories
    gens = s.model.generate([pipe.prepare(e.input)[0] for e in train], pipe.params)
    with (here / "data" / "to_label.jsonl").open("w", encoding="utf-8") as g:
        for e, gen in zip(train, gens, strict=True):
            g.write(json.dumps({"id": f"label-{e.id}", "input": e.input, "output": e.output,
                                "meta": {"answer": pipe.parse(gen.text), "human_score": None,
                                         "from": f"zero-shot answer to train row {e.id}"}},
                               ensure_ascii=False) + "\n")
    print(f"wrote {len(train)} answers to data/to_label.jsonl")
