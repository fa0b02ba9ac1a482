"""The constrained-decoding rungs: `constrained` and `few-shot-constrained`.

The prompt is system-prompt's (or few-shot-nearest's); the difference is the decoder: it may
only produce one of the task's labels (label tasks) or JSON valid under the task's schema
(JSON tasks), through `GenParams.choices` / `GenParams.json_schema`. The backend enforces it
(llguidance on transformers, a GBNF grammar on llama.cpp) or refuses with a LadderError; the
rung never filters or repairs the output afterwards. Both rungs need "constraint" (a label
set or a schema), so the default ladder skips them on free-text tasks. Skipped: free-form
grammars and regexes (no task declares one).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llm_ladder.data import Example, Messages
from llm_ladder.errors import LadderError
from llm_ladder.models.base import GenParams
from llm_ladder.rungs.base import (
    NearestShots,
    Pipeline,
    RungContext,
    as_messages,
    gen_params,
    instructions,
    shot_turns,
    with_system,
)


def constrained_params(ctx: RungContext) -> tuple[GenParams, dict[str, Any]]:
    """The task's generation settings limited to its labels or its schema, and what was
    used (for the run's settings). The anti-loop settings are off unless the task sets them:
    the grammar already bounds the answer, and n-gram blocking inside a JSON grammar would
    change values (a second string starting like the first), not stop a loop."""
    params = gen_params(ctx)
    params = replace(params, repetition_penalty=1.0 if params.repetition_penalty is None
                     else params.repetition_penalty,
                     no_repeat_ngram_size=0 if params.no_repeat_ngram_size is None
                     else params.no_repeat_ngram_size)
    if ctx.labels:
        return replace(params, choices=list(ctx.labels)), {"constraint": "labels",
                                                           "choices": len(ctx.labels)}
    if ctx.schema:
        return replace(params, json_schema=ctx.schema), {"constraint": "json_schema"}
    raise LadderError(f"{ctx.task.name}: the constrained rungs need a closed output: a label "
                      "metric (or metric.labels) or a JSON schema (metric.schema)")


class Constrained:
    name = "constrained"
    description = "system prompt; decoding limited to the label set or the JSON schema"
    needs = frozenset({"constraint"})

    def build(self, ctx: RungContext) -> Pipeline:
        system = instructions(ctx)
        params, used = constrained_params(ctx)
        return Pipeline(self.name, lambda inp: with_system(system, as_messages(inp)), params,
                        settings={"system": system, **used})


class FewShotConstrained:
    name = "few-shot-constrained"
    description = ("system prompt + the k nearest train examples; decoding limited to the "
                   "label set or the JSON schema")
    needs = frozenset({"constraint"})

    def build(self, ctx: RungContext) -> Pipeline:
        params, used = constrained_params(ctx)
        nearest = NearestShots(ctx.train, ctx.task.prompt.few_shot_k)
        system = instructions(ctx)

        def build(inp: str | Messages) -> Messages:
            text = inp if isinstance(inp, str) else Example("", inp, "").input_text()
            return with_system(system, shot_turns(nearest(text)) + as_messages(inp))

        return Pipeline(self.name, build, params, settings={**nearest.settings(), **used})
