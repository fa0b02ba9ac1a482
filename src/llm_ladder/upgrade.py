"""The upgrade re-climb: `ladder upgrade TASK --from OLD --to NEW` as a library call.

`upgrade` finds the newest ladder climbed on model `OLD` in the run store (runs grouped by
`ladder_id`), re-derives its recommendation from the stored summaries and predictions (the
run store keeps summaries, not verdicts: `decide` is re-run on them, the way `ladder report`
does), and re-runs on model `NEW` the recommended rung and every cheaper rung that ran before
it (ladder order is cheapest first; with no rung meeting the bar, every rung of the ladder), on
the same test split — a different split hash is refused, because the data changed. A rung
that trains is re-tuned on the new base with the same recipe by passing `base_key=NEW` to
`run_rung`, the same route `ladder tune --base` takes: the tuned rung itself resolves its base
(`key = base_key or [finetune] base`, rungs/finetune.py) and the adapter id changes with the
base fingerprint, so the rule "which weights are tuned" stays in one place.

The answer: the old and the new recommendation and what changed between them, per rung the
paired test of the old-model run against the new-model run on the same test examples
(`decide.pair`, the test the decision uses) with the examples fixed and broken (correct as
the report counts it: score ≥ 0.5, a failed generation is wrong), and the new cost per 1000
requests. The new runs form a ladder of their own in the store (`ladder report NEW_LADDER`),
and a small record of the upgrade goes to the store's `upgrades` table (m005) for the
report's upgrade history.

Skipped: re-running rungs that were not run in the old ladder, multi-model re-climbs (only the
cells on `OLD` are re-run, as single-model rungs on `NEW`), and an up-front check that `NEW`
can be tuned (the tuned rung refuses a non-local base itself, after the cheaper rungs ran and
were stored).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.decide import correct, pair
from llm_ladder.errors import LadderError
from llm_ladder.ladder import Event, Progress, recommend, run_rung
from llm_ladder.metrics import build_metric
from llm_ladder.report import ladder_runs
from llm_ladder.rungs.base import needs_of
from llm_ladder.session import open_session, open_task, prepare
from llm_ladder.stats import counted_score
from llm_ladder.store import Store
from llm_ladder.task import Task


@dataclass
class UpgradeResult:
    """What `ladder upgrade` answers (`to_dict()` is its `--json` document)."""

    id: str
    task: str
    from_model: str
    to_model: str
    old_ladder: str
    new_ladder: str
    split: str
    old_recommendation: dict[str, Any]
    new_recommendation: dict[str, Any]
    changed: bool
    verdict: str
    rungs: list[dict[str, Any]] = field(default_factory=list)
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def previous_ladder(store: Store, task_name: str, model_key: str,
                    ladder_id: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(ladder id, finished runs in ladder order) of the newest ladder with a finished run on
    `model_key`, or of `ladder_id`; a clear error when there is none."""
    if ladder_id is None:
        row = store.db.execute(
            "SELECT ladder_id FROM runs WHERE task=? AND model=? AND status='done' AND "
            "ladder_id IS NOT NULL AND split='test' ORDER BY created DESC LIMIT 1",
            (task_name, model_key)).fetchone()
        if row is None:
            raise LadderError(f"{task_name}: no ladder was climbed on model {model_key!r} in "
                              f"{store.path}; run `ladder run TASK_DIR --model {model_key}` "
                              "first (`ladder runs` lists what is stored)")
        ladder_id = row["ladder_id"]
    ident, runs = ladder_runs(store, ladder_id)
    mine = [r for r in runs if r["model"] == model_key and r["split"] == "test"]
    if not mine:
        raise LadderError(f"ladder {ident} has no finished test run on model {model_key!r}")
    return ident, runs


def _summaries(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["summary"] | {"run_id": r["id"], "rung": r["rung"], "model": r["model"]}
            for r in runs]


def _base_rung(run: dict[str, Any]) -> str:
    """The rung's own name (a multi-model ladder names its rows `rung@model`)."""
    return (run.get("summary") or {}).get("base_rung") or (run.get("config") or {}).get(
        "rung") or run["rung"]


def to_rerun(runs: list[dict[str, Any]], recommended: str | None,
             model_key: str) -> list[dict[str, Any]]:
    """The runs on `model_key` up to and including the recommended one (ladder order is
    cheapest first); every run on `model_key` when nothing was recommended, or when the
    recommended cell is on another model."""
    mine = [r for r in runs if r["model"] == model_key]
    names = [r["rung"] for r in mine]
    if recommended in names:
        return mine[: names.index(recommended) + 1]
    return mine


def example_changes(old: list[dict[str, Any]], new: list[dict[str, Any]],
                    metric: Any = None) -> dict[str, Any]:
    """Per example, old-model run vs new-model run on the test examples both hold: fixed
    (wrong before, correct now), broken (correct before, wrong now), with their ids.
    Correct as the report counts it (score ≥ 0.5); a failed generation counts as wrong;
    an example unscored in either run is left out."""
    a = {p["example_id"]: counted_score(p, metric) for p in old}
    b = {p["example_id"]: counted_score(p, metric) for p in new}
    fixed, broken, both = [], [], 0
    for i in sorted(set(a) & set(b)):
        ca, cb = correct(a[i]), correct(b[i])
        if ca is None or cb is None:
            continue
        both += 1
        if cb and not ca:
            fixed.append(i)
        elif ca and not cb:
            broken.append(i)
    return {"paired": both, "fixed": len(fixed), "broken": len(broken),
            "fixed_ids": fixed, "broken_ids": broken}


def _rec_doc(rec: dict[str, Any]) -> dict[str, Any]:
    return {"rung": rec.get("rung"), "closest": rec.get("closest"),
            "meets_bar": bool(rec.get("meets_bar")), "reason": rec.get("reason", "")}


def verdict(old: dict[str, Any], new: dict[str, Any], new_runs: dict[str, dict[str, Any]],
            old_runs: dict[str, dict[str, Any]], order: list[str],
            from_key: str, to_key: str) -> tuple[bool, str]:
    """(did the recommendation change, one sentence saying how). Rungs are named by their
    own name; `order` is the ladder order (cheapest first)."""
    o, n = old.get("rung"), new.get("rung")
    if o is None and n is None:
        return False, (f"No rung meets the bar on {to_key}, as none did on {from_key}; the "
                       f"closest is {new.get('closest')}.")
    if o is None:
        return True, (f"{n} on {to_key} now meets the bar, where no rung did on {from_key}: "
                      f"ship {n} on {to_key}.")
    if n is None:
        return True, (f"Nothing re-run meets the bar on {to_key} (closest "
                      f"{new.get('closest')}), where {o} did on {from_key}: keep {o} on "
                      f"{from_key}; do not upgrade.")
    if n == o:
        return False, f"{o} still meets the bar on {to_key}: ship {o} on {to_key}."
    retire = ""
    one = (old_runs.get(o, {}).get("summary") or {}).get("one_time") or {}
    if one.get("seconds") and not (new_runs.get(n, {}).get("summary") or {}).get("one_time"):
        retire = (f": retire the {o} rung, saving its retraining "
                  f"({one['seconds'] / 60:.1f} min on {from_key}) at every base upgrade")
    cheaper = order.index(n) < order.index(o) if n in order and o in order else False
    how = "now meets the bar" if cheaper else "is now the recommendation"
    return True, f"{n} on the new base {to_key} {how}, where {o} was needed on {from_key}" \
        + (retire or f": ship {n} on {to_key}") + "."


def upgrade(task: Task | str | Path, from_key: str, to_key: str, *,
            ladder_id: str | None = None, on_progress: Progress | None = None,
            on_event: Event | None = None, status: Any = None,
            on_rung: Callable[[dict[str, Any]], None] | None = None) -> UpgradeResult:
    """Re-run the newest ladder climbed on `from_key` (or `ladder_id`) on `to_key` and say
    what changed; see the module text. The record is stored (`Store.upgrades`)."""
    if from_key == to_key:
        raise LadderError("--from and --to name the same model; name the new base in --to")
    task, store = open_task(task)
    task.model(to_key)  # an unknown key fails here, before anything runs
    old_id, runs = previous_ladder(store, task.name, from_key, ladder_id)
    prep = prepare(task, skip_bad_rows=True)
    split = prep.split_hash()
    stale = sorted({str((r.get("config") or {}).get("split")) for r in runs} - {split})
    if stale:
        raise LadderError(f"ladder {old_id} ran on test split {', '.join(stale)}, but the task's "
                          f"split is now {split}: the data changed, so the old and new runs "
                          "cannot be compared example by example; climb again with "
                          f"`ladder run TASK_DIR --model {from_key}` first")
    base_rows = prep.baselines()
    old_rec = recommend(task, _summaries(runs), store, baseline_rows=base_rows,
                        capped_test=prep.splits.capped_test)
    chosen = old_rec.get("rung")
    rerun = to_rerun(runs, chosen, from_key)
    names = [_base_rung(r) for r in rerun]
    s = open_session(task, to_key, names, skip_bad_rows=True, status=status)
    assert s.model is not None
    new_id = uuid.uuid4().hex[:8]
    new_runs: dict[str, dict[str, Any]] = {}
    for name in names:
        tuned = "finetune" in needs_of(name)
        try:
            run = run_rung(s.prep, name, to_key, s.model, s.store, progress=on_progress,
                           ladder_id=new_id, base_key=to_key if tuned else None,
                           on_event=on_event, planned=len(names))
        except LadderError as e:
            if not tuned:
                raise
            raise LadderError(f"re-tuning {name} of ladder {old_id} on the new base "
                              f"{to_key!r}: {e} (`--ladder ID` picks another ladder on "
                              f"{from_key!r}; `ladder runs` lists them)") from None
        new_runs[name] = run
        if on_rung is not None:
            on_rung(run["summary"])
    new_list = list(new_runs.values())
    new_rec = recommend(task, _summaries(new_list), store, planned=len(names),
                        baseline_rows=base_rows, capped_test=prep.splits.capped_test)
    try:
        metric = build_metric(task.metric.name, task.metric.labels)  # as decide builds it
    except LadderError:  # a metric that needs a judge: the stored scores are used as they are
        metric = None
    rows = []
    for old_run, name in zip(rerun, names, strict=True):
        new = new_runs[name]
        po, pn = store.predictions(old_run["id"]), store.predictions(new["id"])
        t = pair(po, pn, task.metric.name, task.metric.labels, metric)
        so, sn = old_run["summary"], new["summary"]
        rows.append({
            "rung": name, "old_run": old_run["id"], "new_run": new["id"],
            "old_quality": so.get("quality"), "new_quality": sn.get("quality"),
            "test": t.as_dict(), **example_changes(po, pn, metric),
            "old_cost_per_1k_usd": so.get("cost_per_1k_usd"),
            "new_cost_per_1k_usd": sn.get("cost_per_1k_usd"),
            "new_latency_p50_s": sn.get("latency_p50_s"),
            "retuned": "finetune" in needs_of(name),
            "new_one_time": sn.get("one_time")})
    old_doc, new_doc = _rec_doc(old_rec), _rec_doc(new_rec)
    by_name = {_base_rung(r): r for r in rerun}
    for doc in (old_doc, new_doc):  # name rungs by their own name on both sides
        for key in ("rung", "closest"):
            if doc[key] is not None:
                doc[key] = _base_rung(next((r for r in runs if r["rung"] == doc[key]),
                                           {"rung": doc[key]}))
    changed, text = verdict(old_doc, new_doc, new_runs, by_name, names, from_key, to_key)
    result = UpgradeResult(id=uuid.uuid4().hex[:8], task=task.name, from_model=from_key,
                           to_model=to_key, old_ladder=old_id, new_ladder=new_id, split=split,
                           old_recommendation=old_doc, new_recommendation=new_doc,
                           changed=changed, verdict=text, rungs=rows, created=time.time())
    store.add_upgrade(record(result))
    return result


def record(result: UpgradeResult) -> dict[str, Any]:
    """The small JSON record kept in the store: the verdict and per rung the paired counts
    (the ids of fixed and broken examples stay in the runs' predictions)."""
    doc = result.to_dict()
    doc["rungs"] = [{k: v for k, v in r.items() if not k.endswith("_ids")}
                    for r in result.rungs]
    return doc


def upgrade_history(task: Task | str | Path) -> list[dict[str, Any]]:
    """The task's stored upgrades, oldest first."""
    task, store = open_task(task)
    return store.upgrades(task.name)
