"""The `optimized-prompt` rung: the prompting rungs at their best before anyone climbs.

It searches instructions, demonstrations and k on train + dev (`llm_ladder.optimize`), within
the task's `[optimize] budget_calls`, and returns the chosen prompt as a Pipeline, so the
runner scores it once on the test split like every rung and the ladder's paired tests compare
it with the fixed prompting rungs. The candidate instructions are a small built-in set of
rewrites of the task's own instructions (`rewrites`), each in the system message or after the
input. The chosen prompt is stored under its content id in `TASK/.ladder/prompts/` with the
search trace; the same search (same train and dev data, seed, budget, model, candidates) is
found again there and never re-run, so `ladder serve --rung optimized-prompt` serves the
stored prompt. The search's time is its one-time cost (`one_time`), redone on a new base
model. With `[optimize] proposer = KEY`, that (stronger) model writes two more candidate
instructions from the fixed prompt's failures on dev (`proposer`). Demonstrations chosen per
input are candidates too: the search is handed the few-shot-nearest rung's selection
(`NearestShots`, the embedded MiniLM embedder) over the train pool (`nearest`); a stored
prompt of that kind keeps its pool verbatim and chooses again for every served input.
Refused: tool tasks (the search writes plain prompts, never the tool requests of the tool
rungs). Skipped: proposals from the failures of the other candidates, and more than one
round of proposals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from llm_ladder import optimize
from llm_ladder.data import Example
from llm_ladder.embedding import DEFAULT_EMBEDDER, Embedder
from llm_ladder.errors import LadderError
from llm_ladder.metrics import build_metric, metric_needs
from llm_ladder.models import build_model
from llm_ladder.models.base import GenParams
from llm_ladder.optimize import Instruction, Prompt, SearchConfig
from llm_ladder.rungs.base import NearestShots, Pipeline, RungContext, gen_params, instructions
from llm_ladder.task import OptimizeConfig

NAME = "optimized-prompt"


def rewrites(base: str, labels: list[str] | None, schema: dict[str, Any] | None
             ) -> list[Instruction]:
    """The candidate instructions: the task's own first (the fixed prompt), then rewrites of
    it, each in the system message and after the input in the user turn."""
    if labels:
        only = "Reply with the label only: no explanation, no punctuation, nothing else."
        listed = ("Categories:\n" + "\n".join(f"- {lab}" for lab in labels)
                  + "\nWhich one category above does this message belong to? Reply with the "
                    "category name exactly as written above and nothing else.")
    elif schema:
        only = "Reply with the JSON object only: no code fence, no explanation."
        listed = base + "\nStart your reply with { and end it with }."
    else:
        only = "Reply with the answer only: no explanation."
        listed = base + "\nBe brief: one short line."
    texts = [("base", base), ("answer-only", base + "\n" + only),
             ("expert", "You are a careful expert annotator.\n" + base), ("listed", listed)]
    out = [Instruction(t, "system", n) for n, t in texts]
    out += [Instruction(t, "user", n + "@user") for n, t in texts]
    return out


def search_config(ctx: RungContext) -> SearchConfig:
    cfg = ctx.task.optimize or OptimizeConfig()
    ks = cfg.k if cfg.k is not None else [0, 2, ctx.task.prompt.few_shot_k]
    return SearchConfig(budget_calls=cfg.budget_calls, seed=cfg.seed,
                        ks=sorted({max(0, k) for k in ks}), demo_sets=cfg.demo_sets,
                        finalists=cfg.finalists, max_dev=cfg.max_dev)


def model_identity(ctx: RungContext) -> dict[str, Any]:
    """What decides which model the search calls (settings only: no secrets are read)."""
    mc = ctx.task.model(ctx.model_key)
    return {"key": ctx.model_key, "backend": mc.backend, "name": mc.name, "path": mc.path}


def proposer_identity(ctx: RungContext) -> dict[str, Any] | None:
    key = (ctx.task.optimize or OptimizeConfig()).proposer
    if key is None:
        return None
    mc = ctx.task.model(key)
    return {"key": key, "backend": mc.backend, "name": mc.name, "path": mc.path}


PROPOSE = ("Current instruction for a small language model:\n{base}\n\nInputs it got wrong "
           "with this instruction:\n{shown}\n\nWrite a better instruction for the small model. "
           "Keep every rule of the task (the labels, the output format) and be explicit about "
           "the output format. Reply with the new instruction only.")


def proposer(ctx: RungContext) -> Callable[[str, list[dict[str, Any]]], list[str]] | None:
    """With `[optimize] proposer = KEY`: a function asking that (stronger) model for two
    rewrites of the instruction, each from a different half of the failures it is shown."""
    key = (ctx.task.optimize or OptimizeConfig()).proposer
    if key is None:
        return None
    big = build_model(ctx.task.model(key))

    def propose(base: str, failed: list[dict[str, Any]]) -> list[str]:
        out = []
        for part in (failed[0::2], failed[1::2]):
            if not part:
                continue
            shown = "\n\n".join(
                f"Input: {Example('', f['input'], '').input_text()}\nExpected: "
                f"{f['reference']}\nThe model wrote: {f['output'].strip()}" for f in part[:6])
            msgs = [{"role": "user", "content": PROPOSE.format(base=base, shown=shown)}]
            gen = big.generate([msgs], GenParams(max_tokens=400, temperature=0.0))[0]
            if gen.error is None and gen.text.strip():
                out.append(gen.text.strip())
        return out

    return propose


@functools.cache
def embedder() -> Embedder:
    """The embedder few-shot-nearest uses, loaded once per process."""
    return Embedder()


def nearest(pool: list[dict[str, Any]], k: int) -> optimize.Picker:
    """The few-shot-nearest rung's selection over a demonstration pool: input texts -> for
    each, the k pool entries nearest it (most similar last)."""
    shots = NearestShots([Example(d["id"], d["input"], d["output"]) for d in pool], k,
                         embedder())
    by_id = {d["id"]: d for d in pool}
    return lambda texts: [[by_id[e.id] for e in got] for got in shots.many(texts)]


class OptimizedPrompt:
    name = NAME
    needs = frozenset({"optimize"})  # climbed by default only when the task has [optimize]
    description = ("instructions, demonstrations and k searched on train + dev within a call "
                   "budget; scored once on test")

    def build(self, ctx: RungContext) -> Pipeline:
        task = ctx.task
        if task.tools is not None:
            raise LadderError(f"{task.name}: the optimized-prompt rung does not search tool "
                              "requests (its prompts never list the offered functions); climb "
                              "tool-use and few-shot-tools on a tool task")
        cands = rewrites(instructions(ctx), ctx.labels, ctx.schema)
        fixed = Prompt(cands[0].text, cands[0].place, [], 0, cands[0].name)
        cfg = search_config(ctx)
        params = gen_params(ctx)
        if metric_needs(task.metric.name):  # a judge per dev answer: not searched (yet)
            return self.fixed(fixed, params, f"the metric {task.metric.name!r} needs "
                              f"{', '.join(sorted(metric_needs(task.metric.name)))}; the "
                              "search scores dev answers without one", ctx)
        metric = build_metric(task.metric.name, ctx.labels, ctx.schema)
        sid = optimize.search_id({
            "rung": NAME, "train": optimize.data_hash(ctx.train),
            "dev": optimize.data_hash(ctx.dev), "config": vars(cfg),
            "model": model_identity(ctx), "candidates": [vars(c) for c in cands],
            "metric": task.metric.name, "labels": ctx.labels, "schema": ctx.schema,
            "params": vars(params), "proposer": proposer_identity(ctx),
            "nearest": {"embedder": DEFAULT_EMBEDDER, "how": NearestShots.__name__}})
        doc = optimize.find(task.state_dir, sid)
        if doc is not None:
            if ctx.on_event:
                ctx.on_event({"reused_prompt": doc["id"], "search": sid})
        else:
            model = ctx.model or build_model(task.model(ctx.model_key))
            if ctx.on_event:
                ctx.on_event({"search_start": NAME, "search": sid, "budget": cfg.budget_calls,
                              "train": len(ctx.train), "dev": len(ctx.dev)})

            def score(text: str, reference: str) -> float | None:
                return metric.score(text.strip(), reference).value

            try:
                result = optimize.search(model, params, score, ctx.train, ctx.dev, cands, cfg,
                                         sid=sid,
                                         trace_path=optimize.work_trace(task.state_dir, sid),
                                         on_event=ctx.on_event,
                                         chunk=getattr(model, "batch_size", 8),
                                         propose=proposer(ctx), nearest=nearest)
            except optimize.TooSmall as e:  # climbs on: the fixed prompt, saying why
                return self.fixed(fixed, params, str(e), ctx)
            doc = optimize.save(task.state_dir, result, {
                "task": task.name, "model": model_identity(ctx), "metric": task.metric.name,
                "budget_calls": cfg.budget_calls, "seed": cfg.seed})
        return pipeline_of(doc, params)

    @staticmethod
    def from_run(ctx: RungContext, settings: dict[str, Any]) -> Pipeline | None:
        """A stored run's pipeline: the prompt it measured (never a new search), or None
        when the run searched nothing (too little data: the fixed prompt)."""
        pid = settings.get("prompt_id")
        return stored_pipeline(ctx, pid) if isinstance(pid, str) else None

    @staticmethod
    def fixed(prompt: Prompt, params: GenParams, why: str, ctx: RungContext) -> Pipeline:
        """No search possible: the fixed system prompt, and why (the climb goes on)."""
        if ctx.on_event:
            ctx.on_event({"warning": f"{NAME}: {why}; it runs the fixed system prompt"})
        return Pipeline(NAME, lambda inp: optimize.render(prompt, inp), params,
                        settings={"system": prompt.instruction, "search": None, "skipped": why})


def stored_pipeline(ctx: RungContext, prompt_id: str) -> Pipeline:
    """The pipeline of the stored prompt `prompt_id` (what a run of this rung measured), never
    searching: `ladder serve` of a stored run and `ladder deploy` use it."""
    doc = optimize.read(ctx.task.state_dir, prompt_id)
    if doc is None:
        raise LadderError(f"the optimized prompt {prompt_id!r} is not stored under "
                          f"{optimize.prompts_dir(ctx.task.state_dir)}; run the "
                          f"{NAME} rung again (`ladder prompts` lists the stored ones)")
    return pipeline_of(doc, gen_params(ctx))


def pipeline_of(doc: dict[str, Any], params: GenParams) -> Pipeline:
    """A stored prompt as the rung's pipeline (its demonstrations chosen per input when the
    prompt has a pool)."""
    prompt = optimize.as_prompt(doc)
    if prompt.id != doc.get("id"):
        raise LadderError(f"the stored prompt {doc.get('id')!r} does not hash to its id "
                          f"({prompt.id}): its prompt.json was edited")
    build = optimize.renderer(prompt, nearest)
    seconds = float(doc.get("seconds") or 0.0)
    settings = {
        "prompt_id": prompt.id, "search": doc["search_id"], "instruction": prompt.name,
        "place": prompt.place, "k": prompt.k, "demo_ids": [d["id"] for d in prompt.demos],
        "select": doc.get("select") or "fixed",
        **({"pool": len(prompt.pool), "embedder": DEFAULT_EMBEDDER}
           if prompt.pool is not None else {}),
        "system": prompt.instruction, "dev": doc.get("dev"), "fixed_dev": doc.get("fixed_dev"),
        "search_calls": doc.get("calls"),
        "one_time": {"seconds": seconds, "retrain_on_base_upgrade": True,
                     "what": f"prompt search: {doc.get('calls')} model calls on train + dev "
                             f"({seconds / 60:.1f} min)"}}
    return Pipeline(NAME, build, params, settings=settings)
