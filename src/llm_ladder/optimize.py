"""Prompt search on train + dev only, within a budget of model calls, and the stored prompts.

The search (`search`) tries instructions, demonstrations and k on the dev split and keeps
the prompt whose ranking holds on a held-out half of dev:

1. Bootstrap (as DSPy's BootstrapFewShot does): the model answers shuffled train examples
   with the base instruction and k labelled train demonstrations; the answers the metric
   scores right become demonstrations, in the model's own words.
2. Demonstration sets: seeded shuffles of that pool, topped up with labelled train examples
   when the pool is short (DSPy's labelled demos), plus one set of labelled examples only;
   and, when the caller passes a `nearest` selector, per-input demonstrations: the k
   examples of the train pool (the model's right answers where bootstrapping found one, the
   labels elsewhere) nearest each input, chosen the way the few-shot-nearest rung chooses.
3. Candidates = instruction x demonstration set x k. The base instruction with no demos (the
   fixed prompt) is always evaluated first, then the base instruction with bootstrapped and
   with nearest demonstrations; the rest in a seeded order while the budget lasts.
4. Dev is split in two halves: every candidate is scored on half A; the best few on A plus
   the base prompt ("finalists") are scored on half B, and the finalist best on B is chosen
   (ties: better on A, then fewer demonstrations). A candidate that was only lucky on A loses
   on B; the base prompt among the finalists means the chosen prompt is never worse than the
   fixed prompt on the half that did not select it.

Every model call counts against `budget_calls`, and the search never starts a batch that
would exceed it. The trace (every candidate, its per-example dev scores, calls spent) is
written after each batch, so a killed search resumes without repeating a call.

A stored prompt lives in `TASK/.ladder/prompts/<id>/` (prompt.json, trace.json), its id a
hash of the chosen instruction, its placement, the demonstrations and k (for per-input
demonstrations: the pool they are chosen from, stored verbatim, and k); a finished search is
found again by its search id (`searches/<search id>.json`), so the same search is never run
twice. With a proposer (a stronger model), new instructions written from the fixed prompt's
failures on dev half A join the candidates after the first stage (half B, which they never
saw, still decides). The test split never reaches this module: callers pass train and dev
only. Skipped: Bayesian search over the candidates (MIPROv2), instruction evolution (GEPA).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llm_ladder.data import Example, Messages
from llm_ladder.errors import LadderError
from llm_ladder.models.base import ChatModel, GenParams

SEARCH_VERSION = 2  # 2: per-input (nearest) demonstrations joined the candidates
Event = Callable[[dict[str, Any]], None]
Scorer = Callable[[str, str], float | None]  # (raw output, reference) -> score or None
# nearest(pool, k) -> pick(input texts) -> for each input, the k pool entries nearest it, most
# similar last (the rung passes the few-shot-nearest rung's selection: `NearestShots`)
Picker = Callable[[list[str]], list[list[dict[str, Any]]]]
Nearest = Callable[[list[dict[str, Any]], int], Picker]


@dataclass(frozen=True)
class Instruction:
    """An instruction and where it goes: the system message, or after the input in the
    user turn (small models often follow the most recent text best)."""

    text: str
    place: str = "system"  # "system" | "user"
    name: str = "base"


@dataclass
class Prompt:
    """A chosen prompt: instruction, placement and demonstrations (input, output turns):
    fixed ones (`demos`), or, with `pool`, the k entries of that pool nearest each input."""

    instruction: str
    place: str
    demos: list[dict[str, Any]]  # {"id", "input", "output"}
    k: int
    name: str = ""
    pool: list[dict[str, Any]] | None = None  # per-input demonstrations are chosen from it

    @property
    def id(self) -> str:
        body: dict[str, Any] = {"instruction": self.instruction, "place": self.place,
                                "demos": [[d["input"], d["output"]] for d in self.demos],
                                "k": self.k}
        if self.pool is not None:
            body["nearest_pool"] = [[d["id"], d["input"], d["output"]] for d in self.pool]
        blob = json.dumps(body, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _turns(inp: str | Messages) -> Messages:
    return [dict(m) for m in inp] if isinstance(inp, list) else [{"role": "user", "content": inp}]


def input_text(inp: str | Messages) -> str:
    """An input as the text its nearest demonstrations are chosen by (few-shot-nearest's)."""
    return Example("", inp, "").input_text()


def render(prompt: Prompt, inp: str | Messages,
           demos: list[dict[str, Any]] | None = None) -> Messages:
    """The exact messages for one input under `prompt` (with `demos`: those demonstrations
    instead of the prompt's fixed ones, e.g. the ones chosen for this input)."""
    msgs: Messages = []
    shots = prompt.demos if demos is None else demos
    for d in shots[:prompt.k] if prompt.k else []:
        msgs += _turns(d["input"])
        msgs.append({"role": "assistant", "content": d["output"]})
    turns = _turns(inp)
    if prompt.place == "user" and turns and turns[-1]["role"] == "user":
        last = turns[-1]
        turns[-1] = {**last, "content": f"{last.get('content') or ''}\n\n{prompt.instruction}"}
        return msgs + turns
    if turns and turns[0]["role"] == "system":  # the input brings its own system message
        head = {"role": "system", "content": prompt.instruction + "\n\n" + turns[0]["content"]}
        return [head] + msgs + turns[1:]
    return [{"role": "system", "content": prompt.instruction}] + msgs + turns


def renderer(prompt: Prompt, nearest: Nearest | None = None
             ) -> Callable[[str | Messages], Messages]:
    """The messages builder of `prompt`: its fixed demonstrations, or (a prompt with a pool)
    the k pool entries `nearest` picks for each input."""
    if prompt.pool is None or not prompt.k:
        return lambda inp: render(prompt, inp)
    if nearest is None:
        raise LadderError(f"prompt {prompt.id} chooses its demonstrations per input (nearest "
                          "among its pool); it needs the nearest-example selection")
    pick = nearest(prompt.pool, prompt.k)
    return lambda inp: render(prompt, inp, pick([input_text(inp)])[0])


class TooSmall(LadderError):
    """The data cannot hold a search (no train examples, fewer than 2 dev examples)."""


@dataclass
class SearchConfig:
    """What the search may spend and try (from the task's [optimize] table)."""

    budget_calls: int = 400
    seed: int = 0
    ks: list[int] = field(default_factory=lambda: [0, 2, 4])
    demo_sets: int = 3
    finalists: int = 3
    bootstrap_share: float = 0.25
    max_dev: int | None = None  # dev examples searched on (default: budget_calls / 4)


@dataclass
class SearchResult:
    prompt: Prompt
    trace: dict[str, Any]


def data_hash(examples: list[Example]) -> str:
    blob = json.dumps([[e.id, e.input, e.output] for e in examples], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def search_id(parts: dict[str, Any]) -> str:
    """The id of a search: a hash of everything that decides its outcome."""
    blob = json.dumps({**parts, "version": SEARCH_VERSION}, sort_keys=True, default=str,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Trace:
    """The search's state on disk: rewritten atomically after every batch."""

    def __init__(self, path: Path | None, sid: str):
        self.path = path
        self.data: dict[str, Any] = {"search_id": sid, "calls": 0, "seconds": 0.0,
                                     "bootstrap": {}, "candidates": {}}
        if path is not None and path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = None  # a torn file cannot happen (atomic writes); start over if it does
            if isinstance(old, dict) and old.get("search_id") == sid:
                self.data = old
                self.data["resumed"] = self.data.get("resumed", 0) + 1

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.path)


class _Runner:
    """Model calls under the budget, scored, recorded in the trace after each batch."""

    def __init__(self, model: ChatModel, params: GenParams, scorer: Scorer, trace: _Trace,
                 budget: int, chunk: int, on_event: Event | None):
        self.model, self.params, self.scorer, self.trace = model, params, scorer, trace
        self.budget, self.chunk, self.on_event = budget, max(1, chunk), on_event
        self.t0 = time.perf_counter()
        self.seconds0 = float(trace.data.get("seconds", 0.0))
        self.best: float | None = None

    @property
    def left(self) -> int:
        return self.budget - self.trace.data["calls"]

    def run(self, jobs: list[tuple[Example, Messages]], record: Callable[[Example, str, float],
                                                                            None]) -> None:
        """Generate for `jobs` in batches (never past the budget), scoring and recording."""
        for start in range(0, len(jobs), self.chunk):
            batch = jobs[start:start + self.chunk][:max(0, self.left)]
            if not batch:
                return
            gens = self.model.generate([m for _, m in batch], self.params)
            for (ex, _), gen in zip(batch, gens, strict=True):
                value = None if gen.error else self.scorer(gen.text, ex.output)
                record(ex, gen.text, 0.0 if value is None else float(value))
            self.trace.data["calls"] += len(batch)
            self.trace.data["seconds"] = self.seconds0 + time.perf_counter() - self.t0
            self.trace.save()
            self.report()

    def report(self, **extra: Any) -> None:
        if self.on_event:
            self.on_event({"search_calls": self.trace.data["calls"], "budget": self.budget,
                           "best_dev": self.best, **extra})


def _mean(scores: dict[str, float], ids: list[str]) -> float | None:
    got = [scores[i] for i in ids if i in scores]
    return sum(got) / len(got) if got and len(got) == len(ids) else None


def search(model: ChatModel, params: GenParams, scorer: Scorer, train: list[Example],
           dev: list[Example], instructions: list[Instruction], cfg: SearchConfig, *,
           sid: str, trace_path: Path | None = None, on_event: Event | None = None,
           chunk: int = 8,
           propose: Callable[[str, list[dict[str, Any]]], list[str]] | None = None,
           nearest: Nearest | None = None) -> SearchResult:
    """Search instructions x demonstrations x k on train + dev (never test) within
    `cfg.budget_calls` model calls; `instructions[0]` is the base (fixed) instruction.
    `propose(base instruction, failures on dev half A)` -> new instructions (a stronger
    model's rewrites; its calls are its own, outside the budget) joins after the first
    stage. With `nearest`, demonstrations chosen per input from the train pool are
    candidates too (for every instruction and k > 0)."""
    rng = random.Random(cfg.seed)
    if not dev:  # no dev split: hold out a seeded third of train (never used for demos)
        pool = sorted(train, key=lambda e: e.id)
        rng.shuffle(pool)
        cut = max(2, len(pool) // 3)
        dev, train = pool[:cut], pool[cut:]
    if not train or len(dev) < 2:
        raise TooSmall(f"the prompt search needs train examples and at least 2 dev examples "
                       f"(has {len(train)} train, {len(dev)} dev)")
    dev_order = sorted(dev, key=lambda e: e.id)
    random.Random(cfg.seed + 1).shuffle(dev_order)
    dev_order = dev_order[:max(2, cfg.max_dev or cfg.budget_calls // 4)]  # a seeded sample
    half_a, half_b = dev_order[:len(dev_order) + 1 >> 1], dev_order[len(dev_order) + 1 >> 1:]
    ids_a, ids_b = [e.id for e in half_a], [e.id for e in half_b]
    n_final = max(1, cfg.finalists)
    least = len(half_a) + 2 * len(half_b)
    if cfg.budget_calls < least:
        raise LadderError(
            f"[optimize] budget_calls = {cfg.budget_calls} is too small: the fixed prompt on "
            f"dev half A and two finalists on half B take {least} calls; raise budget_calls")
    trace = _Trace(trace_path, sid)
    t = trace.data
    t.update(config=asdict(cfg), dev_a=ids_a, dev_b=ids_b, train_n=len(train),
             instructions=[asdict(i) for i in instructions])
    runner = _Runner(model, params, scorer, trace, cfg.budget_calls, chunk, on_event)
    max_k = max(cfg.ks) if cfg.ks else 0
    base = instructions[0]

    # 1. bootstrap demonstrations from train: the model's own right answers
    order = sorted(train, key=lambda e: e.id)
    random.Random(cfg.seed + 2).shuffle(order)
    boot_budget = min(len(order), int(cfg.budget_calls * cfg.bootstrap_share),
                      max(0, cfg.budget_calls - least))
    want = max_k * max(1, cfg.demo_sets)
    boot: dict[str, dict[str, Any]] = t["bootstrap"]
    if max_k and boot_budget:
        teacher_shots = [e for e in order[::-1]][:max_k]
        jobs = []
        for ex in order[:boot_budget]:
            if ex.id in boot:
                continue
            shots = [{"id": s.id, "input": s.input, "output": s.output}
                     for s in teacher_shots if s.id != ex.id][:max_k]
            jobs.append((ex, render(Prompt(base.text, base.place, shots, len(shots)),
                                    ex.input)))
        right = sum(1 for b in boot.values() if b["score"] >= 1.0)

        def keep(ex: Example, text: str, score: float) -> None:
            boot[ex.id] = {"output": text.strip(), "score": score}

        for start in range(0, len(jobs), runner.chunk):  # stop once the pool is full
            if right >= want:
                break
            runner.run(jobs[start:start + runner.chunk], keep)
            right = sum(1 for b in boot.values() if b["score"] >= 1.0)
    by_id = {e.id: e for e in train}
    bootstrapped = [{"id": i, "input": by_id[i].input, "output": b["output"]}
                    for i, b in boot.items() if b["score"] >= 1.0 and i in by_id]
    labelled = [{"id": e.id, "input": e.input, "output": e.output} for e in order]

    # 2. demonstration sets
    sets: list[list[dict[str, Any]]] = []
    for j in range(max(1, cfg.demo_sets)):
        got = list(bootstrapped)
        random.Random(cfg.seed + 10 + j).shuffle(got)
        got = got[:max_k]
        fill = [d for d in labelled[j * max_k:] if d["id"] not in {g["id"] for g in got}]
        sets.append(got + fill[:max_k - len(got)])
    sets.append(labelled[-max_k:] if max_k else [])  # labelled only
    t["demo_sets"] = [[d["id"] for d in s] for s in sets]
    t["bootstrapped"] = len(bootstrapped)
    # the pool per-input demonstrations are chosen from: every train example searched with
    # (never dev, never test), in the model's own words where bootstrapping got it right
    own = {d["id"]: d for d in bootstrapped}
    near_pool = [own.get(e.id) or {"id": e.id, "input": e.input, "output": e.output}
            for e in sorted(train, key=lambda e: e.id)] if nearest is not None else []
    t["nearest_pool"] = [d["id"] for d in near_pool] if nearest is not None else None
    pickers: dict[int, Picker] = {}

    # 3. candidates, the fixed prompt first
    instructions = list(instructions)
    cands: list[dict[str, Any]] = []

    def add_candidates(i: int) -> None:
        for k in sorted(set(cfg.ks)):
            for j in range(len(sets) if k else 1):
                if k and len(sets[j]) < k:
                    continue
                cands.append({"key": f"i{i}-d{j if k else '-'}-k{k}", "instruction": i,
                              "demo_set": j if k else None, "k": k})
            if k and near_pool and len(near_pool) >= k:  # demonstrations chosen per input
                cands.append({"key": f"i{i}-dn-k{k}", "instruction": i,
                              "demo_set": "nearest", "k": k})

    for i in range(len(instructions)):
        add_candidates(i)
    first = cands[0]

    def shuffled(items: list[dict[str, Any]], salt: int) -> list[dict[str, Any]]:
        items = list(items)
        random.Random(cfg.seed + salt).shuffle(items)
        return items

    def prompt_of(c: dict[str, Any]) -> Prompt:
        ins = instructions[c["instruction"]]
        if c["demo_set"] == "nearest":
            return Prompt(ins.text, ins.place, [], c["k"], ins.name, pool=near_pool)
        demos = sets[c["demo_set"]][:c["k"]] if c["k"] else []
        return Prompt(ins.text, ins.place, demos, c["k"], ins.name)

    def messages(p: Prompt, inputs: list[str | Messages]) -> list[Messages]:
        if p.pool is None or not p.k or nearest is None:
            return [render(p, inp) for inp in inputs]
        if p.k not in pickers:  # one selector per k: the pool is embedded once
            pickers[p.k] = nearest(near_pool, p.k)
        picked = pickers[p.k]([input_text(inp) for inp in inputs]) if inputs else []
        return [render(p, inp, d) for inp, d in zip(inputs, picked, strict=True)]

    def evaluate(c: dict[str, Any], half: list[Example], part: str) -> None:
        entry = t["candidates"].setdefault(c["key"], {**c, "A": {}, "B": {}})
        scores = entry[part]
        p = prompt_of(c)
        todo = [e for e in half if e.id not in scores]
        jobs = list(zip(todo, messages(p, [e.input for e in todo]), strict=True))

        def rec(ex: Example, text: str, score: float) -> None:
            scores[ex.id] = score
            if c is first:  # what the fixed prompt got wrong feeds the proposer
                entry.setdefault("outputs", {})[ex.id] = text

        runner.run(jobs, rec)

    # 4. half A for every candidate the budget allows, keeping the reserve for half B, in
    # stages: every instruction without demos (cheap prompts) and the base instruction with
    # bootstrapped demos, then demonstrations x k for the two best instructions, the rest
    order: list[dict[str, Any]] = []

    def score_a(c: dict[str, Any]) -> float | None:
        return _mean(t["candidates"].get(c["key"], {}).get("A", {}), ids_a)

    def climb(stage: list[dict[str, Any]]) -> bool:
        """Score `stage` on half A; False when the budget ran out."""
        for c in stage:
            need = len(half_a) - len(t["candidates"].get(c["key"], {}).get("A", {}))
            n_scored = sum(1 for e in t["candidates"].values()
                           if _mean(e["A"], ids_a) is not None)
            reserve = min(n_final + 1, n_scored + 1) * len(half_b)  # B checks, this one too
            if need and c is not first and runner.left - reserve < need:
                return False  # the rest of the budget is the finalists' check on half B
            if c not in order:
                order.append(c)
            evaluate(c, half_a, "A")
            a = score_a(c)
            if a is not None and (runner.best is None or a > runner.best):
                runner.best = a
                runner.report()
        return True

    # the fixed prompt, then the base instruction with the most bootstrapped demonstrations
    # (what BootstrapFewShot would ship) and with as many demonstrations chosen per input
    # (what few-shot-nearest does), then the other instructions without demonstrations
    boot_first = [c for c in cands if c["instruction"] == 0 and c["k"] == max_k
                  and c["demo_set"] in (0, "nearest")] if max_k else []
    stage1 = [first] + boot_first + shuffled([c for c in cands[1:] if not c["k"]], 3)
    going = climb(stage1)
    if going and propose is not None:  # a stronger model rewrites from the failures on A
        if "proposed" not in t:
            fixed = t["candidates"][first["key"]]
            failed = [{"input": e.input, "reference": e.output,
                       "output": fixed.get("outputs", {}).get(e.id, "")}
                      for e in half_a if fixed["A"].get(e.id, 1.0) < 1.0]
            t["proposed"] = [p for p in propose(base.text, failed) if p.strip()]
            trace.save()
        for n, text in enumerate(t["proposed"]):
            instructions.append(Instruction(text, "system", f"proposed-{n + 1}"))
            before = len(cands)
            add_candidates(len(instructions) - 1)
            stage1 += [c for c in cands[before:] if not c["k"]]
        t["instructions"] = [asdict(i) for i in instructions]
        going = climb(stage1)
    if going:
        tried = sorted({c["instruction"] for c in stage1 if score_a(c) is not None})
        best_i = sorted(tried, key=lambda i: -max(score_a(c) or 0.0 for c in stage1
                                                  if c["instruction"] == i))[:2]
        stage2 = shuffled([c for c in cands if c["k"] and c["instruction"] in best_i], 4)
        if climb(stage2):
            climb(shuffled([c for c in cands if c["k"] and c["instruction"] not in best_i], 5))
    cands = order
    scored = [c for c in cands if c["key"] in t["candidates"]
              and _mean(t["candidates"][c["key"]]["A"], ids_a) is not None]

    def cost(c: dict[str, Any]) -> tuple[int, int]:
        return (c["k"], len(instructions[c["instruction"]].text))

    ranked = sorted(scored, key=lambda c: (-(score_a(c) or 0.0), cost(c), cands.index(c)))
    finalists = ranked[:n_final]
    if first not in finalists and first in scored:
        finalists.append(first)
    for c in finalists:
        if runner.left >= len(half_b) - len(t["candidates"][c["key"]]["B"]):
            evaluate(c, half_b, "B")
    checked = [c for c in finalists if _mean(t["candidates"][c["key"]]["B"], ids_b) is not None]
    if not checked:
        raise LadderError("the prompt search ran out of budget before checking a finalist on "
                          "dev half B; raise [optimize] budget_calls")

    def means(c: dict[str, Any]) -> tuple[float, float]:
        e = t["candidates"][c["key"]]
        return _mean(e["A"], ids_a) or 0.0, _mean(e["B"], ids_b) or 0.0

    chosen = max(checked, key=lambda c: (means(c)[1], means(c)[0], tuple(-x for x in cost(c)),
                                         -cands.index(c)))
    a, b = means(chosen)
    t["finalists"] = [c["key"] for c in finalists]
    t["chosen"] = chosen["key"]
    t["chosen_dev"] = {"A": a, "B": b,
                       "all": (a * len(ids_a) + b * len(ids_b)) / (len(ids_a) + len(ids_b))}
    t["fixed_dev"] = dict(zip(("A", "B"), means(first), strict=True)) \
        if first in checked else None
    t["ranking_held"] = bool(ranked) and chosen["key"] == ranked[0]["key"]
    t["done"] = True
    trace.save()
    runner.best = max(runner.best or 0.0, a)
    runner.report(done=True)
    return SearchResult(prompt_of(chosen), t)


# ---------------------------------------------------------------- stored prompts

def prompts_dir(state_dir: Path) -> Path:
    return state_dir / "prompts"


def work_trace(state_dir: Path, sid: str) -> Path:
    """Where an unfinished search keeps its trace (resumed from there)."""
    return prompts_dir(state_dir) / f".work-{sid}" / "trace.json"


def find(state_dir: Path, sid: str) -> dict[str, Any] | None:
    """The stored prompt a finished search `sid` chose, or None."""
    pointer = prompts_dir(state_dir) / "searches" / f"{sid}.json"
    try:
        pid = json.loads(pointer.read_text(encoding="utf-8"))["prompt"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    return read(state_dir, pid)


def read(state_dir: Path, pid: str) -> dict[str, Any] | None:
    """A stored prompt by id (with its trace under "trace" when present), or None."""
    folder = prompts_dir(state_dir) / pid
    try:
        doc = json.loads((folder / "prompt.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    try:
        doc["trace"] = json.loads((folder / "trace.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        doc["trace"] = None
    return doc


def save(state_dir: Path, result: SearchResult, meta: dict[str, Any]) -> dict[str, Any]:
    """Store the chosen prompt under its content id with the search's trace beside it, then
    point the search id at it; remove the work folder. Returns the stored document."""
    p = result.prompt
    root = prompts_dir(state_dir)
    folder = root / p.id
    folder.mkdir(parents=True, exist_ok=True)
    sid = result.trace["search_id"]
    doc = {"id": p.id, "instruction": p.instruction, "place": p.place, "k": p.k,
           "name": p.name, "demos": p.demos,
           # per-input demonstrations: "nearest", chosen from `pool` (stored verbatim)
           "select": "fixed" if p.pool is None else "nearest", "pool": p.pool,
           "search_id": sid,
           "dev": result.trace.get("chosen_dev"), "fixed_dev": result.trace.get("fixed_dev"),
           "calls": result.trace["calls"], "seconds": result.trace["seconds"],
           "created": time.time(), **meta}
    for name, body in (("trace.json", result.trace), ("prompt.json", doc)):
        tmp = folder / f"{name}.tmp"
        tmp.write_text(json.dumps(body, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, folder / name)
    (root / "searches").mkdir(exist_ok=True)
    tmp = root / "searches" / f"{sid}.json.tmp"
    tmp.write_text(json.dumps({"prompt": p.id}), encoding="utf-8")
    os.replace(tmp, root / "searches" / f"{sid}.json")
    work = work_trace(state_dir, sid)
    work.unlink(missing_ok=True)
    try:
        work.parent.rmdir()
    except OSError:
        pass
    return {**doc, "trace": result.trace}


def as_prompt(doc: dict[str, Any]) -> Prompt:
    return Prompt(doc["instruction"], doc["place"], doc["demos"], doc["k"], doc.get("name", ""),
                  pool=doc.get("pool"))


def stored_prompts(state_dir: Path) -> list[dict[str, Any]]:
    """Every stored optimized prompt of a task, newest first (without traces)."""
    root = prompts_dir(state_dir)
    docs = []
    for f in sorted(root.glob("*/prompt.json")) if root.is_dir() else []:
        try:
            docs.append(json.loads(f.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(docs, key=lambda d: -float(d.get("created") or 0))


def trace_rows(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per searched candidate for display: its key, instruction name, k, demo set,
    mean dev score on half A and half B (None when not scored there) and its mark ("chosen",
    "finalist" or "")."""
    names = [i.get("name", "") for i in trace.get("instructions", [])]
    rows = []
    for key, c in (trace.get("candidates") or {}).items():
        rows.append({
            "key": key, "k": c["k"], "demo_set": c["demo_set"],
            "instruction": names[c["instruction"]] if c["instruction"] < len(names) else "?",
            "A": sum(c["A"].values()) / len(c["A"]) if c["A"] else None,
            "B": sum(c["B"].values()) / len(c["B"]) if c["B"] else None,
            "mark": "chosen" if key == trace.get("chosen") else (
                "finalist" if key in trace.get("finalists", []) else "")})
    return rows
