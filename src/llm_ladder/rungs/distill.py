"""The distill rung, and teacher labelling: a larger model answers the train inputs and the
small model is LoRA-tuned on its answers.

The teacher is any model key of the task (an OpenAI-compatible server, llama.cpp, a local
model) prompted by any rung (default few-shot-nearest). Only train inputs (and optional
unlabelled inputs, e.g. exported production logs) are labelled; never test. A teacher whose
prompt uses train examples would see the very answer it is asked for, so the train inputs
are labelled in two folds, each with the other fold as its example pool.

Answers are appended to a JSONL cache per (teacher, rung, prompt) after every chunk, so a
killed labelling run resumes without asking the teacher twice. Where a reference exists the
teacher's answer is scored against it (agreement), so the user sees how good the labels are.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llm_ladder.data import Example, check_messages
from llm_ladder.errors import LadderError
from llm_ladder.metrics import build_metric
from llm_ladder.models import build_model
from llm_ladder.rungs.base import Pipeline, RungContext, get_rung
from llm_ladder.rungs.finetune import adapted, finetune_config, tune


@dataclass
class Labels:
    examples: list[Example]
    agreement: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    asked: int = 0  # answers requested in this call (0 when all came from the cache)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def label_with_teacher(ctx: RungContext, teacher_key: str, teacher_rung: str,
                       inputs: list[Example], model: Any = None) -> Labels:
    """The teacher's parsed answers for `inputs` (train/unlabelled only), cached on disk."""
    task = ctx.task
    mc = task.model(teacher_key)
    train_ids = {e.id for e in ctx.train}
    fold_of = {e.id: int(_digest([task.split.seed, e.id])[:8], 16) % 2 for e in ctx.train}
    key = _digest({"model": mc.model_dump(exclude={"api_key_env"}), "rung": teacher_rung,
                   "system": task.prompt.model_dump(), "train": sorted(train_ids),
                   "gen": task.generation.model_dump()})[:16]
    cache = task.state_dir / "teacher" / f"{teacher_key}-{teacher_rung}-{key}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: asked again below
                continue
            done[row["id"]] = row
    pending = [e for e in inputs if e.id not in done]
    asked = len(pending)
    if pending:
        model = model or build_model(mc)
        pools = [[e for e in ctx.train if fold_of[e.id] != f] for f in (0, 1)]
        pipes = [get_rung(teacher_rung).build(replace(ctx, train=pool or ctx.train))
                 for pool in pools]
        chunk = max(getattr(model, "batch_size", 8), getattr(mc, "concurrency", 1))
        with cache.open("a", encoding="utf-8") as f:
            for start in range(0, len(pending), chunk):
                part = pending[start : start + chunk]
                # a train input is answered with the other fold's examples as its pool
                pipes_for = [pipes[fold_of.get(e.id, 0)] for e in part]
                msgs = [p.prepare(e.input)[0] for p, e in zip(pipes_for, part, strict=True)]
                t0 = time.perf_counter()
                gens = model.generate(msgs, pipes_for[0].params)
                share = (time.perf_counter() - t0) / len(part)
                for e, p, g, m in zip(part, pipes_for, gens, msgs, strict=True):
                    row = {"id": e.id, "output": p.parse(g.text) if not g.error else "",
                           "raw": g.text, "error": g.error, "seconds": share, "messages": m}
                    done[e.id] = row
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
    metric = build_metric(task.metric.name, ctx.labels, ctx.schema)
    out, scores, failed = [], [], 0
    for e in inputs:
        row = done[e.id]
        if row.get("error") or not row["output"].strip():
            failed += 1
            continue
        out.append(Example(e.id, e.input, row["output"], {**e.meta, "teacher": teacher_key}))
        if e.output.strip():
            s = metric.score(row["output"], e.output)
            if s.value is not None:
                scores.append(s.value)
    agreement = {"with_reference": len(scores), "failed": failed,
                 "mean": sum(scores) / len(scores) if scores else None}
    return Labels(out, agreement, sum(done[e.id].get("seconds", 0.0) for e in inputs), asked)


def read_inputs(path: Path, test_ids: set[str], test_texts: set[str]) -> list[Example]:
    """Unlabelled inputs for the teacher (JSONL: `input` text or messages, or `messages` as
    `ladder logs export` writes them; any output is ignored). Test inputs are refused."""
    if not path.is_file():
        raise LadderError(f"{path}: file not found")
    out, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("a row must be a JSON object")
            if "input" in row:
                inp = row["input"] if isinstance(row["input"], str) \
                    else check_messages(row["input"], "input")
                if isinstance(inp, str) and not inp.strip():
                    raise ValueError("input: is empty")
            elif "messages" in row:
                msgs = check_messages(row["messages"])
                while msgs and msgs[-1]["role"] == "assistant":
                    msgs = msgs[:-1]  # the served answer is not a label
                if not msgs:
                    raise ValueError("messages: no user turn")
                inp = msgs
            else:
                raise ValueError("needs an 'input' or 'messages' field")
        except Exception as e:  # noqa: BLE001 - every bad row is reported, with its line
            where = getattr(e, "field", "")
            problems.append(f"{path}:{n}: {where + ': ' if where else ''}{e}")
            continue
        out.append(Example(f"unlabeled:{row.get('id', n)}", inp, "", {}, f"{path}:{n}"))
    if problems:
        raise LadderError(f"{len(problems)} bad row(s) in {path}:\n" + "\n".join(problems[:20]))
    clash = [e.id for e in out if e.id.split(":", 1)[1] in test_ids
             or e.input_text() in test_texts]
    if clash:
        raise LadderError(f"{path}: {len(clash)} input(s) are in the test split and must not "
                          f"be labelled for training: {', '.join(clash[:5])}")
    return out


class Distill:
    name = "distill"
    description = "a teacher model answers the train inputs; the small model is LoRA-tuned on them"
    prompt_rung = "zero-shot"
    needs = frozenset({"finetune", "teacher"})

    def build(self, ctx: RungContext) -> Pipeline:
        cfg = finetune_config(ctx)
        if not cfg.teacher:
            raise LadderError(f"{ctx.task.name}: distill needs finetune.teacher (a model key) "
                              "in task.toml, or `ladder distill --teacher KEY`")
        labels = label_with_teacher(ctx, cfg.teacher, cfg.teacher_rung,
                                    ctx.train + ctx.unlabeled)
        prompt = get_rung(self.prompt_rung).build(ctx)
        extra = {"teacher": {"model": cfg.teacher, "rung": cfg.teacher_rung,
                             "labelled": len(labels.examples),
                             "agreement": labels.agreement, "seconds": labels.seconds}}
        manifest = tune(ctx, self.name, prompt, labels.examples, ctx.base_key, extra)
        return adapted(ctx, self.name, prompt, manifest, labels.seconds)
