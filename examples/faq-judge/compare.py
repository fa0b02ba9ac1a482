"""Token F1, the judge, and prediction-powered intervals on the same stored answers of a judged
run (docs/judge.md).

PPI works with any automatic score as the "prediction": besides the judge, token F1 is used
too, corrected by the human scores of data/human_labels.jsonl (normalised to [0, 1]).
Run: python examples/faq-judge/compare.py [RUN_ID]   (default: the newest finished test run)
"""

import json
import sys
from pathlib import Path

from llm_ladder.metrics import TokenF1
from llm_ladder.ppi import mean_interval, ppi_mean
from llm_ladder.session import open_task
from llm_ladder.stats import mean_quality

here = Path(__file__).parent
task, store = open_task(here)
runs = [r for r in store.list_runs(200) if r["status"] == "done" and r["split"] == "test"]
run = store.get_run(sys.argv[1]) if len(sys.argv) > 1 else runs[0]
preds = store.predictions(run["id"])
s = run["summary"]


def show(name, iv):
    print(f"{name:34s} {iv.value:.3f} [{iv.low:.3f}, {iv.high:.3f}]  ({iv.method})")


f1 = [TokenF1().score(p["output"], p["reference"]).value or 0.0 for p in preds]
print(f"run {run['id']} ({run['rung']}), {len(preds)} test answers")
show("token F1, BCa", mean_quality(f1).interval)
show("token F1, t", mean_interval(f1))
labels = [json.loads(x) for x in (here / "data" / "human_labels.jsonl").read_text().splitlines()]
lo, hi = task.judge.scale
human = [(r["meta"]["human_score"] - lo) / (hi - lo) for r in labels]
f1_lab = [TokenF1().score(r["meta"]["answer"], r["output"]).value or 0.0 for r in labels]
print(f"human scores on {len(labels)} labelled answers: mean {sum(human) / len(human):.3f} "
      f"(normalised); token F1 on them: mean {sum(f1_lab) / len(f1_lab):.3f}")
show("token F1 + humans (PPI)", ppi_mean(f1, f1_lab, human))
q = s["quality"]
print(f"judge, plain: {q.get('value')} ({s['scored']} scored, {s['unscored']} unscored: "
      f"{s['unscored_reasons'] and next(iter(s['unscored_reasons']))[:60]}...)")
j = s["judge"]
print(f"judge + humans (PPI): {j.get('ppi') or j.get('ppi_why')}")
print(f"trust: {j['why']}")
c = s["evaluation_cost"]
print(f"judge cost: {c['judge_calls']} calls, {c['judge_tokens_in']} tokens in, "
      f"{c['judge_tokens_out']} out (evaluation cost, not in the serving cost)")
