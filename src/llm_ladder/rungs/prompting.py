"""The prompting rungs: zero-shot, system prompt, few-shot (random, nearest), chain-of-thought.

Each rung is ~15 lines over the shared helpers in `rungs/base.py`: it changes only the
messages and the answer parsing, never the weights. Skipped: prompt optimization.
"""

from __future__ import annotations

import random
import re

from llm_ladder.data import Example, Messages
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


class ZeroShot:
    name = "zero-shot"
    description = "the input alone, as the user turn"

    def build(self, ctx: RungContext) -> Pipeline:
        return Pipeline(self.name, as_messages, gen_params(ctx))


class SystemPrompt:
    name = "system-prompt"
    description = "instructions (labels, output format) in a system message"

    def build(self, ctx: RungContext) -> Pipeline:
        system = instructions(ctx)
        return Pipeline(self.name, lambda inp: with_system(system, as_messages(inp)),
                        gen_params(ctx), settings={"system": system})


class FewShotRandom:
    name = "few-shot-random"
    description = "system prompt + k random train examples as earlier turns"

    def build(self, ctx: RungContext) -> Pipeline:
        k = min(ctx.task.prompt.few_shot_k, len(ctx.train))
        shots = random.Random(ctx.task.split.seed).sample(ctx.train, k)
        system = instructions(ctx)
        prefix = shot_turns(shots)
        return Pipeline(self.name,
                        lambda inp: with_system(system, prefix + as_messages(inp)),
                        gen_params(ctx), settings={"k": k, "shot_ids": [e.id for e in shots]})


class FewShotNearest:
    name = "few-shot-nearest"
    description = "system prompt + the k train examples most similar to the input (embeddings)"

    def build(self, ctx: RungContext) -> Pipeline:
        nearest = NearestShots(ctx.train, ctx.task.prompt.few_shot_k)
        system = instructions(ctx)

        def build(inp: str | Messages) -> Messages:
            text = inp if isinstance(inp, str) else Example("", inp, "").input_text()
            return with_system(system, shot_turns(nearest(text)) + as_messages(inp))

        return Pipeline(self.name, build, gen_params(ctx), settings=nearest.settings())


_ANSWER = re.compile(r"answer\s*[:：]\s*(.+)", re.I | re.S)


def extract_answer(text: str) -> str:
    """The text after the last 'Answer:'; without one, the last non-empty line."""
    hits = list(_ANSWER.finditer(text))
    if hits:
        return hits[-1].group(1).strip()
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ChainOfThought:
    name = "chain-of-thought"
    description = "system prompt + reason step by step, then 'Answer: ...' (extracted)"

    def build(self, ctx: RungContext) -> Pipeline:
        system = instructions(ctx) + (
            "\nFirst think step by step in a few short sentences. Then write the final answer "
            "on its own last line as 'Answer: <answer>'.")
        return Pipeline(self.name, lambda inp: with_system(system, as_messages(inp)),
                        gen_params(ctx, ctx.task.prompt.cot_max_tokens), parse=extract_answer,
                        settings={"system": system})
