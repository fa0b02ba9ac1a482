"""The rungs that change the weights: lora, lora-prompt, lora-rag, lora-tools, full, distill.

Each trains (or reuses, by content id) a LoRA adapter on the train split with the same
prompt builder it uses at inference, then returns that prompting pipeline with its own
model: the base plus the adapter, merged for speed. Training uses train only; dev only
for early stopping; the test split never gets here.

- lora:        the input alone (no instructions): the classic fine-tune, shortest prompts.
- lora-prompt: the task's system prompt at train and at inference (fine-tune + prompt).
- lora-rag:    the RAG prompt with retrieved chunks at train and inference (fine-tune + RAG).
- lora-tools:  the tool-use request (each example's offered functions, the JSON protocol) at
               train and inference; the target is the reference call written the way the
               tool rungs' demonstrations write it, or the no-call sentence for irrelevance.
- full:        the input alone, like lora, but every weight is trained (the same loop,
               loss, schedule, checkpoints and data checks; `full_learning_rate`); its
               artifact is a whole model folder, evaluated in-process even when
               `eval_model` serves adapters. Not in the default ladder: `--rungs full`.
(distill, in rungs/distill.py, is lora on a teacher model's answers to the train inputs.)
The one-time cost (training seconds, and teacher labelling for distill) and the artifact's
size in bytes go into the pipeline settings, and from there into the run summary as
`one_time`. Skipped: multi-device training.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from llm_ladder.data import Example
from llm_ladder.errors import LadderError
from llm_ladder.finetune import registry
from llm_ladder.finetune.data import build_rows, data_hash
from llm_ladder.finetune.lora import pick_precision
from llm_ladder.finetune.lora import train as run_training
from llm_ladder.models.base import ChatModel, ServesAdapters
from llm_ladder.models.local import TransformersModel, resolve_weights
from llm_ladder.rungs.base import Pipeline, RungContext, as_messages, get_rung
from llm_ladder.rungs.tools import ToolSetup
from llm_ladder.task import FinetuneConfig, Task


def finetune_config(ctx: RungContext) -> FinetuneConfig:
    if ctx.task.finetune is None:
        raise LadderError(f"{ctx.task.name}: the fine-tuning rungs need a [finetune] table in "
                          "task.toml (an empty one takes the defaults)")
    return ctx.task.finetune


def _base(ctx: RungContext, cfg: FinetuneConfig, base_key: str | None):
    key = base_key or cfg.base
    mc = ctx.task.model(key)
    if mc.backend != "local":
        raise LadderError(f"finetune.base {key!r} uses backend {mc.backend!r}; fine-tuning "
                          "needs a local (transformers) model: backend = \"local\"")
    return key, mc, resolve_weights(mc.name, mc.path)


# config fields that do not change what one method trains (left out of its adapter id); the
# memory settings change how a batch is computed, not the update (up to float error)
MEMORY = {"max_memory_gb", "micro_batch_tokens", "gradient_checkpointing"}
NOT_RECIPE = {"lora": {"full_learning_rate", *MEMORY},
              "full": {"r", "alpha", "dropout", "target_modules", "learning_rate", *MEMORY}}


def tune(ctx: RungContext, rung: str, prompt: Pipeline, train: list[Example],
         base_key: str | None = None, extra: dict[str, Any] | None = None,
         method: str = "lora") -> dict[str, Any]:
    """Train (or reuse) the adapter for `rung` (for `method` "full", the whole model);
    returns its manifest (with `path`)."""
    from transformers import AutoTokenizer  # heavy: only when a rung trains

    cfg = finetune_config(ctx)
    key, mc, folder = _base(ctx, cfg, base_key)
    tok = AutoTokenizer.from_pretrained(folder)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def messages(inp):
        return prompt.prepare(inp)[0]

    rows, report = build_rows(train, messages, tok, cfg.max_seq_len, cfg.min_examples,
                              ctx.leakage_removed)
    dev_rows = []
    if ctx.dev:
        dev_rows, _ = build_rows(ctx.dev, messages, tok, cfg.max_seq_len, 1)
    recipe = cfg.model_dump(exclude={"teacher", "teacher_rung", "base", "min_examples",
                                      "eval_model",  # where it is evaluated is no recipe
                                      *NOT_RECIPE[method]})
    recipe["precision"] = list(pick_precision(cfg))  # "auto" resolves per machine
    aid = registry.adapter_id(rung, registry.base_fingerprint(folder), data_hash(rows),
                              data_hash(dev_rows) if dev_rows else "", recipe)
    root = registry.adapters_dir(ctx.task)
    final = root / aid
    if ctx.on_event:
        for w in report.warnings:
            ctx.on_event({"warning": w})

    def waiting(pid: str) -> None:
        if ctx.on_event:
            ctx.on_event({"waiting": f"adapter {aid} is being trained by another process "
                                     f"(pid {pid}); waiting for it to finish"})

    with registry.training_lock(root, aid, waiting):
        if registry.read_manifest(final) is None:
            if ctx.on_event:
                ctx.on_event({"start": rung, "adapter": aid, "train": len(rows),
                              "dev": len(dev_rows)})
            result, tmp = run_training(folder, cfg, rows, dev_rows, pad, root / f".work-{aid}",
                                       final, resume=ctx.resume, on_step=ctx.on_event,
                                       method=method)
            manifest = {"id": aid, "rung": rung, "task": ctx.task.name, "method": method,
                        "base": {"key": key, "name": mc.name, "weights": str(folder),
                                 "fingerprint": registry.base_fingerprint(folder)},
                        "data": {"train_hash": data_hash(rows), "train": len(rows),
                                 "train_ids": [r.id for r in rows],
                                 "dev_ids": [r.id for r in dev_rows],
                                 "dev": len(dev_rows), "checks": report.as_dict()},
                        "config": recipe, "training": {k: v for k, v in result.as_dict().items()
                                                       if k != "history"},
                        "prompt": prompt.settings.get("system"), **(extra or {})}
            registry.finish(tmp, final, manifest, folder)
            shutil.rmtree(root / f".work-{aid}", ignore_errors=True)
        elif ctx.on_event:
            ctx.on_event({"reused": aid, "method": method})
    manifest = registry.read_manifest(final) or {}
    return {**manifest, "path": str(final)}


def adapter_model(task: Task, base_key: str, adapter_path: str) -> ChatModel:
    """The task's base model `base_key` with the LoRA adapter at `adapter_path` (merged)."""
    mc = task.model(base_key)
    return TransformersModel(name=mc.name, path=mc.path, batch_size=mc.batch_size,
                             threads=mc.threads, context_length=mc.context_length,
                             adapter=adapter_path, dtype=mc.dtype)


def tuned_model(task: Task, base_key: str, folder: str) -> ChatModel:
    """The fully fine-tuned model folder `folder` (safetensors), served like the base."""
    mc = task.model(base_key)
    return TransformersModel(name=mc.name, path=folder, batch_size=mc.batch_size,
                             threads=mc.threads, context_length=mc.context_length,
                             dtype=mc.dtype)


def adapted(ctx: RungContext, name: str, prompt: Pipeline, manifest: dict[str, Any],
            extra_cost_s: float = 0.0) -> Pipeline:
    """The prompting pipeline `prompt` with the trained adapter as its model: the base merged
    with it in-process, or, when the rung is evaluated on a model that serves adapters
    (`[finetune] eval_model`, a vllm backend), that server naming the adapter per request.
    A full fine-tune is its own model folder, always loaded in-process."""
    full = manifest.get("method") == "full"
    serving = ctx.model if isinstance(ctx.model, ServesAdapters) and not full else None
    if full:
        model: ChatModel = tuned_model(ctx.task, manifest["base"]["key"], manifest["path"])
    elif serving is not None:
        model = serving.with_adapter(manifest["id"], manifest["path"])
    else:
        model = adapter_model(ctx.task, manifest["base"]["key"], manifest["path"])
    train_s = manifest["training"]["seconds"]
    size = manifest.get("size_bytes")
    what = (f"{'full fine-tune' if full else 'LoRA training'} on {manifest['data']['train']} "
            f"examples ({train_s / 60:.1f} min on {manifest['training']['device']}"
            + (f"; {'model' if full else 'adapter'} {size / 1e6:.1f} MB" if size else "") + ")")
    if extra_cost_s:
        what += f" + teacher labelling ({extra_cost_s / 60:.1f} min)"
    keys = ("full_learning_rate", "epochs") if full else ("r", "alpha", "learning_rate",
                                                           "epochs")
    settings = {**prompt.settings, "adapter": manifest["id"], "adapter_path": manifest["path"],
                "base": manifest["base"]["name"], "base_key": manifest["base"]["key"],
                "full" if full else "lora": {k: manifest["config"][k] for k in keys},
                "one_time": {"seconds": train_s + extra_cost_s, "what": what,
                             "artifact_bytes": size, "retrain_on_base_upgrade": True}}
    # the prompting rung's tool loop too (lora-tools): it renders each example's offered
    # functions into the request, as in the training rows; without it the tuned model saw
    # the bare request and answered "no tool fits" to every test example
    return Pipeline(name, prompt.build_messages, prompt.params, prompt.parse, settings,
                    prompt.retrieve, model, loop=prompt.loop)


class Lora:
    name = "lora"
    description = "LoRA fine-tune of the small model on the train split; the input alone"
    prompt_rung = "zero-shot"
    needs = frozenset({"finetune"})

    def build(self, ctx: RungContext) -> Pipeline:
        prompt = get_rung(self.prompt_rung).build(ctx)
        manifest = tune(ctx, self.name, prompt, ctx.train, ctx.base_key)
        return adapted(ctx, self.name, prompt, manifest)


class Full(Lora):
    """Every weight of the small model trained on the train split (the input alone, as
    `lora`): the same recipe, checkpoints and data checks, a whole model as its artifact."""

    name = "full"
    description = "full fine-tune (every weight) of the small model; the input alone"

    def build(self, ctx: RungContext) -> Pipeline:
        prompt = get_rung(self.prompt_rung).build(ctx)
        manifest = tune(ctx, self.name, prompt, ctx.train, ctx.base_key, method="full")
        return adapted(ctx, self.name, prompt, manifest)


class LoraPrompt(Lora):
    name = "lora-prompt"
    description = "LoRA fine-tune with the task's system prompt at train and inference"
    prompt_rung = "system-prompt"


class LoraRAG(Lora):
    name = "lora-rag"
    description = "LoRA fine-tune with retrieved corpus chunks in the prompt (fine-tune + RAG)"
    prompt_rung = "rag"
    needs = frozenset({"finetune", "index"})


class LoraTools(Lora):
    """LoRA on the train split's calls, in the protocol the `tool-use` rung uses at inference
    on a local model (the prompted JSON protocol: a local model has no native tool calls), so
    the paired test compares it with the prompted tool rungs on the same test examples."""

    name = "lora-tools"
    description = "LoRA fine-tune on the train split's tool calls (the tool-use request)"
    prompt_rung = "tool-use"
    needs = frozenset({"finetune", "tools"})

    def build(self, ctx: RungContext) -> Pipeline:
        prompt = get_rung(self.prompt_rung).build(ctx)
        setup = ToolSetup(ctx.task)

        def rendered(examples: list[Example]) -> list[Example]:
            """Each example as the exact request the rung sends, with its call as output."""
            out = []
            for ex in examples:
                turns = setup.shot_turns(ex, native=False)  # request turns + the call
                request = setup.request(ex, False, []).messages
                out.append(Example(ex.id, request, str(turns[-1]["content"]), ex.meta))
            return out

        as_given = Pipeline(self.name, as_messages, prompt.params,
                            {"system": None, "protocol": "json"})
        train_ctx = dataclasses.replace(ctx, dev=rendered(ctx.dev))
        manifest = tune(train_ctx, self.name, as_given, rendered(ctx.train), ctx.base_key)
        return adapted(ctx, self.name, prompt, manifest)
