"""Decoding controls shared by the in-process backends: anti-loop rules and output constraints.

Anti-loop: transformers' repetition penalty and n-gram blocking, applied to the answer's own
tokens only (the prompt may repeat a label or a retrieved passage the answer should copy).
The local backend runs transformers' own processors on the generated slice; llama.cpp gets
the same two rules as a numpy logits processor (`anti_loop_numpy`), because its
`repeat_penalty` looks at a window that includes the prompt and it has no n-gram blocking.

Constraints (`GenParams.choices` / `GenParams.json_schema`): on transformers, a logits
processor over llguidance matchers (one per batch row; `GuidanceProcessor`); on llama.cpp, a
GBNF grammar (`gbnf_choices`, or llama-cpp-python's JSON-schema converter). Backends without
either raise `unsupported`. Skipped: regex and free grammars (no rung asks for them),
llguidance's parallel mask executor (batches here are a few rows).
"""

from __future__ import annotations

import json
from typing import Any

from llm_ladder.errors import LadderError, require
from llm_ladder.models.base import GenParams

CONSTRAINED_BACKENDS = ("local", "llamacpp")


def constraint_of(params: GenParams) -> tuple[str, Any] | None:
    """("choices", [...]) or ("json_schema", {...}) or None; both at once is an error."""
    if params.choices is not None and params.json_schema is not None:
        raise LadderError("a generation can be constrained to choices or to a JSON schema, "
                          "not both")
    if params.choices is not None:
        if not params.choices or any(not isinstance(c, str) or not c for c in params.choices):
            raise LadderError("constrained decoding needs a non-empty list of non-empty "
                              f"choices, got {params.choices!r}")
        return "choices", list(params.choices)
    if params.json_schema is not None:
        return "json_schema", params.json_schema
    return None


def unsupported(backend: str, params: GenParams) -> None:
    """Raise for a backend that cannot enforce the call's constraint (never ignore it)."""
    kind = constraint_of(params)
    if kind is not None:
        raise LadderError(f"the {backend} backend cannot constrain decoding to "
                          f"{'a label set' if kind[0] == 'choices' else 'a JSON schema'}; "
                          f"use a model on one of the backends that can: "
                          f"{', '.join(CONSTRAINED_BACKENDS)} (docs/generation.md)")


# --- anti-loop -----------------------------------------------------------------------------

class AnswerOnly:
    """A transformers logits processor applied to the tokens after `start` (the answer)."""

    def __init__(self, inner: Any, start: int):
        self.inner = inner
        self.start = start

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return self.inner(input_ids[:, self.start:], scores)


def hf_anti_loop(penalty: float, ngram: int, start: int) -> list[Any]:
    """transformers' repetition-penalty and no-repeat-n-gram processors over the answer."""
    gen = require("transformers", "local").generation
    out: list[Any] = []
    if penalty != 1.0:
        out.append(AnswerOnly(gen.RepetitionPenaltyLogitsProcessor(penalty), start))
    if ngram > 0:
        out.append(AnswerOnly(gen.NoRepeatNGramLogitsProcessor(ngram), start))
    return out


def banned_by_ngram(answer: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in `answer` (transformers' rule)."""
    if n <= 0 or len(answer) + 1 < n:
        return set()
    prefix = tuple(answer[len(answer) - n + 1:]) if n > 1 else ()
    return {answer[i + n - 1] for i in range(len(answer) - n + 1)
            if tuple(answer[i:i + n - 1]) == prefix}


def anti_loop_numpy(penalty: float, ngram: int, start: int, soft: bool = False) -> Any:
    """The same two rules as a llama-cpp-python logits processor (ids, scores) -> scores.
    With `soft` (a grammar follows), a banned token gets a finite floor below every other
    score instead of -inf, so the ban never leaves the grammar without a token to take."""

    def process(input_ids: Any, scores: Any) -> Any:
        answer = [int(t) for t in input_ids[start:]]
        if penalty != 1.0 and answer:
            seen = list(set(answer))
            s = scores[seen]
            scores[seen] = (s / penalty) * (s > 0) + (s * penalty) * (s <= 0)
        banned = list(banned_by_ngram(answer, ngram))
        if banned:
            scores[banned] = float(scores.min()) - 1e4 if soft else -float("inf")
        return scores

    return process


# --- constraints ---------------------------------------------------------------------------

def llg_grammar(kind: str, value: Any) -> str:
    """The llguidance grammar for choices (a Lark alternation of literals) or a JSON schema."""
    llg = require("llguidance", "local")
    if kind == "choices":
        return llg.LLMatcher.grammar_from_lark(
            "start: " + " | ".join(json.dumps(c, ensure_ascii=False) for c in value))
    return llg.LLMatcher.grammar_from_json_schema(json.dumps(value))


class GuidanceProcessor:
    """A transformers logits processor: each row may only continue its llguidance grammar.

    Row i's matcher consumes the token chosen at the previous step, then masks the next
    token's logits to what the grammar allows; once the grammar is complete, or the row has
    ended (generate then pads it whatever the mask says), only end-of-turn."""

    def __init__(self, tokenizer: Any, grammar: str, rows: int, start: int):
        llg = require("llguidance", "local")
        self.torch = require("torch", "local")
        self.matchers = []
        for _ in range(rows):
            m = llg.LLMatcher(tokenizer, grammar, log_level=0)
            if m.is_error():
                raise LadderError(f"constrained decoding: bad grammar: {m.get_error()}")
            self.matchers.append(m)
        self.start = start
        self.vocab = tokenizer.vocab_size
        self.eos = list(tokenizer.eos_tokens)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        generated = input_ids.shape[1] - self.start
        for i, m in enumerate(self.matchers):
            if generated > 0 and not m.is_stopped():
                m.consume_token(int(input_ids[i, -1]))
            allowed = torch.zeros(scores.shape[1], dtype=torch.bool)
            if m.is_stopped() or m.is_error():  # complete (or ended): only end-of-turn
                allowed[self.eos] = True
            else:
                bias = torch.frombuffer(bytearray(m.compute_logit_bias()), dtype=torch.uint8)
                n = min(self.vocab, scores.shape[1], bias.numel())
                allowed[:n] = bias[:n] > 0
            scores[i, ~allowed] = -float("inf")
        return scores


class ConstraintFirst:
    """The grammar mask, then the anti-loop processors; in a row where they would ban every
    token the grammar allows, the constraint wins (the grammar-masked scores are kept)."""

    def __init__(self, guidance: GuidanceProcessor, anti_loop: list[Any]):
        self.guidance = guidance
        self.anti_loop = anti_loop

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        masked = self.guidance(input_ids, scores)
        out = masked.clone()
        for proc in self.anti_loop:
            out = proc(input_ids, out)
        dead = self.guidance.torch.isinf(out).all(dim=1)
        out[dead] = masked[dead]
        return out


def gbnf_choices(choices: list[str]) -> str:
    """A GBNF grammar whose only sentences are the choices (llama.cpp)."""

    def literal(c: str) -> str:
        body = "".join(ch if ch.isprintable() and ch not in '"\\' else
                       (f"\\{ch}" if ch in '"\\' else f"\\x{ord(ch):02X}" if ord(ch) < 256
                        else f"\\u{ord(ch):04X}") for ch in c)
        return f'"{body}"'

    return "root ::= " + " | ".join(literal(c) for c in choices) + "\n"
