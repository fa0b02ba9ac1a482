"""What every rung shares: the `Rung` protocol, the `Pipeline` it builds, the `RungContext`
it builds from, and the default ladder.

A rung turns (task, train split) into a Pipeline: how to build the messages for one input, the
generation settings, and how to read the answer out of the raw text. A rung declares what it
needs from the task (`needs`: "index", "tools", "finetune", "teacher", "constraint",
"optimize"); the session opens the index for any rung that needs it and the default ladder
leaves out rungs whose needs the task cannot meet. A third-party rung registered through the
`llm_ladder.rungs` entry point does the same and gets the same treatment. Few-shot pools come
from the train split only; the caller never passes test examples here. Skipped: per-rung
dependency resolution beyond these six needs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from llm_ladder import plugins
from llm_ladder.data import Example, Messages
from llm_ladder.embedding import Embedder
from llm_ladder.errors import LadderError
from llm_ladder.metrics import output_kind
from llm_ladder.models.base import ChatModel, GenParams
from llm_ladder.task import Task

# The default ladder, cheapest first. A rung is climbed by default when it is listed here
# and the task meets its needs; any registered rung can be climbed through `rungs.include`.
DEFAULT_LADDER = ["zero-shot", "system-prompt", "few-shot-random", "few-shot-nearest",
                  "chain-of-thought", "constrained", "few-shot-constrained",
                  "optimized-prompt", "rag", "few-shot-rag", "tool-use",
                  "few-shot-tools", "lora", "distill", "lora-rag", "lora-tools"]

# What a rung may need, and how to tell that a task provides it.
NEEDS: dict[str, Callable[[Task], bool]] = {
    "index": lambda t: t.corpus is not None,
    "tools": lambda t: t.tools is not None,
    "finetune": lambda t: t.finetune is not None,
    "teacher": lambda t: t.finetune is not None and bool(t.finetune.teacher),
    # a prompt search costs up to `[optimize] budget_calls` model calls: opted into by the table
    "optimize": lambda t: t.optimize is not None,
    # a closed output: a label set (given, or a label metric) or a JSON schema to decode to
    "constraint": lambda t: (t.metric.labels is not None or t.metric.schema_file is not None
                             or output_kind(t.metric.name) == "label"),
}


@dataclass
class Pipeline:
    """What a rung produces: messages for an input, generation settings, answer parsing.

    With `retrieve` set (RAG rungs), `build_messages(input, context)` receives the retrieved
    chunks, and the runner stores them with the prediction. A rung that changes the weights
    (fine-tuning) brings its own `model`; the runner and the server use it instead of the
    task's base model.
    """

    rung: str
    build_messages: Callable[..., Messages]
    params: GenParams
    parse: Callable[[str], str] = str.strip
    settings: dict[str, Any] = field(default_factory=dict)
    retrieve: Callable[[str | Messages], list[dict[str, Any]]] | None = None
    model: ChatModel | None = None  # the rung's own model (base + adapter), or None
    # multi-turn rungs (tool use): loop(model, examples) -> one result per example with
    # .messages, .generation, .output (scored) and .trace; the runner calls it per chunk
    loop: Callable[[Any, list[Example]], list[Any]] | None = None

    def prepare(self, inp: str | Messages) -> tuple[Messages, list[dict[str, Any]] | None]:
        """The exact messages for one input, and the retrieved chunks (RAG rungs) or None."""
        if self.retrieve is None:
            return self.build_messages(inp), None
        context = self.retrieve(inp)
        return self.build_messages(inp, context), context


@dataclass
class RungContext:
    """Everything a rung may build from. Built in one place (`Prepared.context`)."""

    task: Task
    train: list[Example]
    labels: list[str] | None = None
    schema: dict[str, Any] | None = None
    retriever: Any = None  # rag.retrieve.Retriever over the task's index (rungs needing it)
    # for the rungs that train (rungs/finetune.py): dev for early stopping, never test
    dev: list[Example] = field(default_factory=list)
    unlabeled: list[Example] = field(default_factory=list)  # extra inputs for a teacher
    leakage_removed: int = 0
    base_key: str | None = None  # model key whose weights are tuned (default: finetune.base)
    resume: bool = False
    on_event: Callable[[dict[str, Any]], None] | None = None  # training progress
    # the model the ladder evaluates with (a prompt search calls it on train + dev), or None
    # (`ladder serve`: a rung that needs it builds it from `model_key`)
    model: ChatModel | None = None
    model_key: str = "default"


@runtime_checkable
class Rung(Protocol):
    """One rung of the ladder. Optional class attributes: `needs` (a set of NEEDS keys) and
    `prompt_rung` (for a rung that changes the weights: the prompting rung it wraps)."""

    name: str
    description: str

    def build(self, ctx: RungContext) -> Pipeline: ...


def get_rung(name: str) -> Rung:
    """An instance of the rung registered under `name` (fails with the known names)."""
    return plugins.get("rungs", name)()


def needs_of(rung: str | Rung) -> frozenset[str]:
    """What a rung declares it needs; a rung that declares nothing needs nothing."""
    obj = get_rung(rung) if isinstance(rung, str) else rung
    return frozenset(getattr(obj, "needs", ()) or ())


def missing_needs(rung: str | Rung, task: Task) -> list[str]:
    """The needs of `rung` that `task` does not provide (unknown needs count as missing)."""
    return sorted(n for n in needs_of(rung) if n not in NEEDS or not NEEDS[n](task))


def ladder_for(task: Task) -> list[str]:
    """The rungs `ladder run` climbs, in order: `rungs.include` as given, else the default
    ladder less the rungs whose needs the task cannot meet."""
    known = plugins.names("rungs")
    if task.rungs.include:
        for n in task.rungs.include:
            if n not in known:
                raise LadderError(f"task.toml: unknown rung {n!r} in rungs.include; known: "
                                  + ", ".join(known))
        return list(task.rungs.include)
    return [n for n in DEFAULT_LADDER if n in known and not missing_needs(n, task)]


def as_messages(inp: str | Messages) -> Messages:
    """A plain-text input as one user turn; messages as they are."""
    return list(inp) if isinstance(inp, list) else [{"role": "user", "content": inp}]


def instructions(ctx: RungContext) -> str:
    """The task's system prompt, or one written from its description, labels and schema."""
    if ctx.task.prompt.system:
        return ctx.task.prompt.system
    parts = [ctx.task.description.strip() or "Answer the user's request."]
    if ctx.labels:
        parts.append("Reply with exactly one of these labels and nothing else: "
                     + ", ".join(ctx.labels) + ".")
    if ctx.schema:
        parts.append("Reply with only a JSON object that matches this JSON schema:\n"
                     + json.dumps(ctx.schema, ensure_ascii=False))
    return "\n".join(parts)


def with_system(system: str, msgs: Messages) -> Messages:
    """`msgs` with `system` as (or prepended to) the system message."""
    if msgs and msgs[0]["role"] == "system":
        return [{"role": "system", "content": system + "\n\n" + msgs[0]["content"]}] + msgs[1:]
    return [{"role": "system", "content": system}] + msgs


def shot_turns(examples: list[Example]) -> Messages:
    """Train examples as earlier user/assistant turns."""
    out: Messages = []
    for ex in examples:
        out += as_messages(ex.input)
        out.append({"role": "assistant", "content": ex.output})
    return out


def gen_params(ctx: RungContext, max_tokens: int | None = None) -> GenParams:
    """The task's generation settings (optionally another token cap)."""
    gen = ctx.task.generation
    return GenParams(max_tokens=max_tokens or gen.max_tokens, temperature=gen.temperature,
                     repetition_penalty=gen.repetition_penalty,
                     no_repeat_ngram_size=gen.no_repeat_ngram_size)


class NearestShots:
    """The k train examples most similar to an input (embedding cosine), most similar last,
    nearest the input. Shared by few-shot-nearest, few-shot-rag and few-shot-tools."""

    def __init__(self, pool: list[Example], k: int, embedder: Embedder | None = None):
        self.embedder = embedder or Embedder()
        self.pool = pool
        self.k = min(k, len(pool))
        self.vecs = self.embedder.embed([e.input_text() for e in pool]) if pool else None
        self._cache: dict[str, list[Example]] = {}

    def __call__(self, text: str) -> list[Example]:
        return self.many([text])[0]

    def many(self, texts: list[str]) -> list[list[Example]]:
        """The shots for each text; the texts not seen before are embedded in one batch (the
        optimized-prompt search picks for a whole dev half at once)."""
        if self.vecs is None or self.k == 0:
            return [[] for _ in texts]
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            sims = self.vecs @ self.embedder.embed(todo).T  # (pool, todo)
            for j, text in enumerate(todo):
                best = sorted(range(len(self.pool)), key=lambda i: -sims[i, j])[:self.k]
                self._cache[text] = [self.pool[i] for i in reversed(best)]
        return [self._cache[t] for t in texts]

    def settings(self) -> dict[str, Any]:
        return {"k": self.k, "embedder": self.embedder.name,
                "embedder_dtype": getattr(self.embedder, "dtype", None), "pool": len(self.pool)}
